"""WeChat Pay v2 end to end: prepay, payment notifications (MD5 and HMAC-SHA256), refusals, races, refunds."""
from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select, update

from server import db
from server.accounts.models import Member
from server.db import utcnow
from server.orders import payments
from server.orders.errors import IllegalTransitionError
from server.orders.models import Order, OrderStatus, PaymentNotice, Refund, RefundStatus
from server.orders.services import request_refund
from server.wechat.pay import WeChatPayGateway, parse_v2_xml
from wechat_sandbox import PayState, SandboxServer
from tests.orders.conftest import OrderRef, events_of, order_row, post, prepay, snapshot

API_KEY = "sandboxpayapikey00000000000000000"


def reply(response: Any) -> str:
    """The return_code of a v2 notify answer."""
    assert response.status_code == 200
    return parse_v2_xml(response.data if hasattr(response, "data") else response.content)["return_code"]


def notify(client: Any, body: bytes) -> str:
    return reply(client.post(payments.V2_PAY_NOTIFY_PATH, data=body, headers={"Content-Type": "text/xml"}))


def test_prepay_returns_request_payment_params_signed_with_the_key(app: Flask, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order()
    params = prepay(app, ref, "v2")
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["signType"] == "HMAC-SHA256"
    appid = app.config["WECHAT_APPID"]
    signed = f"appId={appid}&nonceStr={params['nonceStr']}&package={params['package']}&signType=HMAC-SHA256&timeStamp={params['timeStamp']}&key={API_KEY}"
    assert params["paySign"] == hmac.new(API_KEY.encode(), signed.encode(), hashlib.sha256).hexdigest().upper()

    order = order_row(app, ref.id)
    at_wechat = sandbox_pay.orders[ref.out_trade_no]
    assert (order.pay_api, order.prepay_id) == ("v2", at_wechat.prepay_id)
    assert params["package"] == f"prepay_id={at_wechat.prepay_id}"
    assert (at_wechat.total_fee, at_wechat.api, at_wechat.notify_url) == (ref.total_fee, "v2", app.config["PUBLIC_BASE_URL"] + "/wechat/pay/notify")
    with app.app_context():
        assert at_wechat.openid == db.session().get(Member, ref.member_id).openid  # type: ignore[union-attr]


def test_prepay_reuses_a_live_prepay_id_and_renews_an_old_one(app: Flask, make_order: Any, sandbox: SandboxServer) -> None:
    ref = make_order()
    calls = sandbox.app.extensions["sandbox_state"].calls
    before = calls["/pay/unifiedorder"]
    first, second = prepay(app, ref, "v2"), prepay(app, ref, "v2")
    assert first["package"] == second["package"] and calls["/pay/unifiedorder"] == before + 1
    assert len(events_of(app, ref.id, "prepay")) == 1
    # Two hours on, WeChat has forgotten it: a new prepay.
    with app.app_context():
        for event in events_of(app, ref.id, "prepay"):
            event.created_at = utcnow() - timedelta(hours=2)
            db.session().merge(event)
        db.commit()
    prepay(app, ref, "v2")
    assert calls["/pay/unifiedorder"] == before + 2
    # Switching API prepays again through the new one.
    prepay(app, ref, "v3")
    assert order_row(app, ref.id).pay_api == "v3"


def test_prepay_refuses_orders_that_cannot_be_paid(app: Flask, make_order: Any) -> None:
    expired = make_order()
    with app.app_context():
        db.session().execute(update(Order).where(Order.id == expired.id).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.commit()
    with pytest.raises(IllegalTransitionError):
        prepay(app, expired, "v2")
    closed = make_order()
    with app.app_context():
        db.session().execute(update(Order).where(Order.id == closed.id).values(status=OrderStatus.closed))
        db.commit()
    with pytest.raises(IllegalTransitionError):
        prepay(app, closed, "v2")


def test_pay_route_answers_409_for_an_expired_order(app: Flask, client: Any, make_order: Any) -> None:
    ref = make_order()
    with app.app_context():
        db.session().execute(update(Order).where(Order.id == ref.id).values(expires_at=utcnow() - timedelta(minutes=1)))
        db.commit()
    response = client.post(f"/api/v1/orders/{ref.id}/pay", headers=ref.headers)
    assert response.status_code == 409 and response.get_json()["code"] == 40962


@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
def test_a_notification_as_wechat_sends_it_pays_the_order(
    app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, monkeypatch: pytest.MonkeyPatch, sign_type: str
) -> None:
    # The merchant signs its calls with ``sign_type``; WeChat signs the notification the same
    # way and leaves <sign_type> out, HMAC-SHA256 included.
    configured = WeChatPayGateway.from_config({**app.config, "WECHAT_PAY_V2_SIGN_TYPE": sign_type})
    monkeypatch.setitem(app.extensions, "wechat_pay", configured)
    ref = make_order()
    prepay(app, ref, "v2")
    assert sandbox_pay.orders[ref.out_trade_no].sign_type == sign_type
    _, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert b"<sign_type>" not in body
    assert notify(client, body) == "SUCCESS"
    order = order_row(app, ref.id)
    transaction_id = sandbox_pay.orders[ref.out_trade_no].transaction_id
    assert (order.status, order.paid_fee, order.transaction_id, order.pay_api) == (OrderStatus.paid, ref.total_fee, transaction_id, "v2")
    paid = events_of(app, ref.id, "paid")
    assert len(paid) == 1 and paid[0].actor == "wechat"
    # WeChat resends until it hears SUCCESS: the repeat is acknowledged and changes nothing.
    before = snapshot(app, ref)
    assert notify(client, body) == "SUCCESS"
    assert snapshot(app, ref) == before
    configured.close()


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda s, n: s.build_pay_notification(n)[1].replace(b"<bank_type>", b"<bank_type>X"), id="wrong-signature"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"total_fee": "1", "cash_fee": "1"})[1], id="wrong-amount"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"out_trade_no": "R20000101000000999999999999"})[1], id="unknown-order"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"appid": "wx00000000000000ff"})[1], id="wrong-appid"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"mch_id": "1999999999"})[1], id="wrong-mch_id"),
        pytest.param(lambda s, n: b"<xml><return_code>SUCCESS</return_code></xml>", id="garbage"),
    ],
)
def test_refused_notifications_change_nothing(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, forge: Any) -> None:
    ref = make_order()
    prepay(app, ref, "v2")
    before = snapshot(app, ref)
    assert notify(client, forge(sandbox_pay, ref.out_trade_no)) == "FAIL"
    assert snapshot(app, ref) == before
    assert order_row(app, ref.id).status == OrderStatus.created


def test_eight_identical_notifications_at_once_pay_once(app: Flask, live_app: str, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order()
    prepay(app, ref, "v2")
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    barrier = threading.Barrier(8)
    answers: list[str] = []

    def send() -> None:
        barrier.wait()
        answers.append(reply(post(live_app, payments.V2_PAY_NOTIFY_PATH, headers, body)))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == ["SUCCESS"] * 8
    assert order_row(app, ref.id).status == OrderStatus.paid
    assert len(events_of(app, ref.id, "paid")) == 1
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(PaymentNotice).where(PaymentNotice.out_trade_no == ref.out_trade_no)) == 1


def _staff_refund(app: Flask, ref: OrderRef, amount: int) -> int:
    with app.app_context():
        sess = db.session()
        refund = request_refund(sess, sess.get(Order, ref.id), amount, "坏了", actor="staff:1", approved=True)  # type: ignore[arg-type]
        db.commit()
        return refund.id


def test_refund_goes_to_wechat_and_its_notification_decrypts_and_finishes_it(
    app: Flask, live_app: str, sandbox: SandboxServer, make_order: Any, sandbox_pay: PayState
) -> None:
    ref = make_order(price_fen=10_000)
    prepay(app, ref, "v2")
    paid = requests.post(sandbox.base_url + "sandbox/pay/pay", json={"out_trade_no": ref.out_trade_no}, timeout=30).json()
    assert paid["notification"]["ok"], paid
    refund_id = _staff_refund(app, ref, 4_000)
    assert payments.submit_refund(app, refund_id) is True
    with app.app_context():
        refund = db.session().get(Refund, refund_id)
        assert refund is not None and refund.status == RefundStatus.processing and refund.refund_id
        out_refund_no = refund.out_refund_no
    at_wechat = sandbox_pay.refunds[out_refund_no]
    assert (at_wechat.refund_fee, at_wechat.api, at_wechat.notify_url) == (4_000, "v2", live_app + "/wechat/pay/refund-notify")
    assert payments.submit_refund(app, refund_id) is False  # already with WeChat

    done = requests.post(sandbox.base_url + "sandbox/pay/refund-complete", json={"out_refund_no": out_refund_no}, timeout=30).json()
    assert done["notification"]["ok"], done
    order = order_row(app, ref.id)
    assert (order.status, order.refunded_fee) == (OrderStatus.paid, 4_000)  # partial: back to paid
    with app.app_context():
        assert db.session().get(Refund, refund_id).status == RefundStatus.succeeded  # type: ignore[union-attr]
    # The same notification again is acknowledged without refunding twice.
    _, body = sandbox_pay.build_refund_notification(out_refund_no)
    assert reply(post(live_app, payments.V2_REFUND_NOTIFY_PATH, {"Content-Type": "text/xml"}, body)) == "SUCCESS"
    assert order_row(app, ref.id).refunded_fee == 4_000


def test_refund_notification_for_another_merchant_is_refused(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order()
    prepay(app, ref, "v2")
    _, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert notify(client, body) == "SUCCESS"
    refund = sandbox_pay.open_refund(out_trade_no=ref.out_trade_no, out_refund_no="FX" + ref.out_trade_no[1:], total_fee=ref.total_fee, refund_fee=100, notify_url=None, api="v2")
    _, body = sandbox_pay.build_refund_notification(refund.out_refund_no)
    before = snapshot(app, ref)
    forged = body.replace(b"<mch_id>", b"<mch_id>9")
    assert reply(client.post(payments.V2_REFUND_NOTIFY_PATH, data=forged)) == "FAIL"
    assert reply(client.post(payments.V2_REFUND_NOTIFY_PATH, data=b"<xml>")) == "FAIL"
    assert snapshot(app, ref) == before


#: total_fee texts WeChat never sends (digits only): Python's int() reads several of them as 12 345.
UNTRUSTED_FEES = ["+12345", " 12345", "12345 ", "１２３４５", "١٢٣٤٥", "12_345", "12345.0", "1.2345e4", "-12345", "0", "", "9" * 40, "1" + "0" * 13]


@pytest.mark.parametrize("text", UNTRUSTED_FEES)
def test_a_notification_whose_amount_is_not_plain_digits_is_refused(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, text: str) -> None:
    ref = make_order(price_fen=12_345)
    prepay(app, ref, "v2")
    before = snapshot(app, ref)
    # cash_fee may be 0 (coupons paid it all) or absent; total_fee never is.
    for field in ("total_fee", "cash_fee") if text not in ("0", "") else ("total_fee",):
        _, body = sandbox_pay.build_pay_notification(ref.out_trade_no, overrides={field: text})
        assert notify(client, body) == "FAIL"
    assert snapshot(app, ref) == before


@pytest.mark.parametrize("text", ["+200", "２００", "200.0", "-200", "0", "9" * 40])
def test_a_refund_notification_whose_amount_is_not_plain_digits_is_refused(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, text: str) -> None:
    ref = make_order(price_fen=1_000)
    prepay(app, ref, "v2")
    assert notify(client, sandbox_pay.build_pay_notification(ref.out_trade_no)[1]) == "SUCCESS"
    with app.app_context():
        sess = db.session()
        row = request_refund(sess, sess.get(Order, ref.id), 200, "退货", actor="staff:1", approved=True)  # type: ignore[arg-type]
        db.commit()
        refund_id, refund_no = row.id, row.out_refund_no
    assert payments.submit_refund(app, refund_id)
    before = snapshot(app, ref)
    for field in ("refund_fee", "total_fee"):
        _, body = sandbox_pay.build_refund_notification(refund_no, overrides={field: text})
        response = client.post(payments.V2_REFUND_NOTIFY_PATH, data=body, headers={"Content-Type": "text/xml"})
        assert reply(response) == "FAIL"
    assert snapshot(app, ref) == before
