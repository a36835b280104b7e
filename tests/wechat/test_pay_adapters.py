"""The WeChat Pay adapters against WeChat's wire formats: signatures, encryption, errors, the sandbox's pay APIs."""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from cryptography import x509
from prometheus_client import REGISTRY
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID
from wechatpy.crypto import WeChatRefundCrypto
from wechatpy.pay.utils import dict_to_xml

from server.wechat.client import WeChatUnavailableError
from server.wechat.pay import (
    SAFE_MIN_PAY_WINDOW,
    V2_BODY_MAX_BYTES,
    V2_REFUND_DESC_MAX_BYTES,
    V3_DESCRIPTION_MAX_CHARS,
    V3_REASON_MAX_BYTES,
    WECHAT_MIN_PAY_WINDOW,
    PayWindowTooShortError,
    clip_utf8,
    IgnoredNotice,
    InvalidNotificationError,
    PayNotConfiguredError,
    PayNotice,
    PayV2,
    PayV3,
    RefundNotice,
    WeChatPayError,
    WeChatPayGateway,
    decrypt_req_info,
    parse_v2_xml,
    load_private_key,
    load_public_key,
    parse_authorization,
    v2_reply,
    v2_sign,
)
from wechat_sandbox import PayFault, PayState, SandboxServer, create_sandbox_app, pay_merchant_from_config, serve_in_thread
from wechat_sandbox.keys import SANDBOX_MCH_SERIAL, SANDBOX_PLATFORM_SERIAL, ensure_sandbox_keys

APPID, SECRET = "wxpaytest00000001", "pay-test-secret"
CHINA = datetime.timezone(datetime.timedelta(hours=8))
MCH_ID, API_KEY, API_V3_KEY = "1230000109", "paytestapikey0000000000000000000", "paytestapiv3key00000000000000000"
NOTIFY = "https://merchant.example.com/wechat/pay/notify"


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pay") / "keys"


@pytest.fixture(scope="module")
def config(key_dir: Path) -> dict[str, Any]:
    return {
        "WECHAT_SANDBOX": True,
        "WECHAT_APPID": APPID,
        "WECHAT_PAY_MCH_ID": MCH_ID,
        "WECHAT_PAY_API_KEY": API_KEY,
        "WECHAT_PAY_API_V3_KEY": API_V3_KEY,
        "WECHAT_PAY_SANDBOX_KEY_DIR": str(key_dir),
        "WECHAT_PAY_V2_SIGN_TYPE": "HMAC-SHA256",
    }


@pytest.fixture(scope="module")
def wx(config: dict[str, Any]) -> Iterator[SandboxServer]:
    server = serve_in_thread(create_sandbox_app({APPID: SECRET}, seed="pay-tests", pay=pay_merchant_from_config(config)))
    yield server
    server.shutdown()


@pytest.fixture
def state(wx: SandboxServer) -> PayState:
    return wx.app.extensions["sandbox_pay"]


@pytest.fixture
def buyer(wx: SandboxServer) -> str:
    """An openid the sandbox issued for APPID, as a prepay needs (another one is OPENID_MISMATCH)."""
    return wx.app.extensions["sandbox_state"].openid(APPID, "buyer")


@pytest.fixture
def gateway(config: dict[str, Any], wx: SandboxServer) -> Iterator[WeChatPayGateway]:
    pay = WeChatPayGateway.from_config(config | {"WECHAT_PAY_API_BASE": wx.base_url})
    yield pay
    pay.close()


@pytest.fixture
def v2(gateway: WeChatPayGateway) -> PayV2:
    return gateway.v2_client()


@pytest.fixture
def v3(gateway: WeChatPayGateway) -> PayV3:
    return gateway.v3_client()


def out_trade_no() -> str:
    return "T" + os.urandom(10).hex()


# -- v2 signatures, replies, req_info -------------------------------------------------------------------


def test_v2_sign_matches_wechats_documented_example() -> None:
    # The example of WeChat Pay's 签名算法 page, both sign types.
    params = {"appid": "wxd930ea5d5a258f4f", "mch_id": "10000100", "device_info": "1000", "body": "test", "nonce_str": "ibuaiVcKdpRxkhJA"}
    key = "192006250b4c09247ec02edce69f6a2d"
    assert v2_sign(params, key, "MD5") == "9A0A8659F005D6984697E2CA0A9CF3B7"
    assert v2_sign(params, key, "HMAC-SHA256") == "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    # Empty fields and the sign itself take no part.
    assert v2_sign(params | {"attach": "", "sign": "X"}, key, "MD5") == "9A0A8659F005D6984697E2CA0A9CF3B7"


def test_v2_reply_is_exactly_what_wechat_expects() -> None:
    assert v2_reply(True) == "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
    assert v2_reply(False, "bad]]>sign") == (
        "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[bad]]]]><![CDATA[>sign]]></return_msg></xml>"
    )


def test_req_info_decrypts_with_the_md5_of_the_api_key_and_nothing_else() -> None:
    plaintext = "<root><out_refund_no><![CDATA[F1]]></out_refund_no></root>".encode()
    padder = sym_padding.PKCS7(128).padder()
    key = hashlib.md5(API_KEY.encode()).hexdigest().encode()
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    req_info = base64.b64encode(encryptor.update(padder.update(plaintext) + padder.finalize()) + encryptor.finalize()).decode()
    assert decrypt_req_info(req_info, API_KEY) == plaintext
    for bad in (req_info[:-4], "not base64!", base64.b64encode(b"x" * 15).decode()):
        with pytest.raises(InvalidNotificationError):
            decrypt_req_info(bad, API_KEY)
    with pytest.raises(InvalidNotificationError):
        decrypt_req_info(req_info, "another-key-entirely-00000000000")


# -- v2 notifications -------------------------------------------------------------------------


def paid_order(state: PayState, api: str, total_fee: int = 990, sign_type: str = "HMAC-SHA256") -> str:
    """An order paid at the sandbox; v2 ones prepaid with ``sign_type`` (the ``v2`` fixture's is HMAC-SHA256)."""
    number = out_trade_no()
    state.open_order(out_trade_no=number, appid=APPID, openid="o-buyer", total_fee=total_fee, description="tea", notify_url=NOTIFY, api=api, sign_type=sign_type)
    state.pay(number)
    return number


@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
def test_v2_pay_notification_has_no_sign_type_and_verifies_with_the_configured_one(state: PayState, sign_type: str) -> None:
    # WeChat signs a notification like the prepay but never says how: no <sign_type> element.
    merchant = PayV2(appid=APPID, mch_id=MCH_ID, api_key=API_KEY, sign_type=sign_type)
    number = paid_order(state, "v2", sign_type=sign_type)
    _, body = state.build_pay_notification(number)
    assert b"<sign_type>" not in body
    assert len(parse_v2_xml(body)["sign"]) == (64 if sign_type == "HMAC-SHA256" else 32)
    notice = merchant.parse_pay_notify(body)
    assert notice == PayNotice("v2", number, state.orders[number].transaction_id or "", 990, True, "o-buyer")


def test_v2_md5_is_taken_only_when_configured_or_named(state: PayState, v2: PayV2) -> None:
    assert v2.sign_type == "HMAC-SHA256"
    md5_signed = paid_order(state, "v2", sign_type="MD5")
    _, body = state.build_pay_notification(md5_signed)
    with pytest.raises(InvalidNotificationError):
        v2.parse_pay_notify(body)  # no downgrade to MD5 for an HMAC-SHA256 merchant
    _, named = state.build_pay_notification(md5_signed, overrides={"sign_type": "MD5"})
    assert v2.parse_pay_notify(named).out_trade_no == md5_signed
    md5_merchant = PayV2(appid=APPID, mch_id=MCH_ID, api_key=API_KEY, sign_type="MD5")
    _, hmac_named = state.build_pay_notification(paid_order(state, "v2"), overrides={"sign_type": "HMAC-SHA256"})
    assert md5_merchant.parse_pay_notify(hmac_named).succeeded
    _, hmac_unnamed = state.build_pay_notification(paid_order(state, "v2"))
    with pytest.raises(InvalidNotificationError):
        md5_merchant.parse_pay_notify(hmac_unnamed)


@pytest.mark.parametrize(
    ("overrides", "tamper"),
    [
        ({}, lambda body: body.replace(b"<total_fee>990</total_fee>", b"<total_fee>1</total_fee>")),  # changed after signing
        ({"sign": "0" * 32}, None),
        ({"appid": "wx0000000000000bad"}, None),
        ({"mch_id": "1999999999"}, None),
        ({"return_code": "FAIL"}, None),
        ({"sign_type": "RSA"}, None),
        ({"transaction_id": None}, None),
    ],
)
def test_v2_pay_notifications_that_are_not_ours_are_refused(state: PayState, v2: PayV2, overrides: dict[str, Any], tamper: Any) -> None:
    number = paid_order(state, "v2")
    _, body = state.build_pay_notification(number, overrides=overrides)
    with pytest.raises(InvalidNotificationError):
        v2.parse_pay_notify(tamper(body) if tamper else body)


def test_v2_failed_payment_notification_is_verified_but_not_a_success(state: PayState, v2: PayV2) -> None:
    number = paid_order(state, "v2")
    _, body = state.build_pay_notification(number, overrides={"result_code": "FAIL", "err_code": "NOTENOUGH"})
    assert v2.parse_pay_notify(body).succeeded is False
    for garbage in (b"", b"not xml", b"<xml><a>", b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'x'>]><xml><a>&e;</a></xml>"):
        with pytest.raises(InvalidNotificationError):
            v2.parse_pay_notify(garbage)


def test_v2_refund_notification_decrypts_req_info(state: PayState, v2: PayV2) -> None:
    number = paid_order(state, "v2", total_fee=1000)
    refund = state.open_refund(out_trade_no=number, out_refund_no="F" + number, total_fee=1000, refund_fee=400, notify_url=NOTIFY, api="v2")
    _, body = state.build_refund_notification(refund.out_refund_no)
    notice = v2.parse_refund_notify(body)
    assert notice == RefundNotice("v2", number, refund.out_refund_no, refund.refund_id, 400, 1000, "SUCCESS")
    assert notice.succeeded
    # wechatpy's own decryption reads the sandbox's notification the same way.
    assert WeChatRefundCrypto(API_KEY).decrypt_message(body, APPID, MCH_ID)["refund_id"] == refund.refund_id
    assert b"out_refund_no" not in body  # only inside req_info
    with pytest.raises(InvalidNotificationError):
        v2.parse_refund_notify(body.replace(MCH_ID.encode(), b"1999999999"))
    other = PayV2(appid=APPID, mch_id=MCH_ID, api_key="x" * 32)
    with pytest.raises(InvalidNotificationError):
        other.parse_refund_notify(body)


def test_v2_refund_that_failed_at_the_bank(state: PayState, v2: PayV2) -> None:
    number = paid_order(state, "v2", total_fee=1000)
    refund = state.open_refund(out_trade_no=number, out_refund_no="F" + number, total_fee=1000, refund_fee=1000, notify_url=NOTIFY, api="v2")
    _, body = state.build_refund_notification(refund.out_refund_no, status="ABNORMAL")
    notice = v2.parse_refund_notify(body)
    assert (notice.status, notice.succeeded) == ("CHANGE", False)


# -- v2 calls against the sandbox ---------------------------------------------------------------


@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
def test_v2_order_lifecycle(wx: SandboxServer, state: PayState, sign_type: str, buyer: str) -> None:
    v2 = PayV2(appid=APPID, mch_id=MCH_ID, api_key=API_KEY, api_base=wx.base_url, sign_type=sign_type)
    number = out_trade_no()
    prepay_id = v2.unified_order(number, 2000, buyer, "有机茶叶礼盒" * 20, NOTIFY, "203.0.113.7")
    assert prepay_id.startswith("wx")
    assert state.orders[number].sign_type == sign_type
    assert len(state.orders[number].description.encode()) <= 128  # clipped to WeChat's limit
    # Prepaying again with the same terms gives the same prepay; different terms are refused.
    assert v2.unified_order(number, 2000, buyer, "tea", NOTIFY, "203.0.113.7") == prepay_id
    with pytest.raises(WeChatPayError) as refused:
        v2.unified_order(number, 2001, buyer, "tea", NOTIFY, "203.0.113.7")
    assert refused.value.code == "INVALID_REQUEST"

    assert v2.order_query(number).trade_state == "NOTPAY"
    state.pay(number)
    result = v2.order_query(number)
    assert (result.trade_state, result.transaction_id, result.total_fee) == ("SUCCESS", state.orders[number].transaction_id, 2000)
    with pytest.raises(WeChatPayError) as paid:
        v2.close_order(number)
    assert paid.value.code == "ORDERPAID"
    with pytest.raises(WeChatPayError) as again:
        v2.unified_order(number, 2000, buyer, "tea", NOTIFY, "203.0.113.7")
    assert again.value.code == "ORDERPAID"

    refund_id = v2.refund(number, "F" + number, 2000, 500, NOTIFY, "坏了")
    assert v2.refund(number, "F" + number, 2000, 500, NOTIFY) == refund_id  # the same refund, not a second one
    with pytest.raises(WeChatPayError) as too_much:
        v2.refund(number, "G" + number, 2000, 1501, NOTIFY)
    assert too_much.value.code == "INVALID_REQUEST"
    assert v2.order_query(number).trade_state == "REFUND"

    with pytest.raises(WeChatPayError) as missing:
        v2.order_query(out_trade_no())
    assert missing.value.code == "ORDERNOTEXIST"


def test_v2_close_then_pay_is_impossible(v2: PayV2, state: PayState, buyer: str) -> None:
    number = out_trade_no()
    v2.unified_order(number, 100, buyer, "tea", NOTIFY, "203.0.113.7")
    v2.close_order(number)
    assert v2.order_query(number).trade_state == "CLOSED"
    with pytest.raises(WeChatPayError) as closed:
        v2.close_order(number)
    assert closed.value.code == "ORDERCLOSED"
    with pytest.raises(PayFault):
        state.pay(number)


def test_v2_with_the_wrong_key_gets_wechats_signature_error(wx: SandboxServer) -> None:
    wrong = PayV2(appid=APPID, mch_id=MCH_ID, api_key="k" * 32, api_base=wx.base_url)
    with pytest.raises(WeChatPayError) as refused:
        wrong.order_query(out_trade_no())
    assert refused.value.code == "FAIL" and "签名错误" in refused.value.errmsg


def test_v2_answer_with_a_bad_signature_is_not_trusted(v2: PayV2) -> None:
    # wechatpy never checks an answer's signature; the adapter does, so a forged answer is not believed.
    answer = {"return_code": "SUCCESS", "result_code": "SUCCESS", "appid": APPID, "mch_id": MCH_ID, "nonce_str": "n", "trade_state": "SUCCESS"}
    forged = requests.Response()
    forged.url = "https://api.mch.weixin.qq.com/pay/orderquery"
    forged._content = dict_to_xml(answer, v2_sign(answer, "k" * 32, "HMAC-SHA256")).encode()
    with pytest.raises(WeChatUnavailableError):
        v2._client._handle_result(forged)
    genuine = requests.Response()
    genuine.url = forged.url
    genuine._content = dict_to_xml(answer, v2_sign(answer, API_KEY, "HMAC-SHA256")).encode()
    assert v2._client._handle_result(genuine)["trade_state"] == "SUCCESS"


def test_v2_unreachable_is_unavailable() -> None:
    v2 = PayV2(appid=APPID, mch_id=MCH_ID, api_key=API_KEY, api_base="http://127.0.0.1:9/", timeout=2)
    with pytest.raises(WeChatUnavailableError):
        v2.order_query(out_trade_no())


def test_v2_jsapi_params_are_signed_with_the_api_key(v2: PayV2) -> None:
    params = v2.jsapi_params("wx201410272009395522657a690389285100")
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["package"] == "prepay_id=wx201410272009395522657a690389285100" and params["signType"] == "HMAC-SHA256"
    signed = f"appId={APPID}&nonceStr={params['nonceStr']}&package={params['package']}&signType=HMAC-SHA256&timeStamp={params['timeStamp']}&key={API_KEY}"
    assert params["paySign"] == hmac.new(API_KEY.encode(), signed.encode(), hashlib.sha256).hexdigest().upper()


def test_wechatpy_debug_lines_never_carry_the_key_or_signatures(wx: SandboxServer, state: PayState, caplog: pytest.LogCaptureFixture) -> None:
    v2 = PayV2(appid=APPID, mch_id=MCH_ID, api_key=API_KEY, api_base=wx.base_url)
    number = paid_order(state, "v2")
    with caplog.at_level(logging.DEBUG):
        v2.order_query(number)
        _, body = state.build_pay_notification(number)
        v2.parse_pay_notify(body)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert API_KEY not in text and "<sign>" not in text and "sign=" not in text


# -- v3 -----------------------------------------------------------------------------------------


def test_v3_authorization_header_signs_wechats_message(v3: PayV3, key_dir: Path) -> None:
    header = v3.authorization("POST", "/v3/pay/transactions/jsapi?x=1", b'{"a":1}', timestamp=1554208460, nonce="593BEC0C930BF1AFEB40B4A08C8FB242")
    assert header.startswith('WECHATPAY2-SHA256-RSA2048 mchid="1230000109",nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",signature="')
    fields = parse_authorization(header)
    assert (fields["timestamp"], fields["serial_no"]) == ("1554208460", SANDBOX_MCH_SERIAL)
    message = b'POST\n/v3/pay/transactions/jsapi?x=1\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{"a":1}\n'
    public = load_public_key(ensure_sandbox_keys(key_dir).merchant_public)
    public.verify(base64.b64decode(fields["signature"]), message, padding.PKCS1v15(), hashes.SHA256())


def test_v3_jsapi_params_pay_sign_verifies_with_the_merchant_public_key(v3: PayV3, key_dir: Path) -> None:
    params = v3.jsapi_params("wx2017033010242291fcfe0db70013231072")
    assert params["signType"] == "RSA" and params["package"] == "prepay_id=wx2017033010242291fcfe0db70013231072"
    message = f"{APPID}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
    public = load_public_key(ensure_sandbox_keys(key_dir).merchant_public)
    public.verify(base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256())


def test_v3_order_lifecycle(v3: PayV3, state: PayState, wx: SandboxServer, buyer: str) -> None:
    number = out_trade_no()
    prepay_id = v3.jsapi_prepay(number, 3000, buyer, "有机茶叶礼盒", NOTIFY)
    assert prepay_id.startswith("wx") and state.orders[number].api == "v3"
    assert wx.app.extensions["sandbox_state"].calls["/v3/pay/transactions/jsapi"] >= 1
    assert v3.query_order(number).trade_state == "NOTPAY"
    state.pay(number)
    result = v3.query_order(number)
    assert (result.trade_state, result.transaction_id, result.total_fee) == ("SUCCESS", state.orders[number].transaction_id, 3000)
    with pytest.raises(WeChatPayError) as paid:
        v3.close_order(number)
    assert paid.value.code == "ORDERPAID"
    refund_id = v3.refund(number, "F" + number, 3000, 3000, NOTIFY, "退货")
    assert v3.refund(number, "F" + number, 3000, 3000, NOTIFY) == refund_id
    with pytest.raises(WeChatPayError) as too_much:
        v3.refund(number, "G" + number, 3000, 1, NOTIFY)
    assert too_much.value.code == "INVALID_REQUEST"
    with pytest.raises(WeChatPayError) as missing:
        v3.query_order(out_trade_no())
    assert missing.value.code == "ORDER_NOT_EXIST"
    unpaid = out_trade_no()
    v3.jsapi_prepay(unpaid, 100, buyer, "tea", NOTIFY)
    v3.close_order(unpaid)
    assert v3.query_order(unpaid).trade_state == "CLOSED"


def test_v3_request_with_the_wrong_private_key_is_refused(config: dict[str, Any], wx: SandboxServer) -> None:
    impostor = PayV3(
        appid=APPID,
        mchid=MCH_ID,
        api_v3_key=API_V3_KEY,
        private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        serial_no=SANDBOX_MCH_SERIAL,
        platform_keys={SANDBOX_PLATFORM_SERIAL: load_public_key(ensure_sandbox_keys(config["WECHAT_PAY_SANDBOX_KEY_DIR"]).platform_public)},
        api_base=wx.base_url,
    )
    with pytest.raises(WeChatPayError) as refused:
        impostor.query_order(out_trade_no())
    assert refused.value.code == "SIGN_ERROR"


def test_v3_answer_not_signed_by_the_platform_key_is_not_trusted(config: dict[str, Any], wx: SandboxServer, buyer: str) -> None:
    keys = ensure_sandbox_keys(config["WECHAT_PAY_SANDBOX_KEY_DIR"])
    suspicious = PayV3(
        appid=APPID,
        mchid=MCH_ID,
        api_v3_key=API_V3_KEY,
        private_key=load_private_key(keys.merchant_private),
        serial_no=SANDBOX_MCH_SERIAL,
        platform_keys={SANDBOX_PLATFORM_SERIAL: rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()},
        api_base=wx.base_url,
    )
    with pytest.raises(WeChatUnavailableError):
        suspicious.jsapi_prepay(out_trade_no(), 100, buyer, "tea", NOTIFY)


def test_v3_pay_notification_is_verified_decrypted_and_read(state: PayState, v3: PayV3) -> None:
    number = paid_order(state, "v3", total_fee=4321)
    headers, body = state.build_pay_notification(number)
    assert headers["Wechatpay-Serial"] == SANDBOX_PLATFORM_SERIAL
    envelope = json.loads(body)
    assert envelope["event_type"] == "TRANSACTION.SUCCESS" and envelope["resource"]["algorithm"] == "AEAD_AES_256_GCM"
    assert number.encode() not in body  # the details travel encrypted
    lowercase = {k.lower(): v for k, v in headers.items()}
    notice = v3.parse_notification(lowercase, body)
    assert notice == PayNotice("v3", number, state.orders[number].transaction_id or "", 4321, True, "o-buyer")


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda s, n: _with_header(s.build_pay_notification(n), "Wechatpay-Signature", base64.b64encode(b"x" * 256).decode()), id="signature"),
        pytest.param(lambda s, n: s.build_pay_notification(n, serial="5A0D5A4D5B0C0001000000000000000000000FFF"), id="serial"),
        pytest.param(lambda s, n: s.build_pay_notification(n, timestamp=int(time.time()) - 600), id="ten-minutes-old"),
        pytest.param(lambda s, n: s.build_pay_notification(n, timestamp=int(time.time()) + 600), id="from-the-future"),
        pytest.param(lambda s, n: s.build_pay_notification(n, tamper_ciphertext=True), id="ciphertext"),
        pytest.param(lambda s, n: (s.build_pay_notification(n)[0], s.build_pay_notification(n)[1] + b" "), id="body-after-signing"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"mchid": "1999999999"}), id="mchid"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"appid": "wx0000000000000bad"}), id="appid"),
        pytest.param(lambda s, n: s.build_pay_notification(n, overrides={"trade_state": "NOTPAY"}), id="not-paid"),
        pytest.param(lambda s, n: _without_header(s.build_pay_notification(n), "Wechatpay-Nonce"), id="no-nonce"),
    ],
)
def test_v3_notifications_that_are_not_ours_are_refused(state: PayState, v3: PayV3, forge: Any) -> None:
    number = paid_order(state, "v3")
    headers, body = forge(state, number)
    with pytest.raises(InvalidNotificationError):
        v3.parse_notification(headers, body)


def _with_header(built: tuple[dict[str, str], bytes], name: str, value: str) -> tuple[dict[str, str], bytes]:
    return built[0] | {name: value}, built[1]


def _without_header(built: tuple[dict[str, str], bytes], name: str) -> tuple[dict[str, str], bytes]:
    return {k: v for k, v in built[0].items() if k != name}, built[1]


def test_v3_refund_notifications_and_other_events(state: PayState, v3: PayV3) -> None:
    number = paid_order(state, "v3", total_fee=800)
    refund = state.open_refund(out_trade_no=number, out_refund_no="F" + number, total_fee=800, refund_fee=300, notify_url=NOTIFY, api="v3")
    headers, body = state.build_refund_notification(refund.out_refund_no, status="ABNORMAL")
    notice = v3.parse_notification(headers, body)
    assert notice == RefundNotice("v3", number, refund.out_refund_no, refund.refund_id, 300, 800, "ABNORMAL")
    assert not notice.succeeded
    # A REFUND.* event whose resource says otherwise is not believed.
    other = state.open_refund(out_trade_no=number, out_refund_no="G" + number, total_fee=800, refund_fee=100, notify_url=NOTIFY, api="v3")
    headers, body = state.build_refund_notification(other.out_refund_no, overrides={"refund_status": "CLOSED"})
    with pytest.raises(InvalidNotificationError):
        v3.parse_notification(headers, body)
    # An event the app does not act on is acknowledged, not refused (WeChat would resend it for a day).
    headers, body = state.build_v3_notification("TRANSACTION.OTHER", "其他", "transaction", {"mchid": MCH_ID, "appid": APPID})
    assert v3.parse_notification(headers, body) == IgnoredNotice("TRANSACTION.OTHER")


def test_v3_refuses_an_api_v3_key_that_is_not_32_bytes() -> None:
    with pytest.raises(ValueError):
        PayV3(appid=APPID, mchid=MCH_ID, api_v3_key="short", private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048), serial_no="S", platform_keys={"P": rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()})


# -- what WeChat refuses: windows, lengths, openids, order numbers -----------------------------------


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def test_clip_utf8_never_cuts_a_character() -> None:
    assert clip_utf8("abc", 80) == "abc"
    assert clip_utf8("退款" * 20, 80) == "退款" * 13  # 27 characters would be 81 bytes: 26 fit
    for text in ("😀" * 30, "a😀" * 30, "ab😀" * 30, "abc😀" * 30, "é😀退" * 20):
        for limit in range(0, 90):
            clipped = clip_utf8(text, limit)
            assert len(clipped.encode("utf-8")) <= limit and text.startswith(clipped)
            assert len(clipped.encode("utf-8")) > limit - 4  # nothing dropped but the last partial character
    assert clip_utf8("😀", 3) == ""


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_a_window_wechat_would_refuse_is_not_sent(gateway: WeChatPayGateway, wx: SandboxServer, buyer: str, api: str) -> None:
    calls = wx.app.extensions["sandbox_state"].calls
    before = dict(calls)
    for window in (datetime.timedelta(seconds=-1), WECHAT_MIN_PAY_WINDOW, SAFE_MIN_PAY_WINDOW - datetime.timedelta(seconds=1)):
        with pytest.raises(PayWindowTooShortError):
            gateway.prepay(api, out_trade_no=out_trade_no(), total_fee=100, openid=buyer, description="tea",
                           notify_url=NOTIFY, client_ip="203.0.113.7", time_expire=now() + window)
    assert dict(calls) == before  # refused here, nothing sent
    number = out_trade_no()
    gateway.prepay(api, out_trade_no=number, total_fee=100, openid=buyer, description="tea", notify_url=NOTIFY,
                   client_ip="203.0.113.7", time_expire=now() + SAFE_MIN_PAY_WINDOW + datetime.timedelta(seconds=5))
    assert number in wx.app.extensions["sandbox_pay"].orders


def test_the_sandbox_refuses_a_v2_window_of_five_minutes_or_less(v2: PayV2, state: PayState, buyer: str) -> None:
    fields = {"body": "tea", "total_fee": 100, "spbill_create_ip": "203.0.113.7", "notify_url": NOTIFY, "trade_type": "JSAPI", "openid": buyer}
    for seconds in (0, 60, 299, 300):
        expire = (now() + datetime.timedelta(seconds=seconds)).astimezone(CHINA).strftime("%Y%m%d%H%M%S")
        with pytest.raises(WeChatPayError) as refused:
            v2._call("pay/unifiedorder", fields | {"out_trade_no": out_trade_no(), "time_expire": expire})
        assert refused.value.code == "INVALID_REQUEST" and "time_expire时间过短" in refused.value.errmsg
    number = out_trade_no()
    expire = (now() + datetime.timedelta(seconds=330)).astimezone(CHINA).strftime("%Y%m%d%H%M%S")
    assert v2._call("pay/unifiedorder", fields | {"out_trade_no": number, "time_expire": expire})["prepay_id"]


def test_the_sandbox_moves_a_short_v3_window_to_a_minute_as_documented(v3: PayV3, state: PayState, buyer: str) -> None:
    number = out_trade_no()
    payload = {"appid": APPID, "mchid": MCH_ID, "description": "tea", "out_trade_no": number, "notify_url": NOTIFY,
               "amount": {"total": 100, "currency": "CNY"}, "payer": {"openid": buyer},
               "time_expire": (now() + datetime.timedelta(seconds=5)).astimezone(CHINA).replace(microsecond=0).isoformat()}
    assert v3._request("POST", "/v3/pay/transactions/jsapi", payload=payload)
    assert state.orders[number].time_expire >= time.time() + 55


def test_v2_lengths_are_counted_in_bytes(v2: PayV2, state: PayState, buyer: str) -> None:
    number = out_trade_no()
    v2.unified_order(number, 100, buyer, "茶" * 60, NOTIFY, "203.0.113.7")  # 180 bytes, clipped
    assert len(state.orders[number].description.encode()) <= V2_BODY_MAX_BYTES
    fields = {"total_fee": 100, "spbill_create_ip": "203.0.113.7", "notify_url": NOTIFY, "trade_type": "JSAPI", "openid": buyer}
    for extra in ({"body": "a" * 128}, {"body": "茶" * 43}, {"body": "tea", "attach": "😀" * 32}, {"body": "tea", "detail": "x" * 6001}):
        with pytest.raises(WeChatPayError) as refused:
            v2._call("pay/unifiedorder", fields | extra | {"out_trade_no": out_trade_no()})
        assert refused.value.code == "PARAM_ERROR"
    state.pay(number)
    v2.refund(number, "F" + number, 100, 10, NOTIFY, "商品质量问题，顾客要求退货并已寄回，请尽快处理退款谢谢")  # 26 chars, 78 bytes
    v2.refund(number, "G" + number, 100, 10, NOTIFY, "商品质量问题，顾客要求退货并已寄回，请尽快处理退款谢谢您")  # 81 bytes: clipped
    assert len(state.refunds["G" + number].reason.encode()) <= V2_REFUND_DESC_MAX_BYTES
    with pytest.raises(WeChatPayError) as refused:
        v2._call("secapi/pay/refund", {"out_trade_no": number, "out_refund_no": "H" + number, "total_fee": 100, "refund_fee": 10, "refund_desc": "退" * 27})
    assert refused.value.code == "PARAM_ERROR"


def test_v3_refund_reason_is_80_bytes_not_80_characters(v3: PayV3, state: PayState, buyer: str) -> None:
    number = out_trade_no()
    v3.jsapi_prepay(number, 3000, buyer, "茶" * V3_DESCRIPTION_MAX_CHARS, NOTIFY)  # characters: all 127 fit
    state.pay(number)
    reason = "商品在运输途中损坏，顾客拍照确认后申请全额退款，已与快递公司核实责任并同意赔付处理"  # 42 characters, 126 bytes
    v3.refund(number, "F" + number, 3000, 1000, NOTIFY, reason)
    stored = state.refunds["F" + number].reason
    assert len(stored.encode()) <= V3_REASON_MAX_BYTES and reason.startswith(stored) and len(stored) == 26
    base = {"out_trade_no": number, "notify_url": NOTIFY, "amount": {"refund": 10, "total": 3000, "currency": "CNY"}}
    with pytest.raises(WeChatPayError) as refused:
        v3._request("POST", "/v3/refund/domestic/refunds", payload=base | {"out_refund_no": "G" + number, "reason": "退" * 27})
    assert refused.value.code == "PARAM_ERROR"
    prepay = {"appid": APPID, "mchid": MCH_ID, "notify_url": NOTIFY, "amount": {"total": 100, "currency": "CNY"}, "payer": {"openid": buyer}}
    for extra in ({"description": "茶" * 128}, {"description": "tea", "attach": "a" * 129}):
        with pytest.raises(WeChatPayError) as refused:
            v3._request("POST", "/v3/pay/transactions/jsapi", payload=prepay | extra | {"out_trade_no": out_trade_no()})
        assert refused.value.code == "PARAM_ERROR"


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_an_openid_of_another_app_is_refused(gateway: WeChatPayGateway, state: PayState, wx: SandboxServer, api: str) -> None:
    other_app = wx.app.extensions["sandbox_state"].openid("wxanotherapp00001", "buyer")
    for openid in (other_app, "o-never-issued-by-wechat00000"):
        with pytest.raises(WeChatPayError) as refused:
            gateway.prepay(api, out_trade_no=out_trade_no(), total_fee=100, openid=openid, description="tea",
                           notify_url=NOTIFY, client_ip="203.0.113.7")
        assert refused.value.code == ("OPENID_MISMATCH" if api == "v2" else "PARAM_ERROR")
        assert "appid和openid不匹配" in refused.value.errmsg


@pytest.mark.parametrize("number", ["A1234", "A" * 33, "订单1234567", "A123 4567", "A123#4567", "A123.4567"])
def test_an_out_trade_no_wechat_refuses(v2: PayV2, v3: PayV3, buyer: str, number: str) -> None:
    for call in (lambda: v3.jsapi_prepay(number, 100, buyer, "tea", NOTIFY), lambda: v3.query_order(number),
                 lambda: v2.unified_order(number, 100, buyer, "tea", NOTIFY, "203.0.113.7")):
        with pytest.raises(WeChatPayError) as refused:
            call()
        assert refused.value.code == "PARAM_ERROR"
    assert v3.jsapi_prepay(out_trade_no() + "_-|*", 100, buyer, "tea", NOTIFY)


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_a_refund_by_transaction_id_alone(gateway: WeChatPayGateway, state: PayState, buyer: str, api: str) -> None:
    number = out_trade_no()
    gateway.prepay(api, out_trade_no=number, total_fee=500, openid=buyer, description="tea", notify_url=NOTIFY, client_ip="203.0.113.7")
    transaction_id = state.pay(number).transaction_id
    refund_id = gateway.refund(api, out_trade_no="", transaction_id=transaction_id, out_refund_no="F" + number,
                               total_fee=500, refund_fee=200, notify_url=NOTIFY)
    refund = state.refunds["F" + number]
    assert (refund.refund_id, refund.out_trade_no, refund.refund_fee) == (refund_id, number, 200)
    with pytest.raises(WeChatPayError) as unknown:
        gateway.refund(api, out_trade_no="", transaction_id="4200000000202601010000000000", out_refund_no="G" + number,
                       total_fee=500, refund_fee=200, notify_url=NOTIFY)
    assert unknown.value.code in ("ORDERNOTEXIST", "RESOURCE_NOT_EXISTS")


# -- the gateway ----------------------------------------------------------------------------------


def test_gateway_from_config(config: dict[str, Any], tmp_path: Path) -> None:
    pay = WeChatPayGateway.from_config(config | {"WECHAT_PAY_API": "V2"})
    assert pay.default_api == "v2" and pay.v2 is not None and pay.v3 is not None
    assert "apikey" not in repr(pay) and API_KEY not in repr(pay)
    bare = WeChatPayGateway.from_config({"WECHAT_APPID": APPID})
    assert bare.v2 is None and bare.v3 is None
    with pytest.raises(PayNotConfiguredError):
        bare.client()
    production = {"WECHAT_APPID": APPID, "WECHAT_PAY_MCH_ID": MCH_ID, "WECHAT_PAY_API_V3_KEY": API_V3_KEY}
    assert WeChatPayGateway.from_config(production).v3 is None  # no keys and not the sandbox: no v3
    keys = ensure_sandbox_keys(config["WECHAT_PAY_SANDBOX_KEY_DIR"])
    with pytest.raises(ValueError):  # PEM paths without their serials
        WeChatPayGateway.from_config(production | {"WECHAT_PAY_MCH_PRIVATE_KEY": str(keys.merchant_private), "WECHAT_PAY_PLATFORM_PUBLIC_KEY": str(keys.platform_public)})
    with pytest.raises(ValueError):
        WeChatPayGateway.from_config(config | {"WECHAT_PAY_API": "v4"})
    with pytest.raises(ValueError):
        WeChatPayGateway.from_config(config | {"WECHAT_PAY_MCH_CERT": str(tmp_path / "missing.pem"), "WECHAT_PAY_MCH_KEY": str(tmp_path / "missing.key")})
    # A platform certificate (平台证书) loads as well as a bare public key.
    certificate = tmp_path / "platform_cert.pem"
    certificate.write_bytes(_self_signed(load_private_key(keys.platform_private)))
    configured = production | {
        "WECHAT_PAY_MCH_PRIVATE_KEY": str(keys.merchant_private),
        "WECHAT_PAY_PLATFORM_PUBLIC_KEY": str(certificate),
        "WECHAT_PAY_MCH_CERT_SERIAL": SANDBOX_MCH_SERIAL,
        "WECHAT_PAY_PLATFORM_SERIAL": SANDBOX_PLATFORM_SERIAL,
    }
    assert WeChatPayGateway.from_config(configured).v3 is not None


def _self_signed(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int(SANDBOX_PLATFORM_SERIAL, 16))
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_sandbox_pay_control_plays_the_buyer(wx: SandboxServer, v3: PayV3, buyer: str) -> None:
    number = out_trade_no()
    v3.jsapi_prepay(number, 500, buyer, "tea", "http://127.0.0.1:9/wechat/pay/v3/notify")
    answer = requests.post(wx.base_url + "sandbox/pay/pay", json={"out_trade_no": number}, timeout=10).json()
    assert answer["state"] == "SUCCESS" and answer["notification"]["ok"] is False  # nobody listens on port 9
    assert requests.get(wx.base_url + f"sandbox/pay/orders/{number}", timeout=10).json()["state"] == "SUCCESS"
    built = requests.post(wx.base_url + "sandbox/pay/notifications", json={"out_trade_no": number}, timeout=10).json()
    assert isinstance(v3.parse_notification(built["headers"], built["body"].encode()), PayNotice)
    assert requests.post(wx.base_url + "sandbox/pay/pay", json={"out_trade_no": "nope00000"}, timeout=10).status_code == 404


def _calls(api: str, errcode: str) -> float:
    return REGISTRY.get_sample_value("referral_wechat_requests_total", {"api": api, "errcode": errcode}) or 0.0


def test_pay_calls_are_counted_by_path_template_and_code(v2: PayV2, v3: PayV3, buyer: str) -> None:
    by_number = "v3/pay/transactions/out-trade-no/{id}"
    before = {key: _calls(*key) for key in [("v3/pay/transactions/jsapi", "0"), (by_number, "0"), (by_number, "ORDER_NOT_EXIST"), ("pay/orderquery", "ORDERNOTEXIST")]}
    number = out_trade_no()
    v3.jsapi_prepay(number, 100, buyer, "tea", NOTIFY)
    v3.query_order(number)
    with pytest.raises(WeChatPayError):
        v3.query_order(out_trade_no())
    with pytest.raises(WeChatPayError):
        v2.order_query(out_trade_no())
    assert {key: _calls(*key) - value for key, value in before.items()} == {key: 1.0 for key in before}
    families = {family.name for family in REGISTRY.collect()}
    assert "referral_wechat_requests" in families
    labels = {s.labels["api"] for f in REGISTRY.collect() if f.name == "referral_wechat_requests" for s in f.samples}
    assert not [api for api in labels if number in api]  # the order number is never a label
