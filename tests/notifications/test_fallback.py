"""The official account's template message for a member who follows it and has no subscribe allowance left,
when the merchant sets one for the event."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from server import db
from server.notifications.models import MessageChannel, OAFollower, OutboxState
from tests.notifications.conftest import OA_NOTICE, TEMPLATES, Person, Sandbox, outbox
from tests.notifications.test_outbox import paid_order, ship_order
from wechat_sandbox import SandboxServer, serve_in_thread

FALLBACK = f"{OA_NOTICE} thing1=product thing2=status time3=time"


@pytest.fixture
def play(app: Flask, sandbox: SandboxServer) -> Iterator[Callable[[str, str], dict[str, Any]]]:
    """``play("bob", "subscribe")``: the sandbox makes bob follow (or leave) the account, pushing the event to the app."""
    served = serve_in_thread(app)
    push = {"appid": app.config["WECHAT_OA_APPID"], "token": app.config["WECHAT_OA_TOKEN"],
            "aes_key": app.config["WECHAT_OA_AES_KEY"] or None, "callback_url": f"{served.base_url}wechat/oa"}
    assert requests.put(sandbox.base_url + "sandbox/oa/push", json=push, timeout=10).status_code == 200

    def do(user: str, event: str) -> dict[str, Any]:
        res = requests.post(sandbox.base_url + "sandbox/oa/events", json={"user": user, "event": event}, timeout=30)
        assert res.status_code == 200 and res.json()["status"] == 200, res.text
        return res.json()

    yield do
    requests.delete(sandbox.base_url + "sandbox/oa/push", timeout=10)
    requests.post(sandbox.base_url + "sandbox/oa/reset", timeout=10)
    served.shutdown()


def oa_openid(app: Flask, sandbox: SandboxServer, who: Person) -> str:
    return str(sandbox.app.extensions["sandbox_state"].openid(app.config["WECHAT_OA_APPID"], who.name))


def test_a_follower_without_an_allowance_gets_the_template_message(app: Flask, notify, person, play, sandbox: SandboxServer, sandbox_messages: Sandbox) -> None:
    notify("order_shipped", oa=FALLBACK)
    buyer = person()
    play(buyer.name, "subscribe")
    ship_order(app, paid_order(app, buyer))
    [row] = outbox(app)
    assert row.state == OutboxState.sent and row.channel == MessageChannel.template
    assert sandbox_messages.messages(buyer.openid) == []
    [message] = sandbox_messages.messages(oa_openid(app, sandbox, buyer))
    assert message["kind"] == "template" and message["template_id"] == OA_NOTICE
    assert message["data"]["thing1"] == "有机茶叶礼盒" and message["data"]["thing2"] == "已发货"


def test_an_allowance_comes_first(app: Flask, notify, person, subscribe, play, sandbox: SandboxServer, sandbox_messages: Sandbox) -> None:
    notify("order_shipped", oa=FALLBACK)
    buyer = person()
    subscribe(buyer, "order_shipped")
    play(buyer.name, "subscribe")
    ship_order(app, paid_order(app, buyer))
    ship_order(app, paid_order(app, buyer))
    assert [r.channel for r in outbox(app)] == [MessageChannel.subscribe, MessageChannel.template]
    assert len(sandbox_messages.messages(buyer.openid)) == 1
    assert len(sandbox_messages.messages(oa_openid(app, sandbox, buyer))) == 1


def test_no_template_message_without_the_merchants_choice_or_to_someone_who_left(app: Flask, notify, person, play, sandbox: SandboxServer, sandbox_messages: Sandbox) -> None:
    notify("order_shipped")
    buyer = person()
    play(buyer.name, "subscribe")
    ship_order(app, paid_order(app, buyer))
    assert outbox(app)[-1].state == OutboxState.dropped  # the merchant set no fallback
    notify("order_shipped", oa=FALLBACK)
    play(buyer.name, "unsubscribe")
    ship_order(app, paid_order(app, buyer))
    row = outbox(app)[-1]
    assert row.state == OutboxState.dropped and row.reason == "no subscription left for the template and the member does not follow the official account"
    assert sandbox_messages.messages(oa_openid(app, sandbox, buyer)) == []


def test_wechat_saying_the_member_does_not_follow_is_believed(app: Flask, notify, person, sandbox: SandboxServer, sandbox_messages: Sandbox) -> None:
    notify("order_shipped", oa=FALLBACK)
    buyer = person()
    stale = oa_openid(app, sandbox, buyer)
    with app.app_context():  # a follow we recorded, which WeChat no longer has
        from server.accounts.models import Member

        db.session().add(OAFollower(oa_openid=stale, unionid=db.session().get(Member, buyer.id).unionid, following=True))
        db.commit()
    ship_order(app, paid_order(app, buyer))
    [row] = outbox(app)
    assert row.state == OutboxState.dropped and row.errcode == 43004 and row.channel == MessageChannel.template
    with app.app_context():
        assert db.session().get(OAFollower, stale).following is False


def test_wechat_saying_no_allowance_is_left_turns_to_the_fallback(app: Flask, client: FlaskClient, notify, person, play, sandbox: SandboxServer, sandbox_messages: Sandbox) -> None:
    notify("order_shipped", oa=FALLBACK)
    buyer = person()
    play(buyer.name, "subscribe")
    # Reported to us, never accepted in WeChat: WeChat answers 43101, and the follower gets the template message.
    client.post("/api/v1/subscriptions", headers=buyer.headers, json={"results": [{"template_id": TEMPLATES["order_shipped"], "result": "accept"}]})
    ship_order(app, paid_order(app, buyer))
    [row] = outbox(app)
    assert row.state == OutboxState.sent and row.channel == MessageChannel.template and row.attempts == 2
    assert len(sandbox_messages.messages(oa_openid(app, sandbox, buyer))) == 1
