"""WeChat Pay fixtures: the sandbox serving the merchant the test apps hold, an app on a real port, orders.

The test apps (TestingConfig) use key pairs generated once into a temporary directory; the
session sandbox is given the same merchant here, whatever it was built with.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select

from server import db
from server.accounts.models import Member
from server.config import TestingConfig
from server.orders import payments
from server.orders.models import Order, OrderEvent, PaymentNotice, Product, Sku
from server.orders.services import LineRequest, place_order
from server.wechat import wechat_pay
from wechat_sandbox import PayMerchant, PayState, SandboxServer, install_pay_merchant, pay_merchant_from_config, serve_in_thread


@pytest.fixture(scope="session")
def pay_merchant() -> PayMerchant:
    return pay_merchant_from_config(vars(TestingConfig()))


@pytest.fixture(autouse=True)
def sandbox_pay(sandbox: SandboxServer, pay_merchant: PayMerchant) -> PayState:
    """The sandbox's WeChat Pay, serving the merchant (ids and keys) the test apps are configured with."""
    install_pay_merchant(sandbox.app, pay_merchant)
    return sandbox.app.extensions["sandbox_pay"]


@pytest.fixture
def live_app(app: Flask) -> Iterator[str]:
    """``app`` served on a real port, and its PUBLIC_BASE_URL pointing there, so the sandbox's notifications reach it."""
    server = serve_in_thread(app)
    base = server.base_url.rstrip("/")
    app.config["PUBLIC_BASE_URL"] = base
    yield base
    server.shutdown()


@dataclass(frozen=True)
class OrderRef:
    id: int
    out_trade_no: str
    member_id: int
    sku_id: int
    total_fee: int
    headers: dict[str, str]


@pytest.fixture
def make_order(app: Flask, wx_login: Callable[..., dict[str, Any]]) -> Callable[..., OrderRef]:
    """``make_order("alice", price_fen=…, quantity=…)``: an online order placed through the service, stock reserved."""

    def make(name: str = "alice", price_fen: int = 12_345, quantity: int = 1, stock: int = 10) -> OrderRef:
        user = wx_login(name)
        with app.app_context():
            sess = db.session()
            member = sess.get(Member, user["user"]["id"])
            assert member is not None
            product = Product(title="有机茶叶礼盒")
            sess.add(product)
            sess.flush()
            sku = Sku(product_id=product.id, name="500g", price_fen=price_fen, stock=stock)
            sess.add(sku)
            sess.flush()
            order = place_order(sess, member, [LineRequest(sku.id, quantity)])
            db.commit()
            return OrderRef(order.id, order.out_trade_no, member.id, sku.id, order.total_fee, user["headers"])

    return make


def prepay(app: Flask, ref: OrderRef, api: str = "v3") -> dict[str, str]:
    """The requestPayment parameters of ``ref``, prepaid through ``api`` (committed)."""
    with app.app_context():
        sess = db.session()
        order = sess.get(Order, ref.id)
        member = sess.get(Member, ref.member_id)
        pay = dataclasses.replace(wechat_pay(), default_api=api)
        params = payments.prepay_order(sess, pay, order, member, "203.0.113.7")
        db.commit()
        return params


def snapshot(app: Flask, ref: OrderRef) -> tuple[Any, ...]:
    """Everything a refused notification must leave alone."""
    with app.app_context():
        sess = db.session()
        order = sess.get(Order, ref.id)
        assert order is not None
        events = sess.scalar(select(func.count()).select_from(OrderEvent).where(OrderEvent.order_id == ref.id))
        notices = sess.scalar(select(func.count()).select_from(PaymentNotice))
        stock = sess.get(Sku, ref.sku_id).stock  # type: ignore[union-attr]
        return (order.status, order.paid_fee, order.refunded_fee, order.transaction_id, events, notices, stock)


def order_row(app: Flask, order_id: int) -> Order:
    """The order as stored now, detached (the teardown's rollback would expire it)."""
    with app.app_context():
        order = db.session().get(Order, order_id)
        assert order is not None
        db.session().expunge(order)
        return order


def events_of(app: Flask, order_id: int, event: str | None = None) -> list[OrderEvent]:
    with app.app_context():
        query = select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
        if event is not None:
            query = query.where(OrderEvent.event == event)
        found = list(db.session().scalars(query))
        db.session().expunge_all()
        return found


def post(base: str, path: str, headers: dict[str, str], body: bytes) -> requests.Response:
    return requests.post(base + path, data=body, headers=headers, timeout=30)
