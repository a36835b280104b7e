"""Refund paths racing each other: staff against staff, a submit against a submit, a notification against a submit."""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import update

from server import db
from server.db import utcnow
from server.orders import payments
from server.orders.models import Order, OrderStatus, Refund, RefundStatus
from server.orders.services import approve_refund, finish_refund
from server.wechat.pay import PayV3, WeChatPayError
from wechat_sandbox import PayState, SandboxServer
from tests.orders.conftest import events_of, order_row
from tests.orders.test_refunds import _abnormal, _paid_plainly, _refund, _refund_row

CARD = {"target": "user_bank_card", "bank_type": "ICBC_DEBIT", "bank_account": "6222020200112233445", "real_name": "张三"}


def _mariadb_only(app: Flask) -> None:
    with app.app_context():
        if db.session().get_bind().dialect.name != "mysql":
            pytest.skip("SQLite's BEGIN IMMEDIATE serialises these transactions; the window exists on MariaDB")


def test_settling_offline_while_a_resend_is_at_wechat_is_refused(
    app: Flask, live_app: str, sandbox: SandboxServer, make_order: Any, sandbox_pay: PayState, staff_login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resend claims the refund before WeChat is asked, so a second clerk cannot pay the buyer offline as well."""
    _, refund_id, out_refund_no = _abnormal(app, sandbox, make_order, "v3")
    finance = staff_login("finance")
    settled: list[Any] = []
    original = PayV3.apply_abnormal_refund

    def while_wechat_answers(self: PayV3, *args: Any, **kwargs: Any) -> str:
        thread = threading.Thread(
            target=lambda: settled.append(app.test_client().post(f"/admin/api/v1/refunds/{refund_id}/settle-offline", headers=finance, json={"note": "已转账"}))
        )
        thread.start()
        thread.join()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PayV3, "apply_abnormal_refund", while_wechat_answers)
    resent = app.test_client().post(f"/admin/api/v1/refunds/{refund_id}/resend", headers=finance, json={"target": "merchant_bank_card"})
    assert resent.status_code == 200, resent.get_json()
    assert settled[0].status_code == 409 and settled[0].get_json()["data"] == {"status": "processing"}
    assert sandbox_pay.refunds[out_refund_no].status == "PROCESSING"
    assert _refund_row(app, refund_id).status == RefundStatus.processing


def test_a_refused_resend_leaves_the_refund_abnormal(
    app: Flask, live_app: str, sandbox: SandboxServer, make_order: Any, sandbox_pay: PayState, staff_login: Any
) -> None:
    _, refund_id, _ = _abnormal(app, sandbox, make_order, "v3")
    finance = staff_login("finance")
    refused = app.test_client().post(f"/admin/api/v1/refunds/{refund_id}/resend", headers=finance, json=CARD | {"bank_type": "HSBC_DEBIT"})
    assert refused.status_code == 502 and refused.get_json()["data"] == {"code": "PARAM_ERROR"}
    row = _refund_row(app, refund_id)
    assert row.status == RefundStatus.abnormal and "bank_type" in row.failure_reason
    # Still resolvable: settled offline now.
    settled = app.test_client().post(f"/admin/api/v1/refunds/{refund_id}/settle-offline", headers=finance, json={"note": "线下转账"})
    assert settled.status_code == 200


def test_a_resent_refund_that_goes_abnormal_again_is_abnormal_again(
    app: Flask, live_app: str, sandbox: SandboxServer, make_order: Any, sandbox_pay: PayState, staff_login: Any
) -> None:
    """The second ABNORMAL notification carries the same WeChat refund id as the first; it still ends the resend."""
    _, refund_id, out_refund_no = _abnormal(app, sandbox, make_order, "v3")
    finance = staff_login("finance")
    assert app.test_client().post(f"/admin/api/v1/refunds/{refund_id}/resend", headers=finance, json=CARD).status_code == 200
    ended = requests.post(sandbox.base_url + "sandbox/pay/refund-complete", json={"out_refund_no": out_refund_no, "status": "ABNORMAL"}, timeout=30).json()
    assert ended["notification"]["ok"], ended
    assert _refund_row(app, refund_id).status == RefundStatus.abnormal


def test_a_refusal_for_good_never_fails_a_refund_another_submit_got_accepted(
    app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two submits of one approved refund: A is accepted while B's refusal is on its way back."""
    ref = _paid_plainly(app, client, make_order, sandbox_pay)
    refund_id, _ = _refund(app, ref, 3_000)

    def refused(*args: Any, **kwargs: Any) -> str:
        with db.unit_of_work(app):  # meanwhile, the other submit was accepted and committed
            db.session().execute(update(Refund).where(Refund.id == refund_id).values(status=RefundStatus.processing, refund_id="503000000001"))
            db.commit()
        raise WeChatPayError("INVALID_REQUEST", "同一笔退款单正在处理中")

    monkeypatch.setattr(payments.WeChatPayGateway, "refund", refused)
    assert payments.submit_refund(app, refund_id) is False
    row = _refund_row(app, refund_id)
    assert (row.status, row.failure_reason) == (RefundStatus.processing, "")
    assert order_row(app, ref.id).status == OrderStatus.refunding


def test_a_fresh_approval_is_not_also_sent_by_the_retry_job(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, staff_login: Any) -> None:
    """A member's request approved days later is sent by the commit's submit; the retry job waits a minute first."""
    ref = _paid_plainly(app, client, make_order, sandbox_pay)
    asked = client.post(f"/api/v1/orders/{ref.id}/refunds", headers=ref.headers, json={"amount_fen": 500, "reason": "少件"}).get_json()["data"]
    created = _refund_row(app, asked["id"]).created_at
    with app.app_context():
        db.session().execute(update(Refund).where(Refund.id == asked["id"]).values(created_at=created - timedelta(days=3)))
        approve_refund(db.session(), asked["id"], actor="staff:1")
        db.commit()
    # The approval's own submit is what sends it (after its commit); the retry job has nothing due yet.
    assert payments.retry_refunds(app, utcnow()) == (0, 0)
    assert _refund_row(app, asked["id"]).attempts == 0


def test_recording_an_accepted_refund_does_not_deadlock_with_its_notification(
    app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both take the order's lock first; the notification waits for the acceptance instead of deadlocking it."""
    _mariadb_only(app)
    ref = _paid_plainly(app, client, make_order, sandbox_pay)
    refund_id, _ = _refund(app, ref, 3_000)
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    original = payments.add_event

    def notice_meanwhile(sess: Any, order: Any, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "refund_submitted":

            def notice() -> None:
                try:
                    with db.unit_of_work(app) as other:
                        finish_refund(other, other.get(Order, ref.id), other.get(Refund, refund_id), succeeded=True, actor="wechat", refund_id="503000000002")
                        db.commit()
                except BaseException as error:  # reported below, not lost in the thread
                    errors.append(error)

            threads.append(threading.Thread(target=notice))
            threads[0].start()
            time.sleep(1.0)  # the notification is now waiting for the order's lock
        return original(sess, order, event, *args, **kwargs)

    monkeypatch.setattr(payments, "add_event", notice_meanwhile)
    assert payments.submit_refund(app, refund_id)
    threads[0].join(30)
    assert not errors, errors
    assert _refund_row(app, refund_id).status == RefundStatus.succeeded
    events = [e.event for e in events_of(app, ref.id)]
    assert events.index("refund_submitted") < events.index("refund_succeeded")


def test_a_member_cannot_ask_for_a_refund_of_a_completed_order_while_staff_refund_it(
    app: Flask, client: Any, make_order: Any, sandbox_pay: PayState
) -> None:
    ref = _paid_plainly(app, client, make_order, sandbox_pay)
    with app.app_context():
        db.session().execute(update(Order).where(Order.id == ref.id).values(status=OrderStatus.completed))
        db.commit()
    _refund(app, ref, 1_000)
    assert order_row(app, ref.id).status == OrderStatus.refunding
    asked = client.post(f"/api/v1/orders/{ref.id}/refunds", headers=ref.headers, json={"amount_fen": 500, "reason": "还想退"})
    assert asked.status_code == 409
