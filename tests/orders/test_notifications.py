"""Notifications out of order, after-commit hooks, reconciliation with the order query, refunds that need a retry."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from server import db, events, tasks
from server.db import utcnow
from server.jobs import queue
from server.jobs.models import Job, JobState
from server.orders import payments
from server.orders.models import Order, OrderStatus, PaymentNotice, Refund, RefundStatus, Sku
from server.orders.services import request_refund
from server.points.models import OrderReward
from server.points.services import ORDER_POINTS_JOB
from server.wechat import wechat_pay
from wechat_sandbox import PayState
from tests.orders.conftest import OrderRef, events_of, order_row, prepay, snapshot

NOTIFY_PATH = {"v2": (payments.V2_PAY_NOTIFY_PATH, payments.V2_REFUND_NOTIFY_PATH), "v3": (payments.V3_NOTIFY_PATH, payments.V3_NOTIFY_PATH)}


def accepted(response: Any, api: str) -> bool:
    if api == "v3":
        return response.status_code == 204
    return response.status_code == 200 and b"<![CDATA[SUCCESS]]>" in response.data


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_refund_notification_before_its_payment_notification(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, api: str) -> None:
    ref = make_order(price_fen=8_800)
    prepay(app, ref, api)
    pay_path, refund_path = NOTIFY_PATH[api]
    # The buyer paid and the merchant refunded at once (say on the merchant platform); WeChat's
    # refund notification happens to arrive first.
    sandbox_pay.pay(ref.out_trade_no)
    refund = sandbox_pay.open_refund(out_trade_no=ref.out_trade_no, out_refund_no="F" + ref.out_trade_no[1:], total_fee=ref.total_fee, refund_fee=ref.total_fee, notify_url=None, api=api)
    refund_headers, refund_body = sandbox_pay.build_refund_notification(refund.out_refund_no)
    assert accepted(client.post(refund_path, data=refund_body, headers=refund_headers), api)
    order = order_row(app, ref.id)
    assert (order.status, order.refunded_fee) == (OrderStatus.created, 0)  # kept, waiting for its payment
    with app.app_context():
        waiting = db.session().scalars(select(PaymentNotice).where(PaymentNotice.out_trade_no == ref.out_trade_no)).all()
        assert [(n.kind, n.applied) for n in waiting] == [("refund", False)]
    # A repeat of the early refund notification is not stored twice.
    assert accepted(client.post(refund_path, data=refund_body, headers=refund_headers), api)

    pay_headers, pay_body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert accepted(client.post(pay_path, data=pay_body, headers=pay_headers), api)
    order = order_row(app, ref.id)
    assert order.status == OrderStatus.refunded
    assert order.refunded_fee == order.paid_fee == ref.total_fee
    assert [e.event for e in events_of(app, ref.id)][-4:] == ["paid", "refund_requested", "refund_succeeded", "refunded"]
    with app.app_context():
        notices = db.session().scalars(select(PaymentNotice).where(PaymentNotice.out_trade_no == ref.out_trade_no)).all()
        assert sorted((n.kind, n.applied) for n in notices) == [("pay", True), ("refund", True)]


def test_refund_notification_naming_another_order_is_refused(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    first, second = make_order("alice"), make_order("bob")
    for ref in (first, second):
        prepay(app, ref)
        headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
        assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    with app.app_context():
        sess = db.session()
        ours = request_refund(sess, sess.get(Order, first.id), 100, "坏了", actor="staff:1", approved=True)  # type: ignore[arg-type]
        db.commit()
        out_refund_no = ours.out_refund_no
    # WeChat's refund under our refund number, but for the other order.
    refund = sandbox_pay.open_refund(out_trade_no=second.out_trade_no, out_refund_no=out_refund_no, total_fee=second.total_fee, refund_fee=100, notify_url=None, api="v3")
    headers, body = sandbox_pay.build_refund_notification(refund.out_refund_no)
    before = (snapshot(app, first), snapshot(app, second))
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 422
    assert (snapshot(app, first), snapshot(app, second)) == before


# -- what a notification announces ------------------------------------------------------------


def test_a_payment_is_announced_once_however_often_its_notification_comes(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    seen: list[tuple[int, OrderStatus, int]] = []

    def record(sess: Any, *, order: Order, status: OrderStatus) -> None:
        seen.append((order.id, status, order.refunded_fee))

    ref = make_order()
    prepay(app, ref)
    with events.order_status_changed.connected_to(record):
        headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
        for _ in range(3):
            assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
        assert seen == [(ref.id, OrderStatus.paid, 0)]

        refund = sandbox_pay.open_refund(out_trade_no=ref.out_trade_no, out_refund_no="F" + ref.out_trade_no[1:], total_fee=ref.total_fee, refund_fee=1_000, notify_url=None, api="v3")
        headers, body = sandbox_pay.build_refund_notification(refund.out_refund_no)
        assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
        assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    # The partial refund passes through refunding and back to paid, now with money given back: once.
    assert seen[1:] == [(ref.id, OrderStatus.refunding, 0), (ref.id, OrderStatus.paid, 1_000)]


def test_the_points_of_a_paid_notification_arrive_through_the_job_queue(app_factory: Any, client: Any, wx_login: Any, make_order: Any, sandbox_pay: PayState) -> None:
    zoe = wx_login("zoe")
    scene = client.post("/api/v1/referral/scenes", headers=zoe["headers"], json={}).get_json()["data"]["scene"]
    wx_login("alice", scene=scene)
    ref = make_order("alice", price_fen=10_000)
    queued = app_factory(TASKS_EAGER=False, JOB_DRAINERS=0)  # commits leave the job for the test to drain
    prepay(queued, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert queued.test_client().post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    with queued.app_context():
        sess = db.session()
        # Committed with the payment: the job, and no reward yet.
        assert [(j.kind, j.ref, j.state) for j in sess.scalars(select(Job))] == [(ORDER_POINTS_JOB, str(ref.id), JobState.queued)]
        assert sess.scalars(select(OrderReward)).all() == []
    assert queue.drain(queued) == {"done": 1, "failed": 0}
    with queued.app_context():
        sess = db.session()
        assert [(r.member_id, r.level, r.amount) for r in sess.scalars(select(OrderReward))] == [(zoe["user"]["id"], 1, 50)]
        assert sess.scalars(select(Job)).all() == []


def test_a_failing_task_after_the_commit_never_changes_the_answer(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    def explode(order_id: int) -> None:
        with app.app_context():
            db.session().execute(update(Order).where(Order.id == order_id).values(remark="never stored"))
            raise RuntimeError("a task that fails")

    def defer_failing_work(sess: Any, *, order: Order, status: OrderStatus) -> None:
        tasks.defer(explode, order.id)

    ref = make_order()
    prepay(app, ref)
    with events.order_status_changed.connected_to(defer_failing_work):
        headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
        assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    row = order_row(app, ref.id)
    assert (row.status, row.remark) == (OrderStatus.paid, "")


def test_a_payment_that_settles_a_waiting_refund_is_announced_with_it(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    seen: list[str] = []

    def record(sess: Any, *, order: Order, status: OrderStatus) -> None:
        seen.append(f"{status.value} {order.refunded_fee}")

    ref = make_order()
    prepay(app, ref, "v2")
    sandbox_pay.pay(ref.out_trade_no)
    refund = sandbox_pay.open_refund(out_trade_no=ref.out_trade_no, out_refund_no="F" + ref.out_trade_no[1:], total_fee=ref.total_fee, refund_fee=345, notify_url=None, api="v2")
    with events.order_status_changed.connected_to(record):
        _, body = sandbox_pay.build_refund_notification(refund.out_refund_no)
        assert accepted(client.post(payments.V2_REFUND_NOTIFY_PATH, data=body), "v2")
        assert seen == []  # nothing happened to the order yet
        _, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
        assert accepted(client.post(payments.V2_PAY_NOTIFY_PATH, data=body), "v2")
    assert seen[0] == "paid 0" and seen[-1] == "paid 345"


# -- reconciliation -------------------------------------------------------------------------------


def _expire(app: Flask, *refs: OrderRef) -> None:
    with app.app_context():
        db.session().execute(update(Order).where(Order.id.in_([r.id for r in refs])).values(expires_at=utcnow() - timedelta(minutes=1)))
        db.commit()


def _stock(app: Flask, ref: OrderRef) -> int:
    with app.app_context():
        return db.session().get(Sku, ref.sku_id).stock  # type: ignore[union-attr]


def test_reconciliation_pays_what_wechat_says_is_paid_and_closes_the_rest(app: Flask, make_order: Any, sandbox_pay: PayState) -> None:
    hooked: list[int] = []

    def record_paid(sess: Any, *, order: Order, status: OrderStatus) -> None:
        if status == OrderStatus.paid:
            hooked.append(order.id)

    paid_v2 = make_order("alice", quantity=2)
    paid_v3 = make_order("bob")
    unpaid = make_order("carol", quantity=3)
    never_prepaid = make_order("dave", quantity=4)
    not_due = make_order("erin")
    prepay(app, paid_v2, "v2")
    prepay(app, paid_v3, "v3")
    prepay(app, unpaid, "v3")
    prepay(app, not_due, "v3")
    # Paid at WeChat, but the notifications never arrived.
    sandbox_pay.pay(paid_v2.out_trade_no)
    sandbox_pay.pay(paid_v3.out_trade_no)
    _expire(app, paid_v2, paid_v3, unpaid, never_prepaid)
    stock_before = {r.id: _stock(app, r) for r in (unpaid, never_prepaid)}

    with app.app_context(), events.order_status_changed.connected_to(record_paid):
        since = utcnow() - timedelta(hours=1)
        found = payments.check_disagreements(db.session(), wechat_pay(), since)
        assert {(d.order_id, d.trade_state) for d in found} == {(paid_v2.id, "SUCCESS"), (paid_v3.id, "SUCCESS")}
        summary = payments.reconcile_unpaid(wechat_pay(), utcnow())
    assert sorted(summary.paid) == sorted([paid_v2.id, paid_v3.id])
    assert sorted(summary.closed) == sorted([unpaid.id, never_prepaid.id])
    assert sorted(hooked) == sorted([paid_v2.id, paid_v3.id])

    for ref in (paid_v2, paid_v3):
        order = order_row(app, ref.id)
        assert (order.status, order.transaction_id) == (OrderStatus.paid, sandbox_pay.orders[ref.out_trade_no].transaction_id)
        assert events_of(app, ref.id, "paid")[0].actor == "reconcile"
    for ref in (unpaid, never_prepaid):
        assert order_row(app, ref.id).status == OrderStatus.closed
        assert _stock(app, ref) == stock_before[ref.id] + (3 if ref is unpaid else 4)
    assert sandbox_pay.orders[unpaid.out_trade_no].state == "CLOSED"  # nobody can pay it at WeChat any more
    assert never_prepaid.out_trade_no not in sandbox_pay.orders
    assert order_row(app, not_due.id).status == OrderStatus.created

    # Now WeChat and the orders agree.
    with app.app_context():
        assert payments.check_disagreements(db.session(), wechat_pay(), since) == []


def test_reconciliation_waits_while_wechat_cannot_be_reached(app_factory: Any, app: Flask, make_order: Any) -> None:
    ref = make_order()
    prepay(app, ref)
    _expire(app, ref)
    offline = app_factory(WECHAT_PAY_API_BASE="http://127.0.0.1:9/", WECHAT_TIMEOUT=2)
    with offline.app_context():
        summary = payments.reconcile_unpaid(wechat_pay(), utcnow())
    assert summary.counts() == {"paid": 0, "closed": 0, "waiting": 1, "failed": 0, "skipped": 0}
    assert order_row(app, ref.id).status == OrderStatus.created


def test_reconcile_command(app: Flask, make_order: Any, sandbox_pay: PayState) -> None:
    paid, unpaid = make_order("alice"), make_order("bob")
    prepay(app, paid)
    prepay(app, unpaid, "v2")
    sandbox_pay.pay(paid.out_trade_no)
    _expire(app, paid, unpaid)
    result = app.test_cli_runner().invoke(args=["reconcile", "--since-hours", "2"])
    assert result.exit_code == 0, result.output
    assert "unpaid orders: 1 paid, 1 closed, 0 waiting, 0 failed, 0 skipped" in result.output
    assert "disagreements with WeChat Pay: 0" in result.output
    assert "refunds resent: 0 accepted, 0 still waiting" in result.output
    assert order_row(app, paid.id).status == OrderStatus.paid and order_row(app, unpaid.id).status == OrderStatus.closed


def test_reconcile_command_lists_disagreements(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order()
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    # A refund made at WeChat that never reached us.
    sandbox_pay.open_refund(out_trade_no=ref.out_trade_no, out_refund_no="F" + ref.out_trade_no[1:], total_fee=ref.total_fee, refund_fee=10, notify_url=None, api="v3")
    result = app.test_cli_runner().invoke(args=["reconcile"])
    assert result.exit_code == 0, result.output
    assert "disagreements with WeChat Pay: 1" in result.output
    assert f"order {ref.id} ({ref.out_trade_no}): paid here, REFUND at WeChat Pay: WeChat Pay has a refund this order lacks" in result.output


# -- refunds that need a retry ----------------------------------------------------------------------


def test_a_refund_wechat_did_not_take_stays_approved_and_is_retried(app_factory: Any, app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order()
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    with app.app_context():
        sess = db.session()
        refund = request_refund(sess, sess.get(Order, ref.id), 1_000, "坏了", actor="staff:1", approved=True)  # type: ignore[arg-type]
        db.commit()
        refund_id, out_refund_no = refund.id, refund.out_refund_no
    offline = app_factory(WECHAT_PAY_API_BASE="http://127.0.0.1:9/", WECHAT_TIMEOUT=2)
    assert payments.submit_refund(offline, refund_id) is False
    with app.app_context():
        assert db.session().get(Refund, refund_id).status == RefundStatus.approved  # type: ignore[union-attr]
    # Too young for the retry job yet; a minute later it is sent again and WeChat takes it.
    assert payments.retry_refunds(app, utcnow()) == (0, 0)
    assert payments.retry_refunds(app, utcnow() + timedelta(minutes=2)) == (1, 0)
    with app.app_context():
        row = db.session().get(Refund, refund_id)
        assert row is not None and row.status == RefundStatus.processing and row.refund_id == sandbox_pay.refunds[out_refund_no].refund_id
    assert [e.event for e in events_of(app, ref.id)][-1] == "refund_submitted"


def test_the_admin_refund_route_submits_after_its_commit(app: Flask, client: Any, staff_login: Any, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order()
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    finance = staff_login("finance")
    response = client.post(f"/admin/api/v1/orders/{ref.id}/refunds", headers=finance, json={"reason": "质量问题"})
    assert response.status_code == 201, response.get_json()
    out_refund_no = response.get_json()["data"]["out_refund_no"]
    assert sandbox_pay.refunds[out_refund_no].refund_fee == ref.total_fee
    with app.app_context():
        row = db.session().scalar(select(Refund).where(Refund.out_refund_no == out_refund_no))
        assert row is not None and row.status == RefundStatus.processing
