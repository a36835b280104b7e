"""WeChat Pay refuses a payment window under five minutes: an order near its time never sends one."""
from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Callable

import pytest
from flask import Flask
from sqlalchemy import update

from server import db
from server.db import utcnow
from server.orders import payments
from server.orders.models import Order, OrderStatus
from server.settings.services import set_setting
from wechat_sandbox import PayState
from tests.orders.conftest import OrderRef, events_of, order_row


def _expires_in(app: Flask, ref: OrderRef, left: timedelta) -> None:
    with app.app_context():
        db.session().execute(update(Order).where(Order.id == ref.id).values(expires_at=utcnow() + left))
        db.commit()


@pytest.mark.parametrize("api", ["v2", "v3"])
@pytest.mark.parametrize("left", [timedelta(seconds=30), timedelta(minutes=5), timedelta(minutes=6, seconds=59)])
def test_an_order_in_its_last_minutes_gets_a_window_wechat_accepts(
    app_factory: Any, make_order: Callable[..., OrderRef], sandbox_pay: PayState, api: str, left: timedelta
) -> None:
    app = app_factory(WECHAT_PAY_API=api)
    ref = make_order()
    _expires_in(app, ref, left)
    before = time.time()
    response = app.test_client().post(f"/api/v1/orders/{ref.id}/pay", headers=ref.headers)
    assert response.status_code == 200, response.get_json()
    order = order_row(app, ref.id)
    assert order.expires_at is not None and order.expires_at >= utcnow() + payments.PAY_WINDOW_FLOOR - timedelta(seconds=2)
    # WeChat was given the order's new time, at least the floor away, never the five minutes it refuses.
    sent = sandbox_pay.orders[ref.out_trade_no].time_expire
    assert sent is not None and sent - before >= payments.PAY_WINDOW_FLOOR.total_seconds() - 2
    assert [e.event for e in events_of(app, ref.id)][-2:] == ["pay_window_extended", "prepay"]


def test_with_extension_off_a_short_window_is_a_clear_refusal(app: Flask, make_order: Callable[..., OrderRef], sandbox_pay: PayState) -> None:
    with app.app_context():
        set_setting(db.session(), "extend_short_pay_window", False, by="test")
        db.commit()
    ref = make_order()
    _expires_in(app, ref, timedelta(minutes=4))
    response = app.test_client().post(f"/api/v1/orders/{ref.id}/pay", headers=ref.headers)
    assert response.status_code == 409
    assert response.get_json()["code"] == 40968
    assert ref.out_trade_no not in sandbox_pay.orders  # nothing was sent to WeChat
    assert order_row(app, ref.id).status == OrderStatus.created


def test_an_order_with_time_left_keeps_its_own_window(app: Flask, make_order: Callable[..., OrderRef], sandbox_pay: PayState) -> None:
    ref = make_order()
    expires = order_row(app, ref.id).expires_at
    assert app.test_client().post(f"/api/v1/orders/{ref.id}/pay", headers=ref.headers).status_code == 200
    assert order_row(app, ref.id).expires_at == expires
    assert expires is not None and sandbox_pay.orders[ref.out_trade_no].time_expire == expires.timestamp()
