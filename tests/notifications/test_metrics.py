"""What became of each send is counted (``referral_notifications_total``): sent, retried, dropped and
failed, with WeChat's errcode or our own reason; the subscribe-message calls by API and errcode."""
from __future__ import annotations

from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client import REGISTRY

from server.notifications import delivery
from server.wechat.client import MiniProgram, WeChatUnavailableError
from tests.notifications.conftest import MAPPINGS, Sandbox, outbox
from tests.notifications.test_outbox import paid_order, ship_order


def counted(outcome: str, reason: str) -> float:
    return REGISTRY.get_sample_value("referral_notifications_total", {"outcome": outcome, "reason": reason}) or 0.0


def wechat(errcode: str) -> float:
    return REGISTRY.get_sample_value("referral_wechat_requests_total", {"api": "cgi-bin/message/subscribe/send", "errcode": errcode}) or 0.0


def test_sent_and_dropped_without_an_allowance(app: Flask, notify, person, subscribe, sandbox_messages: Sandbox) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped")
    sent, no_allowance, calls = counted("sent", "none"), counted("dropped", delivery.NO_ALLOWANCE), wechat("0")
    for _ in range(2):
        ship_order(app, paid_order(app, buyer))
    assert counted("sent", "none") == sent + 1
    assert counted("dropped", delivery.NO_ALLOWANCE) == no_allowance + 1
    assert wechat("0") == calls + 1  # the dropped one never reached WeChat


def test_a_refusal_is_dropped_with_wechats_errcode(app: Flask, client: Any, notify, person, sandbox_messages: Sandbox) -> None:
    notify("order_shipped", f"NoSuchTemplate {MAPPINGS['order_shipped']}")
    buyer = person()
    client.post("/api/v1/subscriptions", headers=buyer.headers, json={"results": [{"template_id": "NoSuchTemplate", "result": "accept"}]})
    dropped, calls = counted("dropped", "40037"), wechat("40037")
    ship_order(app, paid_order(app, buyer))
    assert outbox(app)[0].errcode == 40037
    assert counted("dropped", "40037") == dropped + 1
    assert wechat("40037") == calls + 1


def test_a_transient_failure_is_retried_then_failed_after_the_last_attempt(app: Flask, notify, person, subscribe, monkeypatch: pytest.MonkeyPatch) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped")

    def busy(self: MiniProgram, *args: Any, **kwargs: Any) -> Any:
        raise WeChatUnavailableError(-1, "system error")

    monkeypatch.setattr(MiniProgram, "send_subscribe_message", busy)
    retried, failed = counted("retried", "-1"), counted("failed", "-1")
    ship_order(app, paid_order(app, buyer))
    for _ in range(delivery.MAX_ATTEMPTS - 1):
        delivery.drain(app, outbox(app)[0].next_attempt_at)
    assert counted("retried", "-1") == retried + delivery.MAX_ATTEMPTS - 1
    assert counted("failed", "-1") == failed + 1


def test_a_timeout_is_retried_under_its_own_reason(app: Flask, notify, person, subscribe, sandbox_messages: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped")
    timeouts = REGISTRY.get_sample_value("referral_wechat_requests_total", {"api": "cgi-bin/message/subscribe/send", "errcode": "timeout"}) or 0.0
    retried = counted("retried", "timeout")
    real = requests.Session.request

    def slow(self: requests.Session, method: str, url: str, **kwargs: Any) -> Any:
        if "subscribe/send" in url:
            raise requests.Timeout("read timed out")
        return real(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", slow)
    ship_order(app, paid_order(app, buyer))
    assert counted("retried", "timeout") == retried + 1
    assert REGISTRY.get_sample_value("referral_wechat_requests_total", {"api": "cgi-bin/message/subscribe/send", "errcode": "timeout"}) == timeouts + 1
