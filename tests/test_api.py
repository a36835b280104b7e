"""Request parsing: what any body, however malformed, gets back."""
from __future__ import annotations

import re
import sys
from typing import Any, Callable

import jsonschema_rs
import pytest
from flask.testing import FlaskClient

from server.api import MAX_JSON_DEPTH, NON_BLANK_PATTERN


def nested(depth: int) -> bytes:
    """A JSON object whose one key holds arrays nested ``depth`` deep."""
    return b'{"code": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_deeply_nested_json_is_bad_json_on_a_public_route(client: FlaskClient, depth: int) -> None:
    response = client.post("/api/v1/auth/wx-login", data=nested(depth), content_type="application/json")
    assert response.status_code == 400
    assert response.get_json() == {"code": 40001, "message": "request body must be a JSON object", "data": None}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_deeply_nested_json_is_bad_json_when_signed_in(
    client: FlaskClient, staff_login: Callable[[str], dict[str, str]], depth: int
) -> None:
    """The settings body takes any JSON value, so nesting is the parser's to refuse, not the model's."""
    headers = staff_login("owner")
    body = b'{"value": ' + b"[" * depth + b"]" * depth + b"}"
    response = client.put("/admin/api/v1/settings/order_pay_timeout_minutes", data=body, content_type="application/json", headers=headers)
    assert response.status_code == 400
    assert response.get_json()["code"] == 40001


def test_nesting_within_the_limit_is_parsed(client: FlaskClient) -> None:
    """Up to the limit the body is read, and the model judges it (a list is not a code)."""
    response = client.post("/api/v1/auth/wx-login", data=nested(MAX_JSON_DEPTH - 1), content_type="application/json")
    assert response.status_code == 422
    errors: list[dict[str, Any]] = response.get_json()["data"]["errors"]
    assert errors[0]["field"] == "code"


def test_an_integral_float_is_the_integer(client: FlaskClient, staff_login: Callable[[str], dict[str, str]]) -> None:
    """JSON Schema counts 2.0 as an integer, so the spec allows it; 2.5 and "2" stay refused."""
    ops = staff_login("operations")
    product = client.post("/admin/api/v1/products", headers=ops, json={"title": "茶", "sort": 2.0})
    assert product.status_code == 201, product.get_json()
    assert product.get_json()["data"]["sort"] == 2
    sku_path = f"/admin/api/v1/products/{product.get_json()['data']['id']}/skus"
    assert client.post(sku_path, headers=ops, json={"price_fen": 100.0, "stock": 5}).status_code == 201
    for bad in (2.5, "2", 1e300):
        assert client.post(sku_path, headers=ops, json={"price_fen": bad, "stock": 5}).status_code == 422


def test_the_spec_pattern_for_required_text_is_the_servers_rule() -> None:
    """Python's regex and the spec's JSON Schema validator read NON_BLANK_PATTERN alike, and both agree with str.strip."""
    validator = jsonschema_rs.Draft202012Validator({"type": "string", "pattern": NON_BLANK_PATTERN})
    pattern = re.compile(NON_BLANK_PATTERN)
    disagree = [
        hex(c)
        for c in range(sys.maxunicode + 1)
        if not 0xD800 <= c <= 0xDFFF
        and len({bool(chr(c).strip()), bool(pattern.search(chr(c))), validator.is_valid(chr(c))}) > 1
    ]
    assert not disagree
    # Where engines differ on \s: Python's counts U+001C and U+0085, ECMA 262's counts U+FEFF.
    assert not "\x1c".strip() and not "\x85".strip() and "\ufeff".strip()


@pytest.mark.parametrize("blank", ["", " ", "\f", "\x1c", "\x85", "\u3000 \t"])
def test_required_text_that_is_only_whitespace_is_refused(
    client: FlaskClient, wx_login: Callable[..., dict[str, Any]], staff_login: Callable[[str], dict[str, str]], blank: str
) -> None:
    ops = staff_login("operations")
    product = client.post("/admin/api/v1/products", headers=ops, json={"title": blank})
    assert product.status_code == 422
    assert [e["field"] for e in product.get_json()["data"]["errors"]] == ["title"]
    assert client.get("/admin/api/v1/products", headers=ops).get_json()["data"]["total"] == 0

    product_id = client.post("/admin/api/v1/products", headers=ops, json={"title": "茶"}).get_json()["data"]["id"]
    sku = client.post(f"/admin/api/v1/products/{product_id}/skus", headers=ops, json={"price_fen": 100, "stock": 5}).get_json()["data"]
    alice = wx_login("alice")
    address = {"name": "张三", "phone": "13800138000", "detail": blank}
    order = client.post("/api/v1/orders", headers=alice["headers"], json={"items": [{"sku_id": sku["id"], "quantity": 1}], "address": address})
    assert order.status_code == 422
    assert [e["field"] for e in order.get_json()["data"]["errors"]] == ["address.detail"]
    assert client.get("/api/v1/orders", headers=alice["headers"]).get_json()["data"]["total"] == 0
    assert client.get(f"/api/v1/products/{product_id}").get_json()["data"]["skus"][0]["stock"] == 5


def test_required_text_keeps_what_is_not_whitespace(client: FlaskClient, staff_login: Callable[[str], dict[str, str]]) -> None:
    """Only the surrounding whitespace goes; U+FEFF is not whitespace to str.strip, so it is text."""
    ops = staff_login("operations")
    for title, stored in ((" 茶 ", "茶"), ("\ufeff", "\ufeff")):
        product = client.post("/admin/api/v1/products", headers=ops, json={"title": title})
        assert product.status_code == 201, product.get_json()
        assert product.get_json()["data"]["title"] == stored
