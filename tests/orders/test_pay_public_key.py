"""A merchant given the WeChat Pay public key (微信支付公钥) instead of platform certificates, end to end:
prepay, the buyer paying, the notification and a refund, all signed with the public key."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import requests
from flask import Flask

from server import db, scheduler
from server import config as app_config
from server.orders import payments
from server.orders.models import Order, OrderStatus
from server.orders.services import request_refund
from wechat_sandbox import PayState, SandboxServer, pay_merchant_from_config
from wechat_sandbox.keys import SANDBOX_PUBLIC_KEY_ID
from tests.orders.conftest import order_row, prepay, snapshot


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    return app_factory(WECHAT_PAY_V3_VERIFY="public_key")


@pytest.fixture
def public_key_merchant(sandbox_pay: PayState) -> PayState:
    sandbox_pay.install(pay_merchant_from_config(vars(app_config.TestingConfig()) | {"WECHAT_PAY_V3_VERIFY": "public_key"}))
    return sandbox_pay


def test_a_public_key_merchant_is_paid_and_refunded_end_to_end(
    app: Flask, live_app: str, sandbox: SandboxServer, make_order: Any, public_key_merchant: PayState
) -> None:
    calls = sandbox.app.extensions["sandbox_state"].calls
    before = calls["/v3/certificates"]
    ref = make_order(price_fen=3_000)
    prepay(app, ref)
    assert public_key_merchant.signer == "public_key" and public_key_merchant.certificates() == []
    answer = requests.post(sandbox.base_url + "sandbox/pay/pay", json={"out_trade_no": ref.out_trade_no}, timeout=30).json()
    assert answer["notification"]["ok"], answer
    assert order_row(app, ref.id).status == OrderStatus.paid
    assert app.extensions["wechat_pay"].v3_client().keys.public_key_id == SANDBOX_PUBLIC_KEY_ID
    with app.app_context():
        sess = db.session()
        row = request_refund(sess, sess.get(Order, ref.id), 3_000, "退货", actor="staff:1", approved=True)  # type: ignore[arg-type]
        db.commit()
        refund_id, refund_no = row.id, row.out_refund_no
    assert payments.submit_refund(app, refund_id)
    done = requests.post(sandbox.base_url + "sandbox/pay/refund-complete", json={"out_refund_no": refund_no}, timeout=30).json()
    assert done["notification"]["ok"], done
    assert order_row(app, ref.id).status == OrderStatus.refunded
    assert scheduler.run_job(app, "pay-certificates", scheduler.pay_certificates_job) is None
    assert calls["/v3/certificates"] == before  # nothing to download in this mode


def test_a_public_key_merchant_refuses_what_a_platform_certificate_signed(app: Flask, client: Any, make_order: Any, sandbox_pay: PayState, sandbox: SandboxServer) -> None:
    ref = make_order()
    prepay(app, ref)  # the answer names the public key: signed with it, though certificates sign notifications
    before = snapshot(app, ref)
    calls = sandbox.app.extensions["sandbox_state"].calls["/v3/certificates"]
    headers, body = sandbox_pay.build_pay_notification(ref.out_trade_no)
    assert headers["Wechatpay-Serial"] == sandbox_pay.merchant.platform_serial
    response = client.post(payments.V3_NOTIFY_PATH, data=body, headers=headers)
    assert response.status_code == 400 and response.get_json()["code"] == "FAIL"
    assert snapshot(app, ref) == before
    assert sandbox.app.extensions["sandbox_state"].calls["/v3/certificates"] == calls
