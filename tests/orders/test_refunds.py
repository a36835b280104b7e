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
from datetime import timedelta

import requests

from server import scheduler
from server.accounts.models import AuditEntry
from server.db import utcnow
from server.orders.models import Order, OrderStatus, Refund, RefundStatus
from wechat_sandbox import PayState, SandboxServer
from tests.orders.conftest import OrderRef, events_of, order_row, prepay

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


@pytest.fixture
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


@pytest.mark.slow
@pytest.mark.usefixtures("slow_refundable")
def test_eight_concurrent_member_refunds_never_open_more_than_was_paid(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    ref = _paid(app, client, make_order, sandbox_pay)
    statuses = _race(app, f"/api/v1/orders/{ref.id}/refunds", ref.headers, {"amount_fen": 9_999, "reason": "不想要了"})
    assert statuses == [201] + [422] * 7
    assert _open_refunds(app, ref.id) == 10_000
    assert order_row(app, ref.id).status == OrderStatus.refunding


@pytest.mark.slow
@pytest.mark.usefixtures("slow_refundable")
def test_eight_concurrent_staff_refunds_never_open_more_than_was_paid(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, staff_login: Any) -> None:
    ref = _paid(app, client, make_order, sandbox_pay)
    finance = staff_login("finance")
    statuses = _race(app, f"/admin/api/v1/orders/{ref.id}/refunds", finance, {"amount_fen": 9_999, "reason": "质量问题"})
    assert statuses == [201] + [422] * 7
    assert _open_refunds(app, ref.id) == 10_000
    # The one refund went to WeChat and WeChat holds exactly it.
    assert sum(r.refund_fee for r in sandbox_pay.refunds.values() if r.out_trade_no == ref.out_trade_no) == 9_999


@pytest.mark.slow
@pytest.mark.usefixtures("slow_refundable")
def test_concurrent_small_refunds_add_up_to_at_most_the_payment(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    """Each of eight 3,000-fen requests fits alone; only three fit together in the 10,000 left."""
    ref = _paid(app, client, make_order, sandbox_pay)
    statuses = _race(app, f"/api/v1/orders/{ref.id}/refunds", ref.headers, {"amount_fen": 3_000, "reason": "少发了"})
    assert statuses == [201] * 3 + [422] * 5
    assert _open_refunds(app, ref.id) == 9_001
    with app.app_context():
        order = db.session().get(Order, ref.id)
        assert order is not None and order.refunded_fee == 0


# -- what WeChat does with a refund ------------------------------------------------------------------


def _refund(app: Flask, ref: OrderRef, amount: int) -> tuple[int, str]:
    """An approved staff refund of ``amount``, committed, not yet sent."""
    with app.app_context():
        sess = db.session()
        row = services.request_refund(sess, sess.get(Order, ref.id), amount, "退货", actor="staff:1", approved=True)  # type: ignore[arg-type]
        db.commit()
        return row.id, row.out_refund_no


def _refund_row(app: Flask, refund_id: int) -> Refund:
    with app.app_context():
        row = db.session().get(Refund, refund_id)
        assert row is not None
        db.session().expunge(row)
        return row


def _paid_plainly(app: Flask, client: Any, make_order: Callable[..., OrderRef], sandbox_pay: PayState, price_fen: int = 10_000) -> OrderRef:
    ref = make_order(price_fen=price_fen)
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    return ref


def test_a_refund_wechat_refuses_for_good_fails_with_its_reason_and_is_not_retried(
    app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, staff_login: Any
) -> None:
    ref = _paid_plainly(app, client, make_order, sandbox_pay)
    # Someone refunded the whole order on the merchant platform; that notification never came.
    sandbox_pay.open_refund(out_trade_no=ref.out_trade_no, out_refund_no="Fplatform" + ref.out_trade_no[-8:], total_fee=10_000, refund_fee=10_000, notify_url=None, api="v3")
    refund_id, out_refund_no = _refund(app, ref, 5_000)
    assert payments.submit_refund(app, refund_id) is False
    row = _refund_row(app, refund_id)
    assert row.status == RefundStatus.failed and row.refund_id is None
    assert "INVALID_REQUEST" in row.failure_reason and "退款金额大于订单可退金额" in row.failure_reason
    # Nothing else was open, so the order is back where it was and its points can mature.
    order = order_row(app, ref.id)
    assert (order.status, order.refunded_fee) == (OrderStatus.paid, 0)
    assert out_refund_no not in sandbox_pay.refunds
    # Never sent again, however late the retry job runs.
    assert payments.retry_refunds(app, utcnow() + timedelta(days=1)) == (0, 0)
    # Staff see it in the failed queue, with WeChat's words.
    finance = staff_login("finance")
    listed = client.get("/admin/api/v1/refunds", headers=finance, query_string={"status": "failed"}).get_json()["data"]
    assert [(r["id"], r["status"]) for r in listed["items"]] == [(refund_id, "failed")]
    assert "退款金额大于订单可退金额" in listed["items"][0]["failure_reason"]


def test_a_refund_wechat_cannot_take_now_backs_off_and_the_scheduler_sends_it(app_factory: Any, app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    ref = _paid_plainly(app, client, make_order, sandbox_pay)
    refund_id, out_refund_no = _refund(app, ref, 3_000)
    offline = app_factory(WECHAT_PAY_API_BASE="http://127.0.0.1:9/", WECHAT_TIMEOUT=2)
    start = utcnow()
    assert payments.submit_refund(offline, refund_id) is False
    assert payments.retry_refunds(offline, start + timedelta(minutes=2)) == (0, 1)
    row = _refund_row(app, refund_id)
    assert (row.status, row.attempts) == (RefundStatus.approved, 2)
    assert row.next_attempt_at == start + timedelta(minutes=4)  # 1 minute after the first call, 2 after the second
    assert payments.refund_retry_wait(30) == timedelta(hours=6)
    # Not due yet for the scheduler's refund job; once due, WeChat takes it.
    assert scheduler.refund_retry_job(app, start + timedelta(minutes=2, seconds=30)) == {"accepted": 0, "waiting": 0}
    assert scheduler.refund_retry_job(app, start + timedelta(minutes=2, seconds=30)) is None  # the same minute is claimed
    sent_at = row.next_attempt_at + timedelta(seconds=1)
    assert scheduler.refund_retry_job(app, sent_at) == {"accepted": 1, "waiting": 0}
    row = _refund_row(app, refund_id)
    assert (row.status, row.attempts) == (RefundStatus.processing, 3)
    assert sandbox_pay.refunds[out_refund_no].refund_fee == 3_000
    # Its notification never comes: ten minutes on, WeChat is asked. Still under way, then done.
    assert row.next_attempt_at == sent_at + payments.REFUND_QUERY_AFTER
    assert payments.retry_refunds(app, row.next_attempt_at) == (0, 0)
    row = _refund_row(app, refund_id)
    assert row.status == RefundStatus.processing and row.next_attempt_at == sent_at + 2 * payments.REFUND_QUERY_AFTER
    sandbox_pay.end_refund(out_refund_no, "SUCCESS")
    assert payments.retry_refunds(app, row.next_attempt_at) == (0, 0)
    row = _refund_row(app, refund_id)
    assert (row.status, row.next_attempt_at) == (RefundStatus.succeeded, None)
    assert order_row(app, ref.id).refunded_fee == 3_000
    assert events_of(app, ref.id, "refund_succeeded")[0].actor == "reconcile"


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_an_abnormal_refund_stays_open_until_finance_settles_it_offline(
    app: Flask, live_app: str, sandbox: SandboxServer, make_order: Any, sandbox_pay: PayState, staff_login: Any, api: str
) -> None:
    ref = make_order(price_fen=10_000)
    prepay(app, ref, api)
    assert requests.post(sandbox.base_url + "sandbox/pay/pay", json={"out_trade_no": ref.out_trade_no}, timeout=30).json()["notification"]["ok"]
    refund_id, out_refund_no = _refund(app, ref, 4_000)
    assert payments.submit_refund(app, refund_id)
    ended = requests.post(sandbox.base_url + "sandbox/pay/refund-complete", json={"out_refund_no": out_refund_no, "status": "ABNORMAL"}, timeout=30).json()
    assert ended["notification"]["ok"], ended
    row = _refund_row(app, refund_id)
    assert row.status == RefundStatus.abnormal and "ABNORMAL" in row.failure_reason
    # The money sits at WeChat: not refundable again, and the order does not slip back to paid.
    order = order_row(app, ref.id)
    assert (order.status, order.refunded_fee) == (OrderStatus.refunding, 0)
    with app.app_context():
        sess = db.session()
        assert services.refundable(sess, sess.get(Order, ref.id)) == 6_000  # type: ignore[arg-type]
    client = app.test_client()
    finance = staff_login("finance")
    listed = client.get("/admin/api/v1/refunds", headers=finance, query_string={"status": "abnormal"}).get_json()["data"]
    assert [r["id"] for r in listed["items"]] == [refund_id]
    # Settling needs a note, and only an abnormal refund can be settled.
    assert client.post(f"/admin/api/v1/refunds/{refund_id}/settle-offline", headers=finance, json={}).status_code == 422
    settled = client.post(f"/admin/api/v1/refunds/{refund_id}/settle-offline", headers=finance, json={"note": "已转账至买家银行卡"})
    assert settled.status_code == 200 and settled.get_json()["data"]["status"] == "succeeded"
    again = client.post(f"/admin/api/v1/refunds/{refund_id}/settle-offline", headers=finance, json={"note": "再来一次"})
    assert again.status_code == 409
    order = order_row(app, ref.id)
    assert (order.status, order.refunded_fee) == (OrderStatus.paid, 4_000)
    assert [e.event for e in events_of(app, ref.id)][-4:] == ["refund_abnormal", "refund_settled_offline", "refund_succeeded", "refund_closed"]


def _abnormal(app: Flask, sandbox: SandboxServer, make_order: Any, api: str) -> tuple[OrderRef, int, str]:
    ref = make_order(price_fen=10_000)
    prepay(app, ref, api)
    assert requests.post(sandbox.base_url + "sandbox/pay/pay", json={"out_trade_no": ref.out_trade_no}, timeout=30).json()["notification"]["ok"]
    refund_id, out_refund_no = _refund(app, ref, 4_000)
    assert payments.submit_refund(app, refund_id)
    ended = requests.post(sandbox.base_url + "sandbox/pay/refund-complete", json={"out_refund_no": out_refund_no, "status": "ABNORMAL"}, timeout=30).json()
    assert ended["notification"]["ok"], ended
    return ref, refund_id, out_refund_no


def test_finance_sends_an_abnormal_refund_to_the_buyers_card_and_the_notification_ends_it(
    app: Flask, live_app: str, sandbox: SandboxServer, make_order: Any, sandbox_pay: PayState, staff_login: Any
) -> None:
    ref, refund_id, out_refund_no = _abnormal(app, sandbox, make_order, "v3")
    client, finance, ops = app.test_client(), staff_login("finance"), staff_login("operations")
    card = {"target": "user_bank_card", "bank_type": "ICBC_DEBIT", "bank_account": "6222020200112233445", "real_name": "张三"}
    path = f"/admin/api/v1/refunds/{refund_id}/resend"
    assert client.post(path, headers=ops, json=card).status_code == 403
    for bad in ({"target": "user_bank_card", "bank_type": "ICBC_DEBIT"}, {"target": "merchant_bank_card", "real_name": "张三"}, {"target": "paypal"}):
        response = client.post(path, headers=finance, json=bad)
        assert response.status_code == 422, (bad, response.get_json())
    resent = client.post(path, headers=finance, json=card)
    assert resent.status_code == 200, resent.get_json()
    assert resent.get_json()["data"]["status"] == "processing"
    # WeChat got the card encrypted with its platform key, and decrypted it.
    assert sandbox_pay.refunds[out_refund_no].abnormal_target == {"type": "USER_BANK_CARD", "bank_type": "ICBC_DEBIT", "account_tail": "3445"}
    # Only an abnormal refund can be sent again.
    assert client.post(path, headers=finance, json=card).status_code == 409
    done = requests.post(sandbox.base_url + "sandbox/pay/refund-complete", json={"out_refund_no": out_refund_no}, timeout=30).json()
    assert done["notification"]["ok"], done
    assert _refund_row(app, refund_id).status == RefundStatus.succeeded
    order = order_row(app, ref.id)
    assert (order.status, order.refunded_fee) == (OrderStatus.paid, 4_000)
    assert [e.event for e in events_of(app, ref.id)][-4:] == ["refund_abnormal", "refund_resent", "refund_succeeded", "refund_closed"]
    with app.app_context():
        entry = db.session().scalar(select(AuditEntry).where(AuditEntry.action == "refund.resend"))
        assert entry is not None and entry.detail["bank_account"] == "****3445" and "张三" not in str(entry.detail)


def test_an_abnormal_refund_can_go_to_the_merchants_account_but_not_through_v2(
    app: Flask, live_app: str, sandbox: SandboxServer, make_order: Any, sandbox_pay: PayState, staff_login: Any
) -> None:
    client, finance = app.test_client(), staff_login("finance")
    _, refund_id, out_refund_no = _abnormal(app, sandbox, make_order, "v3")
    resent = client.post(f"/admin/api/v1/refunds/{refund_id}/resend", headers=finance, json={"target": "merchant_bank_card"})
    assert resent.status_code == 200 and resent.get_json()["data"]["status"] == "processing"
    assert sandbox_pay.refunds[out_refund_no].abnormal_target == {"type": "MERCHANT_BANK_CARD"}
    _, v2_refund_id, _ = _abnormal(app, sandbox, make_order, "v2")
    refused = client.post(f"/admin/api/v1/refunds/{v2_refund_id}/resend", headers=finance, json={"target": "merchant_bank_card"})
    assert refused.status_code == 409 and "merchant platform" in refused.get_json()["message"]
    assert _refund_row(app, v2_refund_id).status == RefundStatus.abnormal


@pytest.mark.parametrize("api", ["v2", "v3"])
@pytest.mark.parametrize(("ending", "status"), [("SUCCESS", RefundStatus.succeeded), ("ABNORMAL", RefundStatus.abnormal), ("CLOSED", RefundStatus.failed)])
def test_a_refund_whose_notification_never_comes_is_asked_about(
    app_factory: Any, make_order: Any, sandbox_pay: PayState, api: str, ending: str, status: RefundStatus
) -> None:
    app = app_factory(WECHAT_PAY_API=api)
    ref = make_order(price_fen=10_000)
    prepay(app, ref, api)
    sandbox_pay.pay(ref.out_trade_no)
    with app.app_context():
        sess = db.session()
        services.apply_payment(sess, out_trade_no=ref.out_trade_no, transaction_id=sandbox_pay.orders[ref.out_trade_no].transaction_id or "", amount_fen=10_000, api=api)
        db.commit()
    refund_id, out_refund_no = _refund(app, ref, 2_500)
    assert payments.submit_refund(app, refund_id)
    sandbox_pay.end_refund(out_refund_no, ending)  # WeChat ends it; its notification is lost
    due = _refund_row(app, refund_id).next_attempt_at
    assert due is not None
    assert payments.query_refund(app, refund_id, due) == {"v2": {"ABNORMAL": "CHANGE", "CLOSED": "REFUNDCLOSE"}}.get(api, {}).get(ending, ending)
    assert _refund_row(app, refund_id).status == status
    assert order_row(app, ref.id).refunded_fee == (2_500 if status == RefundStatus.succeeded else 0)
