"""A payment notification WeChat sends again (it resends until answered): found by its unique key in one read.

The repeat gets the same answer as the first, changes nothing, and costs one SELECT and the commit;
identical notifications at the same moment still pay once (run on MariaDB for the race).
"""
from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from server import db
from server.orders import payments
from server.orders.models import OrderStatus, PaymentNotice
from wechat_sandbox import PayState
from tests.orders.conftest import events_of, order_row, post, prepay, snapshot
from tests.statements import is_mysql, round_trips, statements_sent

PATHS = {"v2": payments.V2_PAY_NOTIFY_PATH, "v3": payments.V3_NOTIFY_PATH}


def _answer(response: Any) -> tuple[int, bytes]:
    return response.status_code, response.data


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_a_replayed_notification_is_answered_as_the_first_after_one_read(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, api: str) -> None:
    ref = make_order()
    prepay(app, ref, api)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    first = client.post(PATHS[api], data=body, headers=headers)
    assert order_row(app, ref.id).status == OrderStatus.paid
    before = snapshot(app, ref)
    with round_trips(app) as sent:
        again = client.post(PATHS[api], data=body, headers=headers)
    assert _answer(again) == _answer(first)
    assert first.status_code == (204 if api == "v3" else 200)
    assert snapshot(app, ref) == before
    assert len(events_of(app, ref.id, "paid")) == 1
    # No insert tried and rolled back: one read of the order with its notice, then the commit.
    assert "INSERT" not in sent and "SAVEPOINT" not in sent, sent
    assert sent.count("SELECT") == 1, sent
    if is_mysql(app):
        assert sent == ["SELECT", "COMMIT"]


def test_the_first_notification_still_reads_its_order_once(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order()
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    with round_trips(app) as sent:
        assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    # The order and the "seen before?" answer come from one statement: the first SELECT is the only read before the insert.
    assert sent.index("INSERT") > sent.index("SELECT")
    assert sent[: sent.index("SAVEPOINT")].count("SELECT") == 1, sent


def test_the_first_notification_reads_the_order_row_once_and_pays_it(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    """The order is read with its notice and then only written: the move to paid does not read it back."""
    app.config.update(TASKS_EAGER=False, JOB_DRAINERS=0)  # the points job waits in the queue: only the notification is counted
    ref = make_order()
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    with statements_sent(app) as sent:
        assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    order_reads = [s for s in sent if s.startswith("SELECT") and " FROM orders " in s]
    assert len(order_reads) == 1, order_reads
    # And written once: the status, its time, the amount and the transaction in the one conditional UPDATE.
    order_writes = [s for s in sent if s.startswith("UPDATE orders ")]
    assert len(order_writes) == 1 and "paid_fee" in order_writes[0] and "transaction_id" in order_writes[0], order_writes
    # One savepoint, the notice's (a repeat is refused by its key); risk scoring that finds nothing writes in none.
    assert [s for s in sent if s.startswith("SAVEPOINT")] == ["SAVEPOINT sa_savepoint_1"], sent
    paid = order_row(app, ref.id)
    assert paid.status == OrderStatus.paid and paid.paid_at is not None and paid.paid_fee == paid.total_fee
    assert paid.transaction_id and paid.pay_api == "v3"
    assert len(events_of(app, ref.id, "paid")) == 1


def test_a_replay_with_another_amount_is_still_refused(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order()
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    before = snapshot(app, ref)
    # The same WeChat transaction, now claiming another amount: refused as before, nothing changes.
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no, overrides={"amount": {"total": 1, "payer_total": 1}})
    response = client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers)
    assert response.status_code == 422 and response.get_json()["code"] == "FAIL"
    assert snapshot(app, ref) == before


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_two_identical_notifications_at_once_pay_once(app: Flask, live_app: str, make_order: Any, sandbox_pay: PayState, api: str) -> None:
    ref = make_order()
    prepay(app, ref, api)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    for _ in range(3):  # the first pair races for the insert; later pairs race the early read
        barrier = threading.Barrier(2)
        answers: list[tuple[int, bytes]] = []

        def send() -> None:
            barrier.wait()
            response = post(live_app, PATHS[api], headers, body)
            answers.append((response.status_code, response.content))

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(answers) == 2 and answers[0] == answers[1], answers
        assert answers[0][0] == (204 if api == "v3" else 200) and (api == "v3" or b"SUCCESS" in answers[0][1])
    assert order_row(app, ref.id).status == OrderStatus.paid
    assert len(events_of(app, ref.id, "paid")) == 1
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(PaymentNotice).where(PaymentNotice.out_trade_no == ref.out_trade_no)) == 1
