"""WeChat Pay v3 end to end: prepay, the buyer paying through the sandbox, notifications, forgeries, races, refunds."""
from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from flask import Flask

from server import db, scheduler
from server.orders import payments
from server.orders.models import Order, OrderStatus, Refund, RefundStatus
from server.orders.services import request_refund
from server.wechat import wechat_pay
from server.wechat.pay import InvalidNotificationError, PayNotice
from wechat_sandbox import PayMerchant, PayState, SandboxServer
from tests.orders.conftest import events_of, order_row, post, prepay, snapshot


def test_prepay_pay_sign_verifies_with_the_merchant_public_key(app: Flask, client: Any, make_order: Any, pay_merchant: PayMerchant, sandbox_pay: PayState) -> None:
    ref = make_order()
    response = client.post(f"/api/v1/orders/{ref.id}/pay", headers=ref.headers)
    assert response.status_code == 200, response.get_json()
    params = response.get_json()["data"]
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"} and params["signType"] == "RSA"
    message = f"{app.config['WECHAT_APPID']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
    pay_merchant.merchant_public_key.verify(base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256())
    at_wechat = sandbox_pay.orders[ref.out_trade_no]
    assert params["package"] == f"prepay_id={at_wechat.prepay_id}"
    assert (at_wechat.api, at_wechat.total_fee, at_wechat.notify_url) == ("v3", ref.total_fee, app.config["PUBLIC_BASE_URL"] + "/wechat/pay/v3/notify")
    assert at_wechat.time_expire is not None and at_wechat.time_expire >= time.time() + 4 * 60  # WeChat stops taking money too
    order = order_row(app, ref.id)
    assert (order.pay_api, order.prepay_id) == ("v3", at_wechat.prepay_id)
    assert [e.event for e in events_of(app, ref.id)] == ["created", "prepay"]


def test_the_sandbox_plays_the_buyer_end_to_end(app: Flask, client: Any, live_app: str, sandbox: SandboxServer, make_order: Any) -> None:
    ref = make_order()
    assert client.post(f"/api/v1/orders/{ref.id}/pay", headers=ref.headers).status_code == 200
    answer = requests.post(sandbox.base_url + "sandbox/pay/pay", json={"out_trade_no": ref.out_trade_no}, timeout=30).json()
    assert answer["state"] == "SUCCESS"
    assert answer["notification"]["ok"] and answer["notification"]["status"] == 204, answer
    order = order_row(app, ref.id)
    assert (order.status, order.paid_fee, order.transaction_id, order.pay_api) == (OrderStatus.paid, ref.total_fee, answer["transaction_id"], "v3")
    detail = client.get(f"/api/v1/orders/{ref.id}", headers=ref.headers).get_json()["data"]
    assert detail["status"] == "paid"
    # Paying again is refused at WeChat and here alike.
    assert client.post(f"/api/v1/orders/{ref.id}/pay", headers=ref.headers).status_code == 409


def test_a_notification_pays_once_and_repeats_are_acknowledged(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order()
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    first = client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers)
    assert first.status_code == 204 and first.data == b""
    before = snapshot(app, ref)
    again = client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers)
    assert again.status_code == 204
    assert snapshot(app, ref) == before
    assert len(events_of(app, ref.id, "paid")) == 1


def _replace_header(built: tuple[dict[str, str], bytes], name: str, value: str) -> tuple[dict[str, str], bytes]:
    return built[0] | {name: value}, built[1]


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda s, n: _replace_header(s.build_pay_notification(n), "Wechatpay-Signature", base64.b64encode(b"\0" * 256).decode()), id="tampered-signature"),
        pytest.param(lambda s, n: s.build_pay_notification(n, serial="5A0D5A4D5B0C0001000000000000000000000C03"), id="wrong-serial"),
        pytest.param(lambda s, n: s.build_pay_notification(n, timestamp=int(time.time()) - 600), id="ten-minutes-old"),
        pytest.param(lambda s, n: s.build_pay_notification(n, tamper_ciphertext=True), id="tampered-ciphertext"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"amount": {"total": 1, "payer_total": 1}}), id="wrong-amount"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"out_trade_no": "R20000101000000999999999999"}), id="unknown-order"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"mchid": "1999999999"}), id="wrong-mchid"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"appid": "wx00000000000000ff"}), id="wrong-appid"),
        pytest.param(lambda s, n: ({"Content-Type": "application/json"}, b"{}"), id="unsigned"),
    ],
)
def test_refused_notifications_change_nothing(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, forge: Any, request: Any) -> None:
    ref = make_order()
    prepay(app, ref)
    before = snapshot(app, ref)
    headers, body = forge(sandbox_pay, ref.out_trade_no)
    response = client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers)
    # Unverifiable: 400; authentic but not for our books (amount, order): 422.
    assert response.status_code == (422 if request.node.callspec.id in ("wrong-amount", "unknown-order") else 400)
    assert response.get_json()["code"] == "FAIL" and response.get_json()["message"]
    assert snapshot(app, ref) == before


def test_eight_identical_notifications_at_once_pay_once(app: Flask, live_app: str, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order()
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def send() -> None:
        barrier.wait()
        statuses.append(post(live_app, payments.V3_NOTIFY_PATH, headers, body).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [204] * 8
    assert order_row(app, ref.id).status == OrderStatus.paid
    assert len(events_of(app, ref.id, "paid")) == 1


def test_refund_through_v3_and_its_endings(app: Flask, live_app: str, sandbox: SandboxServer, make_order: Any, sandbox_pay: PayState) -> None:
    ref = make_order(price_fen=5_000)
    prepay(app, ref)
    assert requests.post(sandbox.base_url + "sandbox/pay/pay", json={"out_trade_no": ref.out_trade_no}, timeout=30).json()["notification"]["ok"]

    def refund(amount: int) -> tuple[int, str]:
        with app.app_context():
            sess = db.session()
            row = request_refund(sess, sess.get(Order, ref.id), amount, "退货", actor="staff:1", approved=True)  # type: ignore[arg-type]
            db.commit()
            return row.id, row.out_refund_no

    # WeChat closes the first refund (退款关闭, no money moved): it ends failed and the order returns to paid.
    failed_id, failed_no = refund(2_000)
    assert payments.submit_refund(app, failed_id)
    assert order_row(app, ref.id).status == OrderStatus.refunding
    ended = requests.post(sandbox.base_url + "sandbox/pay/refund-complete", json={"out_refund_no": failed_no, "status": "CLOSED"}, timeout=30).json()
    assert ended["notification"]["ok"], ended
    assert (order_row(app, ref.id).status, order_row(app, ref.id).refunded_fee) == (OrderStatus.paid, 0)
    # The whole amount, then: refunded.
    whole_id, whole_no = refund(5_000)
    assert payments.submit_refund(app, whole_id)
    assert sandbox_pay.refunds[whole_no].notify_url == live_app + "/wechat/pay/v3/notify"
    done = requests.post(sandbox.base_url + "sandbox/pay/refund-complete", json={"out_refund_no": whole_no}, timeout=30).json()
    assert done["notification"]["ok"], done
    order = order_row(app, ref.id)
    assert (order.status, order.refunded_fee) == (OrderStatus.refunded, 5_000)
    with app.app_context():
        statuses = {r.out_refund_no: r.status for r in db.session().query(Refund).filter(Refund.order_id == ref.id)}
    assert statuses == {failed_no: RefundStatus.failed, whole_no: RefundStatus.succeeded}


def test_unknown_event_types_are_acknowledged(app: Flask, client: Any, sandbox_pay: PayState, pay_merchant: PayMerchant) -> None:
    headers, body = sandbox_pay.build_v3_notification(
        "TRANSACTION.CLOSED", "关闭", "transaction", {"mchid": pay_merchant.mch_id, "appid": app.config["WECHAT_APPID"]}
    )
    assert json.loads(body)["event_type"] == "TRANSACTION.CLOSED"
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204


#: Amounts WeChat never sends, as JSON text; the order is for 12 345 fen.
UNTRUSTED_AMOUNTS = ["Infinity", "-Infinity", "NaN", "1e400", "-1e400", "12345.0", "1.2345e4", "-12345", "0", '"12345"', "true", "null",
                     "1" + "0" * 13, "9" * 400, "[12345]", '{"v": 12345}']


@pytest.mark.parametrize("literal", UNTRUSTED_AMOUNTS)
def test_a_payment_notification_with_an_amount_that_is_not_an_integer_is_refused(
    app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, literal: str
) -> None:
    ref = make_order(price_fen=12_345)
    prepay(app, ref)
    before = snapshot(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no, overrides={"amount": {"total": "@amount@"}}, literals={"@amount@": literal})
    response = client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers)
    assert response.status_code == 400 and response.get_json()["code"] == "FAIL"
    assert snapshot(app, ref) == before


@pytest.mark.parametrize("literal", ["Infinity", "NaN", "1e400", "200.0", "-200", "0", '"200"', "9" * 400])
def test_a_refund_notification_with_an_amount_that_is_not_an_integer_is_refused(
    app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, literal: str
) -> None:
    ref = make_order(price_fen=1000)
    prepay(app, ref)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    with app.app_context():
        sess = db.session()
        row = request_refund(sess, sess.get(Order, ref.id), 200, "退货", actor="staff:1", approved=True)  # type: ignore[arg-type]
        db.commit()
        refund_id, refund_no = row.id, row.out_refund_no
    assert payments.submit_refund(app, refund_id)
    before = snapshot(app, ref)
    for field in ("refund", "total"):
        headers, body = sandbox_pay.build_refund_notification(refund_no, overrides={"amount": {field: "@amount@"}}, literals={"@amount@": literal})
        response = client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers)
        assert response.status_code == 400 and response.get_json()["code"] == "FAIL"
    assert snapshot(app, ref) == before


def test_a_notification_after_a_certificate_rotation_is_verified_once_fetched_outside_any_transaction(
    app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = make_order()
    prepay(app, ref)
    fresh = sandbox_pay.rotate_certificates()
    v3 = app.extensions["wechat_pay"].v3_client()
    download = v3.download_certificates
    seen: list[bool] = []

    def watched() -> Any:
        seen.append(db.transaction_open())
        return download()

    monkeypatch.setattr(v3, "download_certificates", watched)
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert headers["Wechatpay-Serial"] == fresh.serial
    assert client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers).status_code == 204
    assert order_row(app, ref.id).status == OrderStatus.paid
    assert seen == [False]
    # The old certificate still verifies while it is valid; the replay changes nothing.
    before = snapshot(app, ref)
    old = sandbox_pay.build_pay_notification(ref.out_trade_no, sign_with=sandbox_pay.merchant.platform_serial)
    assert client.post(payments.V3_NOTIFY_PATH, data=old[1], headers=old[0]).status_code == 204
    assert snapshot(app, ref) == before and seen == [False]


def test_an_unknown_serial_is_not_fetched_inside_an_open_transaction(app: Flask, make_order: Any, sandbox_pay: PayState, sandbox: SandboxServer) -> None:
    ref = make_order()
    prepay(app, ref)
    sandbox_pay.rotate_certificates()
    calls = sandbox.app.extensions["sandbox_state"].calls
    before = calls["/v3/certificates"]
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    with app.app_context():
        sess = db.session()
        sess.get(Order, ref.id)
        assert db.transaction_open()
        with pytest.raises(InvalidNotificationError, match="names no WeChat Pay key"):
            wechat_pay().v3_client().parse_notification(headers, body)
        sess.rollback()
        assert not db.transaction_open()
        assert isinstance(wechat_pay().v3_client().parse_notification(headers, body), PayNotice)
    assert calls["/v3/certificates"] == before + 1


def test_pay_keys_lists_the_keys_and_refreshes_on_request(app: Flask, sandbox_pay: PayState) -> None:
    runner = app.test_cli_runner()
    shown = runner.invoke(args=["pay-keys"])
    assert shown.exit_code == 0, shown.output
    assert "mode: certificates" in shown.output
    assert f"platform certificate {sandbox_pay.merchant.platform_serial}: (not stated) to (not stated), in force" in shown.output
    fresh = sandbox_pay.rotate_certificates(old_expires_in=86400)
    refreshed = runner.invoke(args=["pay-keys", "--refresh"])
    assert refreshed.exit_code == 0, refreshed.output
    lines = [line for line in refreshed.output.splitlines() if line.startswith("platform certificate")]
    assert [line.split()[2].rstrip(":") for line in lines] == [sandbox_pay.merchant.platform_serial, fresh.serial]
    assert all(line.endswith("in force") and "(not stated)" not in line for line in lines)
    assert "BEGIN" not in refreshed.output


def test_the_scheduler_downloads_the_certificates_twice_a_day(app: Flask, sandbox_pay: PayState, sandbox: SandboxServer) -> None:
    fresh = sandbox_pay.rotate_certificates()
    calls = sandbox.app.extensions["sandbox_state"].calls
    before = calls["/v3/certificates"]
    assert scheduler.run_job(app, "pay-certificates", scheduler.pay_certificates_job) == {"refreshed": 1, "certificates": 2}
    assert calls["/v3/certificates"] == before + 1
    assert fresh.serial in {c.serial for c in app.extensions["wechat_pay"].v3_client().keys.certificates()}
