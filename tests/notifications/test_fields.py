"""Values fitted to WeChat's keyword types, cut between characters; the merchant's mappings checked strictly;
the sandbox as strict about values as WeChat."""
from __future__ import annotations

from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.notifications.fields import KeywordMap, amount_value, clusters, cut, fit_value, parse_mapping, points_value
from server.notifications.models import NotifyEvent
from server.wechat import miniprogram
from server.wechat.client import WeChatError
from server.wechat.formats import KEYWORD_LIMITS, value_problem
from wechat_sandbox import SandboxServer

EVERY_TYPE = "SbxEveryType00000000000000000000000000008"
#: A valid value of each type, and one WeChat refuses.
EXAMPLES = {
    "thing": ("有机茶叶礼盒 500g×2", "一二三四五六七八九十一二三四五六七八九十一"),
    "number": ("12.5", "1e5"),
    "letter": ("abc", "ab1"),
    "symbol": ("!?", "a!"),
    "character_string": ("R20261202-0001", "订单001"),
    "time": ("15:01", "明天"),
    "date": ("2019年10月1日 15:01", "2019.10.01"),
    "amount": ("¥12.30", "12.345"),
    "phone_number": ("+86-13800138000", "138001380001380013800"),
    "car_number": ("粤A12345", "粤A123456789"),
    "name": ("张三", "张三3"),
    "phrase": ("已发货", "shipped"),
}
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60) | st.text(alphabet="有机茶叶礼盒 ¥元0123456789.:-~年月日abcXYZ!?#👨\u200d👩\u0301🇨🇳", max_size=60)


@pytest.mark.parametrize("kind", sorted(KEYWORD_LIMITS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=text)
def test_a_fitted_value_is_always_one_wechat_takes(kind: str, value: str) -> None:
    fitted = fit_value(kind, value)
    if fitted is not None:
        assert value_problem(kind, fitted) is None, (kind, value, fitted)
        assert len(fitted) <= KEYWORD_LIMITS[kind]


@settings(max_examples=300, deadline=None)
@given(value=text, limit=st.integers(min_value=1, max_value=40))
def test_a_cut_keeps_whole_characters_from_the_start(value: str, limit: int) -> None:
    kept = cut(value, limit)
    assert sum(2 if ord(c) > 0xFFFF else 1 for c in kept) <= limit
    characters = clusters(value)
    # What is kept is whole characters (with their marks and joiners) from the start, nothing split.
    prefixes = {"".join(characters[:n]).rstrip() for n in range(len(characters) + 1)}
    assert kept == value or kept in prefixes


@settings(max_examples=200, deadline=None)
@given(value=text)
def test_a_long_thing_is_cut_with_a_mark_and_a_short_one_kept(value: str) -> None:
    fitted = fit_value("thing", value)
    if fitted is None:
        return
    if fitted.endswith("…") and not value.rstrip().endswith("…"):
        assert len(fitted) <= 20
    cleaned = " ".join(value.split())
    if len(cleaned.encode("utf-16-le", "surrogatepass")) <= 40 and cleaned.isprintable():
        assert fitted == cleaned  # 20 characters, counted as WeChat's clients count them: in UTF-16 units


def test_cuts_fall_between_characters() -> None:
    assert fit_value("thing", "有机茶叶礼盒" * 5) == "有机茶叶礼盒有机茶叶礼盒有机茶叶礼盒有…"
    family = "👨\u200d👩\u200d👧"
    assert fit_value("thing", family * 5) == family * 2 + "…"  # each family counts 8, never split
    assert cut("e\u0301" * 30, 5) == "e\u0301" * 2  # a letter and its accent count as two, and stay together
    assert cut("🇨🇳🇨🇳🇨🇳", 5) == "🇨🇳"
    assert fit_value("phrase", "待结算 pending") == "待结算"
    assert fit_value("phrase", "订单已经发货了") == "订单已经发"
    assert fit_value("character_string", "R2026年12月-001") == "R202612-001"
    assert fit_value("name", "Zhang San Feng the Third of Many") == "Zhang San Feng the T"
    assert fit_value("name", "欧阳·张三丰") == "欧阳·张三丰"
    assert fit_value("number", "1" * 33) is None  # never cut: that would change it
    assert fit_value("amount", "¥12345678901.00") is None
    assert fit_value("phrase", "shipped") is None
    assert points_value(1250) == "12.5" and points_value(100_00) == "100" and points_value(5) == "0.05"
    assert amount_value(12_345) == "¥123.45" and amount_value(7) == "¥0.07"


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_the_value_rules_match_wechats_table(kind: str) -> None:
    good, bad = EXAMPLES[kind]
    assert value_problem(kind, good) is None
    assert value_problem(kind, bad) == "invalid"
    assert value_problem(kind, "") == "is empty" and value_problem(kind, "  ") == "is empty"


@pytest.mark.parametrize(("text", "error"), [
    ("", "expected off"),
    ("tpl thing1", "is not keyword=source"),
    ("tpl", "map at least one keyword"),
    ("t@pl thing1=product", "is not a template id"),
    ("tpl thingy1=product", "is not a template keyword"),
    ("tpl thing1=product thing1=order_no", "given twice"),
    ("tpl thing1=nothing", "is not a source of this event"),
    ("tpl number1=product", "number1 (number) cannot hold product (text)"),
    ("tpl phrase1=product", "cannot hold product"),
    ("tpl letter1=order_no", "cannot hold order_no"),
    ("tpl thing1=product page=../etc", "is not a mini-program page"),
    ("tpl thing1=product thing2=product thing3=product thing4=product thing5=product thing6=product", "at most 5 keywords"),
])
def test_a_bad_mapping_says_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_mapping(NotifyEvent.order_shipped, text)


def test_a_good_mapping_and_off() -> None:
    assert parse_mapping(NotifyEvent.order_shipped, "off") is None
    assert parse_mapping(NotifyEvent.order_shipped, " Tpl-1_x  character_string1=order_no  thing2=product page=/pages/o/d?id=1 ") == KeywordMap(
        "Tpl-1_x", (("character_string1", "order_no"), ("thing2", "product")), "pages/o/d?id=1"
    )


def test_the_settings_refuse_a_bad_mapping(client: FlaskClient, staff_login: Any) -> None:
    owner = staff_login("owner")
    refused = client.put("/admin/api/v1/settings/notify_order_shipped", headers=owner, json={"value": "tpl number1=product"})
    assert refused.status_code == 422
    assert refused.get_json()["data"]["errors"] == [{"field": "notify_order_shipped", "error": "number1 (number) cannot hold product (text)"}]
    accepted = client.put("/admin/api/v1/settings/notify_order_shipped", headers=owner, json={"value": "tpl thing1=product"})
    assert accepted.status_code == 200, accepted.get_json()


def _every_type(values: dict[str, str]) -> dict[str, str]:
    keywords = ("thing1", "number2", "letter3", "symbol4", "character_string5", "time6", "date7", "amount8", "phone_number9", "car_number10", "name11", "phrase12")
    return {k: values.get(k.rstrip("0123456789"), EXAMPLES[k.rstrip("0123456789")][0]) for k in keywords}


def test_the_sandbox_refuses_each_bad_value_naming_its_keyword(app: Flask, sandbox: SandboxServer) -> None:
    openid = requests.post(sandbox.base_url + "sandbox/subscriptions", json={"user": "fields-bad", "template_ids": [EVERY_TYPE], "times": 1}, timeout=10).json()["openid"]
    with app.app_context():
        for kind, (_, bad) in EXAMPLES.items():
            with pytest.raises(WeChatError) as refused:
                miniprogram().send_subscribe_message(openid, EVERY_TYPE, _every_type({kind: bad}))
            keyword = next(k for k in _every_type({}) if k.rstrip("0123456789") == kind)
            assert refused.value.errcode == 47003 and refused.value.errmsg.startswith(f"argument invalid! data.{keyword}.value invalid")
        # None of the refusals used the allowance.
        assert miniprogram().send_subscribe_message(openid, EVERY_TYPE, _every_type({})) is not None
        with pytest.raises(WeChatError) as spent:
            miniprogram().send_subscribe_message(openid, EVERY_TYPE, _every_type({}))
        assert spent.value.errcode == 43101


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({kind: text for kind in EXAMPLES}))
def test_the_sandbox_takes_every_fitted_value(app: Flask, sandbox: SandboxServer, values: dict[str, str]) -> None:
    openid = requests.post(sandbox.base_url + "sandbox/subscriptions", json={"user": "fields-fit", "template_ids": [EVERY_TYPE], "times": 1}, timeout=10).json()["openid"]
    fitted = {kind: fit_value(kind, value) for kind, value in values.items()}
    with app.app_context():
        assert miniprogram().send_subscribe_message(openid, EVERY_TYPE, _every_type({k: v for k, v in fitted.items() if v is not None})) is not None
