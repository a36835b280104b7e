"""The outbox: written in the event's transaction, sent after its commit within the member's allowance,
retried with backoff when WeChat fails for now, dropped with the reason when it refuses for good, sent once."""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from server import db, scheduler
from server.accounts.models import Member
from server.db import utcnow
from server.notifications import delivery
from server.notifications import services as notify_services
from server.notifications.models import OutboxMessage, OutboxState, SubscriptionAllowance
from server.orders.models import Order
from server.wechat.client import MiniProgram, WeChatError, WeChatUnavailableError
from tests.notifications.conftest import MAPPINGS, TEMPLATES, Person, Sandbox, outbox
from tests.points import make_sku, pay, place, ship

SEND_PATH = "/cgi-bin/message/subscribe/send"


def paid_order(app: Flask, who: Person) -> int:
    with app.app_context():
        sess = db.session()
        order = pay(sess, place(sess, sess.get(Member, who.id), make_sku(sess)))
        db.commit()
        return order.id


def ship_order(app: Flask, order_id: int, *, commit: bool = True) -> None:
    with app.app_context():
        sess = db.session()
        ship(sess, sess.get(Order, order_id))
        if commit:
            db.commit()
        else:
            sess.rollback()


def allowance(app: Flask, who: Person, event: str = "order_shipped") -> int:
    with app.app_context():
        row = db.session().scalars(select(SubscriptionAllowance).where(
            SubscriptionAllowance.member_id == who.id, SubscriptionAllowance.template_id == TEMPLATES[event])).first()
        return row.remaining if row is not None else 0


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows stay queued after the commit (no background send), for the drainers to find."""
    monkeypatch.setattr(notify_services, "deliver", lambda outbox_id: None)


def test_the_message_is_written_in_the_events_transaction_and_rolled_back_with_it(app: Flask, notify, person, subscribe, sandbox_messages: Sandbox) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped")
    order_id = paid_order(app, buyer)
    ship_order(app, order_id, commit=False)
    assert outbox(app) == [] and sandbox_messages.messages(buyer.openid) == []
    ship_order(app, order_id)
    [row] = outbox(app)
    assert row.state == OutboxState.sent and row.attempts == 1 and row.reason == ""
    assert len(sandbox_messages.messages(buyer.openid)) == 1
    assert allowance(app, buyer) == 0


def test_an_event_switched_off_writes_nothing(app: Flask, notify, person, subscribe, sandbox_messages: Sandbox) -> None:
    notify("order_shipped", "off")
    buyer = person()
    ship_order(app, paid_order(app, buyer))
    assert outbox(app) == []


def test_without_an_allowance_nothing_is_sent_and_the_row_says_why(app: Flask, notify, person, sandbox_messages: Sandbox) -> None:
    notify("order_shipped")
    buyer = person()
    calls = sandbox_messages.calls(SEND_PATH)
    ship_order(app, paid_order(app, buyer))
    [row] = outbox(app)
    assert row.state == OutboxState.dropped and row.reason == "no subscription left for the template" and row.errcode is None
    assert sandbox_messages.calls(SEND_PATH) == calls  # WeChat was never asked (it would answer 43101)


def test_each_send_uses_one_allowance(app: Flask, notify, person, subscribe, sandbox_messages: Sandbox) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped", times=2)
    for _ in range(3):
        ship_order(app, paid_order(app, buyer))
    assert [r.state for r in outbox(app)] == [OutboxState.sent, OutboxState.sent, OutboxState.dropped]
    assert len(sandbox_messages.messages(buyer.openid)) == 2
    assert allowance(app, buyer) == 0


@pytest.mark.parametrize("error", [
    WeChatUnavailableError(None, "cgi-bin/message/subscribe/send: timed out"),
    WeChatUnavailableError(-1, "system error"),
    WeChatError(45009, "reach max api daily quota limit rid: 1-2-3"),
])
def test_a_transient_error_is_retried_with_backoff(app: Flask, notify, person, subscribe, sandbox_messages: Sandbox, monkeypatch: pytest.MonkeyPatch, error: WeChatError) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped")
    real = MiniProgram.send_subscribe_message
    failures = [error]

    def flaky(self: MiniProgram, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MiniProgram, "send_subscribe_message", flaky)
    before = utcnow()
    ship_order(app, paid_order(app, buyer))
    [row] = outbox(app)
    assert row.state == OutboxState.queued and row.attempts == 1 and row.errcode == error.errcode
    assert "rid" not in row.reason and row.reason
    assert before + timedelta(seconds=59) <= row.next_attempt_at <= utcnow() + timedelta(seconds=61)
    assert allowance(app, buyer) == 1  # WeChat did not take it, so the allowance is the member's again
    assert delivery.drain(app, utcnow()) == {}  # not due yet
    assert delivery.drain(app, row.next_attempt_at) == {"sent": 1}
    assert outbox(app)[0].state == OutboxState.sent and outbox(app)[0].attempts == 2
    assert len(sandbox_messages.messages(buyer.openid)) == 1 and allowance(app, buyer) == 0


def test_a_message_wechat_keeps_refusing_for_now_fails_after_the_last_attempt(app: Flask, notify, person, subscribe, monkeypatch: pytest.MonkeyPatch) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped")

    def busy(self: MiniProgram, *args: Any, **kwargs: Any) -> Any:
        raise WeChatUnavailableError(-1, "system error")

    monkeypatch.setattr(MiniProgram, "send_subscribe_message", busy)
    ship_order(app, paid_order(app, buyer))
    times = []
    for _ in range(delivery.MAX_ATTEMPTS - 1):
        [row] = outbox(app)
        assert row.state == OutboxState.queued
        times.append(row.next_attempt_at)
        delivery.drain(app, row.next_attempt_at)
    waits = [later - earlier for earlier, later in zip(times, times[1:])]
    [row] = outbox(app)
    assert row.state == OutboxState.failed and row.attempts == delivery.MAX_ATTEMPTS and row.errcode == -1
    assert [w.total_seconds() / 60 for w in waits] == [2, 4, 8, 16, 32, 64][: delivery.MAX_ATTEMPTS - 2]
    assert allowance(app, buyer) == 1
    assert delivery.backoff(30) == delivery.backoff(10_000) == delivery.MAX_BACKOFF


def test_an_unknown_template_is_dropped_with_wechats_words(app: Flask, client: Any, notify, person, sandbox_messages: Sandbox) -> None:
    notify("order_shipped", f"NoSuchTemplate {MAPPINGS['order_shipped']}")
    buyer = person()
    client.post("/api/v1/subscriptions", headers=buyer.headers, json={"results": [{"template_id": "NoSuchTemplate", "result": "accept"}]})
    ship_order(app, paid_order(app, buyer))
    [row] = outbox(app)
    assert row.state == OutboxState.dropped and row.errcode == 40037 and row.reason == "40037: invalid template_id"
    with app.app_context():
        assert notify_services.remaining_allowances(db.session(), buyer.id) == {"NoSuchTemplate": 1}  # not used by a refused send


def test_a_value_wechat_refuses_is_dropped_naming_the_keyword(app: Flask, notify, person, subscribe, sandbox_messages: Sandbox) -> None:
    # The template has five keywords; a mapping of one leaves thing2 empty, and WeChat says so.
    notify("order_shipped", f"{TEMPLATES['order_shipped']} character_string1=order_no")
    buyer = person()
    subscribe(buyer, "order_shipped")
    ship_order(app, paid_order(app, buyer))
    [row] = outbox(app)
    assert row.state == OutboxState.dropped and row.errcode == 47003
    assert row.reason == "47003: argument invalid! data.thing2.value is empty"
    assert allowance(app, buyer) == 1


def test_wechat_saying_no_allowance_is_left_zeroes_ours(app: Flask, client: Any, notify, person, sandbox_messages: Sandbox) -> None:
    notify("order_shipped")
    buyer = person()
    # Reported to us twice, but never accepted in WeChat.
    for _ in range(2):
        client.post("/api/v1/subscriptions", headers=buyer.headers, json={"results": [{"template_id": TEMPLATES["order_shipped"], "result": "accept"}]})
    ship_order(app, paid_order(app, buyer))
    [row] = outbox(app)
    assert row.state == OutboxState.dropped and row.errcode == 43101 and row.reason.startswith("43101: ")
    assert allowance(app, buyer) == 0


def test_two_drainers_racing_send_once(app: Flask, notify, person, subscribe, sandbox_messages: Sandbox, held: None) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped", times=2)
    ship_order(app, paid_order(app, buyer))
    [row] = outbox(app)
    assert row.state == OutboxState.queued
    barrier = threading.Barrier(2)
    states: list[str | None] = []

    def drainer() -> None:
        with db.unit_of_work(app):
            barrier.wait()
            states.append(delivery.deliver(row.id))

    threads = [threading.Thread(target=drainer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s or "" for s in states) in (["sent", "sent"], ["sending", "sent"])
    assert len(sandbox_messages.messages(buyer.openid)) == 1
    assert allowance(app, buyer) == 1 and outbox(app)[0].attempts == 1


def test_the_scheduler_sends_what_a_crash_left_behind(app: Flask, notify, person, subscribe, sandbox_messages: Sandbox, held: None) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped", times=2)
    ship_order(app, paid_order(app, buyer))
    ship_order(app, paid_order(app, buyer))
    first, second = outbox(app)
    # The second was claimed by a sender that died: its lease runs out, then it is anyone's.
    with app.app_context():
        db.session().get(OutboxMessage, second.id).state = OutboxState.sending
        db.session().get(OutboxMessage, second.id).lease_until = utcnow() + delivery.LEASE
        db.commit()
    now = utcnow()
    assert scheduler.notifications_job(app, now) == {"sent": 1}
    assert scheduler.notifications_job(app, now) is None  # this minute is claimed
    assert scheduler.notifications_job(app, now + delivery.LEASE + timedelta(minutes=1)) == {"sent": 1}
    assert [r.state for r in outbox(app)] == [OutboxState.sent, OutboxState.sent]
    assert len(sandbox_messages.messages(buyer.openid)) == 2


def test_the_message_opens_the_configured_version_of_the_mini_program(app_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.config import ConfigError

    app = app_factory(WECHAT_MINIPROGRAM_STATE="developer")
    seen: list[str] = []
    monkeypatch.setattr(MiniProgram, "send_subscribe_message", lambda self, *a, **k: seen.append(k["miniprogram_state"]))
    with app.app_context():
        delivery._send(delivery.Claim(1, 1, delivery.MessageChannel.subscribe, "o1", "t1", {}, ""))
    assert seen == ["developer"]
    with pytest.raises(ConfigError, match="WECHAT_MINIPROGRAM_STATE"):
        app_factory(WECHAT_MINIPROGRAM_STATE="beta")


def test_a_stored_mapping_that_no_longer_parses_sends_nothing_and_fails_nothing(app: Flask, person, sandbox_messages: Sandbox) -> None:
    from server.settings.models import Setting

    with app.app_context():
        db.session().add(Setting(key="notify_order_shipped", value="tpl number1=no_such_source", updated_by="cli"))
        db.commit()
    buyer = person()
    order_id = paid_order(app, buyer)
    ship_order(app, order_id)
    with app.app_context():
        assert db.session().get(Order, order_id).status.value == "shipped"
    assert outbox(app) == []
