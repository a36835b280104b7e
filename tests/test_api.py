"""Request parsing: what any body, however malformed, gets back."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from flask.testing import FlaskClient

from server.api import MAX_JSON_DEPTH


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
