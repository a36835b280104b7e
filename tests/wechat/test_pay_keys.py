"""WeChat Pay v3 keys as merchants hold them: platform certificates downloaded and rotated from
/v3/certificates, the WeChat Pay public key (PUB_KEY_ID_…), and both during the switch-over; checked
against the sandbox and cross-checked with the independent SDK ``wechatpayv3``."""
from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from wechatpayv3.core import Core  # type: ignore[import-untyped]

from server.wechat.client import WeChatUnavailableError
from server.wechat.pay import InvalidNotificationError, PayNotice, PayV3, WeChatPayError, WeChatPayGateway
from server.wechat.pay_keys import REFRESH_INTERVAL, certificate_serial
from wechat_sandbox import PayState, SandboxServer, create_sandbox_app, pay_merchant_from_config, serve_in_thread
from wechat_sandbox.keys import SANDBOX_MCH_SERIAL, SANDBOX_PLATFORM_SERIAL, SANDBOX_PUBLIC_KEY_ID, ensure_sandbox_keys

APPID, SECRET = "wxpaykeys00000001", "pay-keys-secret"
MCH_ID, API_KEY, API_V3_KEY = "1230000119", "paykeysapikey000000000000000000", "paykeysapiv3key00000000000000000"
NOTIFY = "https://merchant.example.com/wechat/pay/notify"
CERTIFICATES = "/v3/certificates"


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("paykeys") / "keys"


@pytest.fixture(scope="module")
def config(key_dir: Path) -> dict[str, Any]:
    return {
        "WECHAT_SANDBOX": True,
        "WECHAT_APPID": APPID,
        "WECHAT_PAY_MCH_ID": MCH_ID,
        "WECHAT_PAY_API_KEY": API_KEY,
        "WECHAT_PAY_API_V3_KEY": API_V3_KEY,
        "WECHAT_PAY_SANDBOX_KEY_DIR": str(key_dir),
    }


@pytest.fixture(scope="module")
def wx(config: dict[str, Any]) -> Iterator[SandboxServer]:
    server = serve_in_thread(create_sandbox_app({APPID: SECRET}, seed="pay-keys", pay=pay_merchant_from_config(config)))
    yield server
    server.shutdown()


def serve(wx: SandboxServer, config: dict[str, Any], mode: str) -> PayState:
    """The sandbox's WeChat Pay for a merchant verifying with ``mode``, its certificates as first issued."""
    state: PayState = wx.app.extensions["sandbox_pay"]
    state.install(pay_merchant_from_config(config | {"WECHAT_PAY_V3_VERIFY": mode}))
    return state


def client(wx: SandboxServer, config: dict[str, Any], mode: str) -> PayV3:
    return WeChatPayGateway.from_config(config | {"WECHAT_PAY_API_BASE": wx.base_url, "WECHAT_PAY_V3_VERIFY": mode}).v3_client()


def downloads(wx: SandboxServer) -> int:
    return wx.app.extensions["sandbox_state"].calls[CERTIFICATES]


def paid_order(state: PayState, total_fee: int = 990) -> str:
    number = "K" + os.urandom(10).hex()
    state.open_order(out_trade_no=number, appid=APPID, openid="o-buyer", total_fee=total_fee, description="tea", notify_url=NOTIFY, api="v3")
    state.pay(number)
    return number


def buyer(wx: SandboxServer) -> str:
    return wx.app.extensions["sandbox_state"].openid(APPID, "buyer")


def sdk(wx: SandboxServer, key_dir: Path, tmp_path: Path, *, public_key: bool = False) -> Core:
    """The independent SDK wechatpayv3 pointed at the sandbox: with the WeChat Pay public key, or with the
    platform certificate it is given first and then downloads again from the sandbox."""
    keys = ensure_sandbox_keys(key_dir)
    private = keys.merchant_private.read_text()
    if public_key:
        core = Core(MCH_ID, SANDBOX_MCH_SERIAL, private, API_V3_KEY, public_key=keys.wechatpay_public_key.read_text(), public_key_id=SANDBOX_PUBLIC_KEY_ID)
        core._gate_way = wx.base_url.rstrip("/")
        return core
    # Started from a certificate on disk (so it calls no real host), then refreshed from the sandbox.
    state: PayState = wx.app.extensions["sandbox_pay"]
    cert_dir = tmp_path / "wechatpayv3-certs"
    cert_dir.mkdir()
    (cert_dir / "first.pem").write_text(state.certificates()[0].pem)
    core = Core(MCH_ID, SANDBOX_MCH_SERIAL, private, API_V3_KEY, cert_dir=str(cert_dir))
    core._gate_way = wx.base_url.rstrip("/")
    core._update_certificates()
    return core


# -- the certificate list ------------------------------------------------------------------------------


def test_the_sandbox_lists_its_certificates_in_wechats_format(wx: SandboxServer, config: dict[str, Any]) -> None:
    state = serve(wx, config, "certificates")
    fresh = state.rotate_certificates(old_expires_in=3 * 86400)
    v3 = client(wx, config, "certificates")
    res = v3._send("GET", CERTIFICATES)
    assert res.status_code == 200 and res.headers["Wechatpay-Serial"] == fresh.serial
    listing = res.json()
    assert [item["serial_no"] for item in listing["data"]] == [SANDBOX_PLATFORM_SERIAL, fresh.serial]
    for item in listing["data"]:
        assert set(item) == {"serial_no", "effective_time", "expire_time", "encrypt_certificate"}
        assert set(item["encrypt_certificate"]) == {"algorithm", "nonce", "associated_data", "ciphertext"}
        assert item["encrypt_certificate"]["algorithm"] == "AEAD_AES_256_GCM"
        assert item["encrypt_certificate"]["associated_data"] == "certificate"
        assert item["expire_time"].endswith("+08:00")
    certificates = v3.download_certificates()
    old, new = certificates
    assert (old.serial, new.serial) == (SANDBOX_PLATFORM_SERIAL, fresh.serial)
    assert time.time() + 2 * 86400 < old.expires <= time.time() + 3 * 86400  # about to expire
    assert new.expires > time.time() + 4 * 365 * 86400


def test_wechatpayv3_reads_the_same_certificates_and_verifies_the_sandboxs_answers(wx: SandboxServer, config: dict[str, Any], key_dir: Path, tmp_path: Path) -> None:
    state = serve(wx, config, "certificates")
    fresh = state.rotate_certificates()
    core = sdk(wx, key_dir, tmp_path)
    assert sorted(f"{c.serial_number:X}" for c in core._certificates) == sorted([SANDBOX_PLATFORM_SERIAL, fresh.serial])
    ours = client(wx, config, "certificates").download_certificates()
    assert {c.serial: c.pem for c in ours} == {certificate_serial(c): c.public_bytes(serialization.Encoding.PEM).decode() for c in core._certificates}
    # An answer signed with the new certificate, and notifications signed with either, verify in the SDK too.
    number = paid_order(state)
    code, text = core.request(f"/v3/pay/transactions/out-trade-no/{number}?mchid={MCH_ID}")
    assert code == 200 and json.loads(text)["trade_state"] == "SUCCESS"
    for signer in (SANDBOX_PLATFORM_SERIAL, fresh.serial):
        headers, body = state.build_pay_notification(number, sign_with=signer)
        assert headers["Wechatpay-Serial"] == signer
        assert core.callback(headers, body)["resource"]["out_trade_no"] == number


def test_the_first_download_is_verified_with_the_certificate_it_brings(wx: SandboxServer, config: dict[str, Any]) -> None:
    serve(wx, config, "certificates")
    fresh = wx.app.extensions["sandbox_pay"].rotate_certificates()
    keys = ensure_sandbox_keys(config["WECHAT_PAY_SANDBOX_KEY_DIR"])
    # Nothing pinned: only the merchant's own key and the APIv3 key.
    v3 = client(wx, config | {"WECHAT_SANDBOX": False, "WECHAT_PAY_MCH_PRIVATE_KEY": str(keys.merchant_private), "WECHAT_PAY_MCH_CERT_SERIAL": SANDBOX_MCH_SERIAL}, "certificates")
    assert v3.keys.certificates() == []
    assert v3.refresh_certificates()
    assert [c.serial for c in v3.keys.certificates()] == [SANDBOX_PLATFORM_SERIAL, fresh.serial]
    # The keys now verify answers.
    with pytest.raises(WeChatPayError) as missing:
        v3.query_order("K" + os.urandom(8).hex())
    assert missing.value.code == "ORDER_NOT_EXIST"


def _tampered(res: requests.Response, **headers: str) -> requests.Response:
    res.headers.update(headers)
    return res


def _rewritten(res: requests.Response, old: bytes, new: bytes) -> requests.Response:
    res._content = res.content.replace(old, new)
    return res


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        pytest.param(lambda r: _tampered(r, **{"Wechatpay-Serial": "5A0D5A4D5B0C00010000000000000000000FFFFF"}), "signed by no certificate it lists", id="unknown-signer"),
        pytest.param(lambda r: _tampered(r, **{"Wechatpay-Signature": base64.b64encode(b"\0" * 256).decode()}), "signature does not verify", id="signature"),
        pytest.param(lambda r: _rewritten(r, b'"ciphertext":"', b'"ciphertext":"AAAA'), "unreadable", id="ciphertext"),
        pytest.param(lambda r: _rewritten(r, b"+08:00", b""), "unreadable", id="times-without-offset"),
    ],
)
def test_a_certificate_list_that_is_not_wechats_is_refused(wx: SandboxServer, config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tamper: Any, why: str) -> None:
    serve(wx, config, "certificates")
    wx.app.extensions["sandbox_pay"].rotate_certificates()
    v3 = client(wx, config, "certificates")
    send = v3._send
    monkeypatch.setattr(v3, "_send", lambda *a, **k: tamper(send(*a, **k)))
    with pytest.raises(WeChatUnavailableError, match=why):
        v3.download_certificates()
    assert not v3.refresh_certificates(force=True)
    assert [c.serial for c in v3.keys.certificates()] == [SANDBOX_PLATFORM_SERIAL]  # as configured, nothing taken


# -- rotation ------------------------------------------------------------------------------------------


def test_during_a_rotation_old_and_new_serials_both_verify(wx: SandboxServer, config: dict[str, Any]) -> None:
    state = serve(wx, config, "certificates")
    v3 = client(wx, config, "certificates")
    number = paid_order(state, 4321)
    before = downloads(wx)
    assert isinstance(v3.parse_notification(*state.build_pay_notification(number)), PayNotice)
    assert downloads(wx) == before  # the configured certificate: nothing to fetch
    fresh = state.rotate_certificates()
    # WeChat signs with the new certificate now: its first message brings one download.
    notice = v3.parse_notification(*state.build_pay_notification(number))
    assert isinstance(notice, PayNotice) and notice.total_fee == 4321
    assert downloads(wx) == before + 1
    for signer in (SANDBOX_PLATFORM_SERIAL, fresh.serial, SANDBOX_PLATFORM_SERIAL):
        assert isinstance(v3.parse_notification(*state.build_pay_notification(number, sign_with=signer)), PayNotice)
    # Answers are signed with the new one too.
    assert v3.query_order(number).trade_state == "SUCCESS"
    assert downloads(wx) == before + 1
    # Sensitive fields go to the certificate that expires last, and WeChat reads them.
    sealed, serial = v3.encrypt_sensitive("6222020200000000000")
    assert serial == fresh.serial
    key = state.private_key_of(serial)
    assert key is not None and key.decrypt(base64.b64decode(sealed), padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)) == b"6222020200000000000"


def test_an_unknown_serial_refreshes_once_and_is_then_refused(wx: SandboxServer, config: dict[str, Any]) -> None:
    state = serve(wx, config, "certificates")
    v3 = client(wx, config, "certificates")
    number = paid_order(state)
    before = downloads(wx)
    unknown = "5A0D5A4D5B0C0001000000000000000000000C03"
    for _ in range(3):
        with pytest.raises(InvalidNotificationError, match="names no WeChat Pay key"):
            v3.parse_notification(*state.build_pay_notification(number, serial=unknown))
    assert downloads(wx) == before + 1  # then rate-limited, for REFRESH_INTERVAL
    # A new certificate within that interval is not fetched either; after it, one download brings it.
    fresh = state.rotate_certificates()
    with pytest.raises(InvalidNotificationError):
        v3.parse_notification(*state.build_pay_notification(number))
    assert downloads(wx) == before + 1
    v3.keys.last_download = time.monotonic() - REFRESH_INTERVAL - 1
    v3._local_cache.clear()
    headers, body = state.build_pay_notification(number)
    assert headers["Wechatpay-Serial"] == fresh.serial
    assert isinstance(v3.parse_notification(headers, body), PayNotice)
    assert downloads(wx) == before + 2


def test_an_expired_certificate_is_refused(wx: SandboxServer, config: dict[str, Any]) -> None:
    state = serve(wx, config, "certificates")
    fresh = state.rotate_certificates(old_expires_in=2 * 86400)
    v3 = client(wx, config, "certificates")
    number = paid_order(state)
    assert v3.refresh_certificates()
    assert isinstance(v3.parse_notification(*state.build_pay_notification(number, sign_with=SANDBOX_PLATFORM_SERIAL)), PayNotice)
    # Three days later: the old certificate has expired; the new one still verifies.
    v3.keys.clock = lambda: time.time() + 3 * 86400
    before = downloads(wx)
    with pytest.raises(InvalidNotificationError, match="expired"):
        v3.parse_notification(*state.build_pay_notification(number, sign_with=SANDBOX_PLATFORM_SERIAL))
    assert downloads(wx) == before  # an expired serial is known: nothing to fetch
    assert isinstance(v3.parse_notification(*state.build_pay_notification(number, sign_with=fresh.serial)), PayNotice)
    assert v3.encrypt_sensitive("x")[1] == fresh.serial


def test_workers_share_a_download_through_the_cache(wx: SandboxServer, config: dict[str, Any]) -> None:
    state = serve(wx, config, "certificates")
    shared: dict[str, Any] = {}
    cache = (shared.get, lambda key, value, ttl: shared.__setitem__(key, value))
    first, second = client(wx, config, "certificates"), client(wx, config, "certificates")
    first.cache = second.cache = cache
    fresh = state.rotate_certificates()
    number = paid_order(state)
    before = downloads(wx)
    assert isinstance(first.parse_notification(*state.build_pay_notification(number)), PayNotice)
    assert isinstance(second.parse_notification(*state.build_pay_notification(number)), PayNotice)
    assert downloads(wx) == before + 1
    assert fresh.serial in {c.serial for c in second.keys.certificates()}
    # The shared entries are public certificates and times, no key or secret.
    text = json.dumps(shared)
    assert API_V3_KEY not in text and "PRIVATE" not in text


def test_a_refresh_is_never_made_inside_a_transaction(wx: SandboxServer, config: dict[str, Any]) -> None:
    state = serve(wx, config, "certificates")
    v3 = client(wx, config, "certificates")
    open_transaction = [True]
    v3.in_transaction = lambda: open_transaction[0]
    state.rotate_certificates()
    number = paid_order(state)
    before = downloads(wx)
    with pytest.raises(InvalidNotificationError):
        v3.parse_notification(*state.build_pay_notification(number))
    assert not v3.refresh_certificates(force=True)
    assert downloads(wx) == before
    open_transaction[0] = False
    assert isinstance(v3.parse_notification(*state.build_pay_notification(number)), PayNotice)
    assert downloads(wx) == before + 1


# -- the WeChat Pay public key ------------------------------------------------------------------------


def test_public_key_mode_verifies_notifications_and_answers_with_the_public_key(wx: SandboxServer, config: dict[str, Any], key_dir: Path, tmp_path: Path) -> None:
    state = serve(wx, config, "public_key")
    v3 = client(wx, config, "public_key")
    assert v3.keys.public_key_id == SANDBOX_PUBLIC_KEY_ID
    number = paid_order(state, 777)
    headers, body = state.build_pay_notification(number)
    assert headers["Wechatpay-Serial"] == SANDBOX_PUBLIC_KEY_ID
    before = downloads(wx)
    notice = v3.parse_notification(headers, body)
    assert isinstance(notice, PayNotice) and notice.total_fee == 777
    assert v3.query_order(number).trade_state == "SUCCESS"
    prepaid = "K" + os.urandom(10).hex()
    assert v3.jsapi_prepay(prepaid, 100, buyer(wx), "tea", NOTIFY)
    # A certificate is neither held nor fetched: the merchant has none.
    with pytest.raises(InvalidNotificationError, match="names no WeChat Pay key"):
        v3.parse_notification(*state.build_pay_notification(number, serial="5A0D5A4D5B0C0001000000000000000000000B02"))
    assert downloads(wx) == before
    with pytest.raises(WeChatPayError) as none:
        v3.download_certificates()
    assert none.value.code == "RESOURCE_NOT_EXISTS"
    # A forged signature under the public key's id is still refused.
    forged = headers | {"Wechatpay-Signature": base64.b64encode(b"\1" * 256).decode()}
    with pytest.raises(InvalidNotificationError, match="signature does not verify"):
        v3.parse_notification(forged, body)
    # Sensitive fields are sealed with the public key and sent under its id.
    sealed, serial = v3.encrypt_sensitive("张三")
    assert serial == SANDBOX_PUBLIC_KEY_ID
    key = state.private_key_of(serial)
    assert key is not None and key.decrypt(base64.b64decode(sealed), padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)).decode() == "张三"
    # The independent SDK agrees on the answers and notifications.
    core = sdk(wx, key_dir, tmp_path, public_key=True)
    code, text = core.request(f"/v3/pay/transactions/out-trade-no/{number}?mchid={MCH_ID}")
    assert code == 200 and json.loads(text)["amount"]["total"] == 777
    assert core.callback(*state.build_pay_notification(number))["resource"]["transaction_id"] == notice.transaction_id


def test_requests_name_the_public_key_so_answers_come_signed_with_it(wx: SandboxServer, config: dict[str, Any]) -> None:
    state = serve(wx, config, "both")
    assert state.signer == "certificate"
    v3 = client(wx, config, "both")
    res = v3._send("GET", f"/v3/pay/transactions/out-trade-no/{paid_order(state)}", params={"mchid": MCH_ID})
    assert res.status_code == 200 and res.headers["Wechatpay-Serial"] == SANDBOX_PUBLIC_KEY_ID
    assert res.request.headers["Wechatpay-Serial"] == SANDBOX_PUBLIC_KEY_ID


def test_during_the_switch_over_certificates_and_the_public_key_both_verify(wx: SandboxServer, config: dict[str, Any]) -> None:
    state = serve(wx, config, "both")
    v3 = client(wx, config, "both")
    number = paid_order(state, 555)
    for signer in (SANDBOX_PLATFORM_SERIAL, SANDBOX_PUBLIC_KEY_ID):
        headers, body = state.build_pay_notification(number, sign_with=signer)
        assert headers["Wechatpay-Serial"] == signer
        assert isinstance(v3.parse_notification(headers, body), PayNotice)
    # WeChat switches its notifications to the public key; a rotated certificate still verifies too.
    requests.put(wx.base_url + "sandbox/pay/signer", json={"signer": "public_key"}, timeout=10).raise_for_status()
    assert state.build_pay_notification(number)[0]["Wechatpay-Serial"] == SANDBOX_PUBLIC_KEY_ID
    rotated = requests.post(wx.base_url + "sandbox/pay/certificates/rotate", json={"old_expires_in": 86400}, timeout=10).json()
    assert [c["serial_no"] for c in rotated["certificates"]] == [SANDBOX_PLATFORM_SERIAL, rotated["new"]]
    assert isinstance(v3.parse_notification(*state.build_pay_notification(number, sign_with=rotated["new"])), PayNotice)
    assert v3.query_order(number).total_fee == 555
    assert v3.encrypt_sensitive("x")[1] == SANDBOX_PUBLIC_KEY_ID


@pytest.mark.parametrize(
    ("serial", "why"),
    [("5A0D5A4D5B0C0001000000000000000000000C03", "Wechatpay-Serial与加密所用证书不一致"), (SANDBOX_PLATFORM_SERIAL, "bank_account解密失败")],
)
def test_the_sandbox_refuses_a_field_sealed_for_another_key_than_the_one_named(wx: SandboxServer, config: dict[str, Any], serial: str, why: str) -> None:
    serve(wx, config, "both")
    v3 = client(wx, config, "both")
    sealed, named = v3.encrypt_sensitive("6222020200000000000")
    assert named == SANDBOX_PUBLIC_KEY_ID
    with pytest.raises(WeChatPayError) as refused:
        v3._request(
            "POST",
            "/v3/refund/domestic/refunds/50000000382019052709732678859/apply-abnormal-refund",
            payload={"out_refund_no": "F1", "type": "USER_BANK_CARD", "bank_type": "ICBC_DEBIT", "bank_account": sealed, "real_name": sealed},
            extra_headers={"Wechatpay-Serial": serial},
        )
    assert refused.value.code == "PARAM_ERROR" and why in str(refused.value)


# -- configuration and secrets ----------------------------------------------------------------------------


def test_the_modes_need_their_keys(config: dict[str, Any], key_dir: Path) -> None:
    keys = ensure_sandbox_keys(key_dir)
    production = {k: v for k, v in config.items() if k != "WECHAT_SANDBOX"} | {
        "WECHAT_PAY_MCH_PRIVATE_KEY": str(keys.merchant_private),
        "WECHAT_PAY_MCH_CERT_SERIAL": SANDBOX_MCH_SERIAL,
    }
    with pytest.raises(ValueError, match="needs WECHAT_PAY_PUBLIC_KEY and WECHAT_PAY_PUBLIC_KEY_ID"):
        WeChatPayGateway.from_config(production | {"WECHAT_PAY_V3_VERIFY": "both"})
    with pytest.raises(ValueError, match="starts with PUB_KEY_ID_"):
        WeChatPayGateway.from_config(production | {"WECHAT_PAY_PUBLIC_KEY": str(keys.wechatpay_public_key), "WECHAT_PAY_PUBLIC_KEY_ID": "0119000001"})
    with pytest.raises(ValueError, match="go together"):
        WeChatPayGateway.from_config(production | {"WECHAT_PAY_PLATFORM_SERIAL": SANDBOX_PLATFORM_SERIAL})
    with pytest.raises(ValueError, match="WECHAT_PAY_V3_VERIFY must be one of"):
        WeChatPayGateway.from_config(production | {"WECHAT_PAY_V3_VERIFY": "certs"})
    public = WeChatPayGateway.from_config(production | {"WECHAT_PAY_PUBLIC_KEY": str(keys.wechatpay_public_key), "WECHAT_PAY_PUBLIC_KEY_ID": SANDBOX_PUBLIC_KEY_ID}).v3_client()
    assert (public.keys.mode, public.keys.public_key_id, public.keys.certificates()) == ("public_key", SANDBOX_PUBLIC_KEY_ID, [])
    downloaded = WeChatPayGateway.from_config(production).v3_client()
    assert (downloaded.keys.mode, downloaded.keys.public_key_id, downloaded.keys.certificates()) == ("certificates", None, [])


def test_keys_and_signatures_never_reach_the_log(wx: SandboxServer, config: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    state = serve(wx, config, "both")
    v3 = client(wx, config, "both")
    number = paid_order(state)
    caplog.set_level(logging.DEBUG)
    fresh = state.rotate_certificates()
    headers, body = state.build_pay_notification(number, sign_with=fresh.serial)
    assert isinstance(v3.parse_notification(headers, body), PayNotice)
    v3.keys.last_download = None
    v3._local_cache.clear()
    assert v3.refresh_certificates()
    listing = v3._send("GET", CERTIFICATES).json()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refreshed" in logged and fresh.serial in logged
    secrets = [API_V3_KEY, headers["Wechatpay-Signature"], json.loads(body)["resource"]["ciphertext"], "BEGIN", "PRIVATE"]
    secrets += [item["encrypt_certificate"]["ciphertext"][:40] for item in listing["data"]]
    for secret in secrets:
        assert secret not in logged
