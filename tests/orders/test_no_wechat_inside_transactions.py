"""No transaction stays open while WeChat answers: the sandbox holds a call, and another connection writes meanwhile.

On SQLite every transaction takes the database's one write lock (BEGIN IMMEDIATE), so a request
that called WeChat with its transaction open would stop every other writer; on MariaDB it would
hold the row locks it had taken. Each test holds one WeChat route in the sandbox, starts the
operation in a thread, and while the call waits writes the same rows from another connection
with a one-second lock timeout.
"""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any, Callable

import pytest
import requests
from flask import Flask
from sqlalchemy import update

from server import db, scheduler
from server.orders import payments, services
from server.wechat import wechat_pay
from server.accounts.models import Member
from server.db import utcnow
from server.orders.models import Order, OrderStatus
from server.posters.models import PosterImage
from wechat_sandbox import PayState, SandboxServer
from tests.orders.conftest import OrderRef, order_row, prepay

pytestmark = pytest.mark.slow

#: How long the probe's write may wait for a lock before it counts as blocked.
PROBE_WAIT_SECONDS = 1


class Stall:
    """Hold the next call to one sandbox route until released."""

    def __init__(self, sandbox: SandboxServer, path: str) -> None:
        self.base, self.path = sandbox.base_url.rstrip("/"), path
        answer = requests.post(f"{self.base}/sandbox/stall", json={"path": path, "seconds": 30}, timeout=5)
        assert answer.status_code == 200, answer.text

    def wait_until_held(self) -> None:
        for _ in range(500):
            if requests.get(f"{self.base}/sandbox/stall", timeout=5).json().get(self.path, {}).get("waiting") == 1:
                return
            time.sleep(0.02)
        raise AssertionError(f"nothing called {self.path}")

    def release(self) -> None:
        requests.delete(f"{self.base}/sandbox/stall", params={"path": self.path}, timeout=5)


def _write_meanwhile(app: Flask, statement: Any) -> float:
    """Run ``statement`` in a transaction of its own on another connection; the seconds it took.

    Fails when the write had to wait longer than PROBE_WAIT_SECONDS for a lock.
    """
    with app.extensions["db_engine"].connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        # Set on the driver's connection: through SQLAlchemy, even a PRAGMA would begin a transaction.
        _driver_sql(conn, f"PRAGMA busy_timeout={PROBE_WAIT_SECONDS * 1000}" if sqlite else f"SET SESSION innodb_lock_wait_timeout={PROBE_WAIT_SECONDS}")
        started = time.monotonic()
        try:
            with conn.begin():
                conn.execute(statement)
        finally:
            _driver_sql(conn, "PRAGMA busy_timeout=30000" if sqlite else "SET SESSION innodb_lock_wait_timeout=DEFAULT")
        return time.monotonic() - started


def _driver_sql(conn: Any, sql: str) -> None:
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def _in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as error:  # reported by the test, not lost in the thread
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _while_held(app: Flask, sandbox: SandboxServer, path: str, operation: Callable[[], Any], probe: Callable[[], float]) -> Any:
    """Start ``operation`` with ``path`` held at the sandbox, run ``probe`` meanwhile, then let WeChat answer."""
    stall = Stall(sandbox, path)
    thread, outcome = _in_thread(operation)
    try:
        stall.wait_until_held()
        # No connection is out of the pool: nothing, on any database, is held while WeChat answers.
        in_use = app.extensions["db_engine"].pool.checkedout()
        took = probe()
    finally:
        stall.release()
        thread.join(30)
    assert in_use == 0, f"{in_use} database connection(s) checked out while WeChat answered"
    assert took < PROBE_WAIT_SECONDS, f"the write waited {took:.2f}s: a transaction was open while WeChat answered"
    assert len(outcome) == 1
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def test_prepay_holds_nothing_while_wechat_answers(app: Flask, sandbox: SandboxServer, make_order: Callable[..., OrderRef]) -> None:
    ref = make_order()
    client = app.test_client()
    response = _while_held(
        app,
        sandbox,
        "/v3/pay/transactions/jsapi",
        lambda: client.post(f"/api/v1/orders/{ref.id}/pay", headers=ref.headers),
        lambda: _write_meanwhile(app, update(Order).where(Order.id == ref.id).values(remark="写于微信应答之前")),
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["package"].startswith("prepay_id=")
    order = order_row(app, ref.id)
    assert (order.status, order.remark, order.pay_api) == (OrderStatus.created, "写于微信应答之前", "v3")


def test_reconciliation_holds_nothing_while_wechat_answers(app: Flask, sandbox: SandboxServer, make_order: Callable[..., OrderRef], sandbox_pay: PayState) -> None:
    ref = make_order()
    prepay(app, ref)
    now = utcnow() + timedelta(hours=1)  # the order's time to pay has run out
    result = _while_held(
        app,
        sandbox,
        f"/v3/pay/transactions/out-trade-no/{ref.out_trade_no}",
        lambda: scheduler.orders_tick(app, now),
        lambda: _write_meanwhile(app, update(Order).where(Order.id == ref.id).values(remark="对账期间写入")),
    )
    assert result is not None and result["closed"] == 1
    assert order_row(app, ref.id).status == OrderStatus.closed
    assert sandbox_pay.orders[ref.out_trade_no].state == "CLOSED"


def test_a_poster_render_holds_nothing_while_wechat_draws_the_code(app: Flask, sandbox: SandboxServer, wx_login: Callable[..., dict[str, Any]]) -> None:
    alice = wx_login("alice")
    client = app.test_client()
    response = _while_held(
        app,
        sandbox,
        "/wxa/getwxacodeunlimit",
        lambda: client.post("/api/v1/referral/posters", headers=alice["headers"], json={}),
        lambda: _write_meanwhile(app, update(Member).where(Member.id == alice["user"]["id"]).values(nickname="写于绘制期间")),
    )
    assert response.status_code == 200, response.get_json()
    with app.app_context():
        assert db.session().query(PosterImage).count() == 1


def test_an_official_account_poster_holds_nothing_while_wechat_creates_the_qr_code(app: Flask, sandbox: SandboxServer, wx_login: Callable[..., dict[str, Any]]) -> None:
    alice = wx_login("alice")
    client = app.test_client()
    response = _while_held(
        app,
        sandbox,
        "/cgi-bin/qrcode/create",
        lambda: client.post("/api/v1/referral/posters", headers=alice["headers"], json={"channel": "official_account_qr"}),
        lambda: _write_meanwhile(app, update(Member).where(Member.id == alice["user"]["id"]).values(nickname="写于建码期间")),
    )
    assert response.status_code == 200, response.get_json()
    with app.app_context():
        assert db.session().query(PosterImage).count() == 1


def test_binding_a_phone_holds_nothing_while_wechat_answers(app: Flask, sandbox: SandboxServer, wx_login: Callable[..., dict[str, Any]]) -> None:
    alice = wx_login("alice")
    client = app.test_client()
    response = _while_held(
        app,
        sandbox,
        "/wxa/business/getuserphonenumber",
        lambda: client.post("/api/v1/me/phone", headers=alice["headers"], json={"code": "sandbox-phone:13812345678"}),
        lambda: _write_meanwhile(app, update(Member).where(Member.id == alice["user"]["id"]).values(nickname="写于取号期间")),
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["phone"] == "138****5678"


def test_sending_a_refund_holds_nothing_while_wechat_answers(
    app: Flask, sandbox: SandboxServer, make_order: Callable[..., OrderRef], sandbox_pay: PayState
) -> None:
    ref = make_order()
    prepay(app, ref)
    sandbox_pay.pay(ref.out_trade_no)
    with app.app_context():
        sess = db.session()
        services.apply_payment(sess, out_trade_no=ref.out_trade_no, transaction_id=sandbox_pay.orders[ref.out_trade_no].transaction_id or "", amount_fen=ref.total_fee, api="v3")
        refund = services.request_refund(sess, sess.get(Order, ref.id), 1_000, "退货", actor="staff:1", approved=True)  # type: ignore[arg-type]
        db.commit()
        refund_id = refund.id
    accepted = _while_held(
        app,
        sandbox,
        "/v3/refund/domestic/refunds",
        lambda: payments.submit_refund(app, refund_id),
        lambda: _write_meanwhile(app, update(Order).where(Order.id == ref.id).values(remark="退款期间写入")),
    )
    assert accepted is True
    found = _while_held(
        app,
        sandbox,
        f"/v3/pay/transactions/out-trade-no/{ref.out_trade_no}",
        lambda: _disagreements(app),
        lambda: _write_meanwhile(app, update(Order).where(Order.id == ref.id).values(remark="对账期间写入")),
    )
    assert found == []


def _disagreements(app: Flask) -> list[Any]:
    with app.app_context():
        return payments.check_disagreements(db.session(), wechat_pay(), utcnow() - timedelta(hours=1))
