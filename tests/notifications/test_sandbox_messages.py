"""The sandbox's subscribeMessage.send and template/send refuse what WeChat refuses, with WeChat's codes."""
from __future__ import annotations

from typing import Any

import pytest
import requests
from flask import Flask

from server.wechat import miniprogram, official_account
from server.wechat.client import WeChatError
from tests.notifications.conftest import OA_NOTICE, TEMPLATES
from wechat_sandbox import SandboxServer

SHIPPED = TEMPLATES["order_shipped"]
GOOD = {"character_string1": "R1", "thing2": "茶", "amount3": "¥1.00", "phrase4": "已发货", "date5": "2026年12月2日 08:47"}


def _post(sandbox: SandboxServer, path: str, token: str, body: Any) -> dict[str, Any]:
    return dict(requests.post(f"{sandbox.base_url}{path}", params={"access_token": token}, json=body, timeout=10).json())


def test_subscribe_send_refuses_as_wechat_does(app: Flask, sandbox: SandboxServer, sandbox_messages: Any) -> None:
    openid = sandbox_messages.accept("sbx-refusals", SHIPPED)
    with app.app_context():
        token = miniprogram().client.access_token
    send = "cgi-bin/message/subscribe/send"
    base = {"touser": openid, "template_id": SHIPPED, "data": {k: {"value": v} for k, v in GOOD.items()}}
    assert _post(sandbox, send, "nope", base)["errcode"] == 40001
    assert requests.get(f"{sandbox.base_url}{send}", params={"access_token": token}, timeout=10).json()["errcode"] == 43002
    assert _post(sandbox, send, token, base | {"touser": "o" + "x" * 27})["errcode"] == 40003
    assert _post(sandbox, send, token, base | {"template_id": "unknown"})["errcode"] == 40037
    assert _post(sandbox, send, token, base | {"page": "pages/../x"})["errcode"] == 41030
    assert _post(sandbox, send, token, base | {"miniprogram_state": "beta"})["errcode"] == 47003
    assert _post(sandbox, send, token, base | {"data": "{}"})["errmsg"].startswith("argument invalid! data is empty")
    wrong_shape = base | {"data": {**base["data"], "thing2": "茶"}}
    assert _post(sandbox, send, token, wrong_shape)["errmsg"].startswith("argument invalid! data.thing2.value is empty")
    assert requests.post(f"{sandbox.base_url}{send}", params={"access_token": token}, data="[1]", timeout=10).json()["errcode"] == 47001
    # None of those used the acceptance; this one does, and the next finds none.
    sent = _post(sandbox, send, token, base | {"page": "pages/orders/detail?id=1"})
    assert sent["errcode"] == 0 and isinstance(sent["msgid"], int)
    assert _post(sandbox, send, token, base)["errcode"] == 43101
    [listed] = sandbox_messages.messages(openid)
    assert listed["msgid"] == sent["msgid"] and listed["data"] == GOOD and listed["page"] == "pages/orders/detail?id=1"


def test_template_send_reaches_followers_only(app: Flask, sandbox: SandboxServer, sandbox_messages: Any) -> None:
    with app.app_context():
        oa = official_account()
        openid = sandbox.app.extensions["sandbox_state"].openid(oa.appid, "sbx-not-following")
        data = {"thing1": "订单发货", "thing2": "已发货", "time3": "08:47"}
        with pytest.raises(WeChatError) as refused:
            oa.send_template_message(openid, OA_NOTICE, data, miniprogram=(miniprogram().appid, "pages/orders/detail"))
        assert refused.value.errcode == 43004
        with pytest.raises(WeChatError) as unknown:
            oa.send_template_message(openid, "unknown", data)
        assert unknown.value.errcode == 40037


@pytest.mark.parametrize("body", [
    None,
    {"user": "a b", "template_ids": [SHIPPED]},
    {"user": "alice", "template_ids": []},
    {"user": "alice", "template_ids": ["unknown"]},
    {"user": "alice", "template_ids": [SHIPPED], "times": 0},
    {"user": "alice", "template_ids": [SHIPPED], "appid": "wx-unknown"},
])
def test_the_acceptance_control_checks_its_input(sandbox: SandboxServer, body: Any) -> None:
    assert requests.post(f"{sandbox.base_url}sandbox/subscriptions", json=body, timeout=10).status_code == 400
