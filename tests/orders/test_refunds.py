"""Refunds under concurrency, and the refunds WeChat Pay refuses or cannot finish."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest
from flask import Flask
from sqlalchemy import func, select

from server import db
from server.orders import payments, services
from server.orders.models import Order, OrderStatus, Refund, RefundStatus
from server.wechat.sandbox import PayState
from tests.orders.conftest import OrderRef, order_row, prepay

pytestmark = pytest.mark.slow


def _paid(app: Flask, client: Any, make_order: Callable[..., OrderRef], sandbox_pay: PayState, price_fen: int = 10_001) -> OrderRef:
    """A paid order of ``price_fen`` with a 1-fen refund already asked for, so it is ``refunding``
    and every racing request below takes the path that does not move the order's status."""
    ref = make_order(price_fen=price_fen)
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    first = client.post(f"/api/v1/orders/{ref.id}/refunds", headers=ref.headers, json={"amount_fen": 1, "reason": "运费"})
    assert first.status_code == 201
    assert order_row(app, ref.id).status == OrderStatus.refunding
    return ref


@pytest.fixture(autouse=True)
def slow_refundable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widen the window between reading what is refundable and opening the refund, as a loaded server would."""
    original = services.refundable

    def slow(sess: Any, order: Order) -> int:
        available = original(sess, order)
        time.sleep(0.2)
        return available

    monkeypatch.setattr(services, "refundable", slow)


def _race(app: Flask, path: str, headers: dict[str, str], body: dict[str, Any], n: int = 8) -> list[int]:
    """``n`` clients post ``body`` to ``path`` at the same instant; their statuses."""
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def send() -> None:
        local = app.test_client()
        barrier.wait()
        statuses.append(local.post(path, headers=headers, json=body).status_code)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


def _open_refunds(app: Flask, order_id: int) -> int:
    with app.app_context():
        return int(
            db.session().scalar(
                select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
                    Refund.order_id == order_id, Refund.status.in_((RefundStatus.requested, RefundStatus.approved, RefundStatus.processing, RefundStatus.succeeded))
                )
            )
        )


def test_eight_concurrent_member_refunds_never_open_more_than_was_paid(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    ref = _paid(app, client, make_order, sandbox_pay)
    statuses = _race(app, f"/api/v1/orders/{ref.id}/refunds", ref.headers, {"amount_fen": 9_999, "reason": "不想要了"})
    assert statuses == [201] + [422] * 7
    assert _open_refunds(app, ref.id) == 10_000
    assert order_row(app, ref.id).status == OrderStatus.refunding


def test_eight_concurrent_staff_refunds_never_open_more_than_was_paid(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, staff_login: Any) -> None:
    ref = _paid(app, client, make_order, sandbox_pay)
    finance = staff_login("finance")
    statuses = _race(app, f"/admin/api/v1/orders/{ref.id}/refunds", finance, {"amount_fen": 9_999, "reason": "质量问题"})
    assert statuses == [201] + [422] * 7
    assert _open_refunds(app, ref.id) == 10_000
    # The one refund went to WeChat and WeChat holds exactly it.
    assert sum(r.refund_fee for r in sandbox_pay.refunds.values() if r.out_trade_no == ref.out_trade_no) == 9_999


def test_concurrent_small_refunds_add_up_to_at_most_the_payment(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    """Each of eight 3,000-fen requests fits alone; only three fit together in the 10,000 left."""
    ref = _paid(app, client, make_order, sandbox_pay)
    statuses = _race(app, f"/api/v1/orders/{ref.id}/refunds", ref.headers, {"amount_fen": 3_000, "reason": "少发了"})
    assert statuses == [201] * 3 + [422] * 5
    assert _open_refunds(app, ref.id) == 9_001
    with app.app_context():
        order = db.session().get(Order, ref.id)
        assert order is not None and order.refunded_fee == 0
