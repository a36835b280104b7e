"""WeChat Pay (api.mch.weixin.qq.com): the merchant, its orders and refunds, and what both APIs share.

One merchant and one book of orders behind two APIs, as on WeChat: v2 (XML signed with the
API key, errors as return_code/result_code, ``pay_v2``) and v3 (JSON, requests and answers signed
with SHA256withRSA, errors as HTTP status and {"code","message"}, ``pay_v3``). An order prepaid
through either can be queried, closed and refunded through either; its notifications take the
form of the API its latest prepay came through.

The sandbox plays the buyer too (``buyer``): ``POST /sandbox/pay/pay`` pays an order and sends
WeChat's signed notification to its notify_url; ``POST /sandbox/pay/refund-complete`` ends a refund
the same way. ``PayState.build_pay_notification`` / ``build_refund_notification`` give tests
the signed request without sending it, to replay, reorder, tamper with or send at once.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

import requests
from flask import Flask, current_app, has_request_context, request
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpy.pay.utils import calculate_signature, calculate_signature_hmac, dict_to_xml

from server.config import SANDBOX_DEFAULTS, Config
from server.wechat.pay import CHINA_TZ, load_private_key, load_public_key, parse_v2_xml, v3_verify_mode
from wechat_sandbox.core import PUSH_TIMEOUT, _cdata, state
from wechat_sandbox.keys import (
    SANDBOX_MCH_SERIAL,
    SANDBOX_PLATFORM_SERIAL,
    SANDBOX_PUBLIC_KEY_ID,
    SandboxCertificate,
    ensure_sandbox_keys,
    issue_certificate,
    sandbox_key_dir,
)

#: Order states of an order query.
NOTPAY, TRADE_SUCCESS, TRADE_CLOSED, TRADE_REFUND = "NOTPAY", "SUCCESS", "CLOSED", "REFUND"
TRADE_STATE_DESC = {NOTPAY: "订单未支付", TRADE_SUCCESS: "支付成功", TRADE_CLOSED: "订单已关闭", TRADE_REFUND: "转入退款"}
#: How a refund ends, in v3's words, and the same in v2's ``refund_status``.
REFUND_ENDINGS = {"SUCCESS": "SUCCESS", "ABNORMAL": "CHANGE", "CLOSED": "REFUNDCLOSE"}
REFUND_SUMMARIES = {"SUCCESS": "退款成功", "ABNORMAL": "退款异常", "CLOSED": "退款关闭"}
#: How far ahead v3 moves a ``time_expire`` that is too close ("系统将自动调整为下单时间后1分钟").
V3_MIN_PAY_WINDOW = 60
#: v3 refuses requests whose timestamp is this far from its clock.
PAY_V3_MAX_SKEW = 300
#: ``out_trade_no``, v2 and v3 alike: 6-32 of digits, letters and ``_-|*`` (v3 JSAPI/小程序下单; v2 统一下单).
OUT_TRADE_NO_RE = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
#: ``transaction_id``: WeChat's 28 digits; at most 32 characters of them accepted here.
TRANSACTION_ID_RE = re.compile(r"\d{1,32}")
OUT_REFUND_NO_RE = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")


@dataclass(frozen=True)
class PayMerchant:
    """The merchant account the sandbox's WeChat Pay serves, with the keys WeChat would hold."""

    mch_id: str
    api_key: str = field(repr=False)
    api_v3_key: str = field(repr=False)
    merchant_serial: str
    #: Checks the app's v3 Authorization headers (and lets tests check a v3 paySign).
    merchant_public_key: rsa.RSAPublicKey
    platform_serial: str
    #: Signs v3 answers and notifications, as WeChat's platform key does.
    platform_private_key: rsa.RSAPrivateKey = field(repr=False)
    #: Apps bound to the merchant; None accepts every app the sandbox knows.
    appids: frozenset[str] | None = None
    #: The WeChat Pay public key (微信支付公钥) WeChat holds for the merchant: its id and private half.
    public_key_id: str | None = None
    public_key_private_key: rsa.RSAPrivateKey | None = field(default=None, repr=False)
    #: Whether the merchant has platform certificates; merchants given only the public key have none.
    platform_certificates: bool = True
    #: What WeChat signs with unless a request names the public key: ``certificate`` or ``public_key``.
    signer: str = "certificate"


def pay_merchant_from_config(config: Mapping[str, Any]) -> PayMerchant:
    """The merchant the app's configuration describes, holding the sandbox's generated key pairs."""
    keys = ensure_sandbox_keys(sandbox_key_dir(config))
    appid = config.get("WECHAT_APPID")
    mode = v3_verify_mode(config)
    return PayMerchant(
        mch_id=config.get("WECHAT_PAY_MCH_ID") or SANDBOX_DEFAULTS["WECHAT_PAY_MCH_ID"],
        api_key=config.get("WECHAT_PAY_API_KEY") or SANDBOX_DEFAULTS["WECHAT_PAY_API_KEY"],
        api_v3_key=config.get("WECHAT_PAY_API_V3_KEY") or SANDBOX_DEFAULTS["WECHAT_PAY_API_V3_KEY"],
        merchant_serial=SANDBOX_MCH_SERIAL,
        merchant_public_key=load_public_key(keys.merchant_public),
        platform_serial=SANDBOX_PLATFORM_SERIAL,
        platform_private_key=load_private_key(keys.platform_private),
        appids=frozenset({appid}) if appid else None,
        public_key_id=SANDBOX_PUBLIC_KEY_ID,
        public_key_private_key=load_private_key(keys.wechatpay_public_key_private),
        platform_certificates=mode != "public_key",
        signer="public_key" if mode == "public_key" else "certificate",
    )


class PayFault(Exception):
    """A business refusal, in both APIs' words: v2 ``err_code``, v3 HTTP status and ``code``."""

    def __init__(self, v2_code: str, status: int, v3_code: str, message: str) -> None:
        super().__init__(f"{v3_code}: {message}")
        self.v2_code, self.status, self.v3_code, self.message = v2_code, status, v3_code, message

    @classmethod
    def param(cls, message: str) -> PayFault:
        return cls("PARAM_ERROR", 400, "PARAM_ERROR", message)

    @classmethod
    def missing(cls, name: str) -> PayFault:
        return cls("LACK_PARAMS", 400, "PARAM_ERROR", f"缺少参数{name}")


class _V2ReturnFail(Exception):
    """v2 could not even read the request: ``return_code`` FAIL, unsigned."""


class _V3Fault(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code, self.message = status, code, message


@dataclass
class PayOrder:
    out_trade_no: str
    appid: str
    openid: str
    total_fee: int
    description: str
    notify_url: str
    #: "v2" or "v3": the API of the latest prepay, and so the form of the order's notifications.
    api: str
    #: The v2 prepay's sign type; WeChat signs the order's v2 notifications the same way.
    sign_type: str
    prepay_id: str
    #: Epoch seconds after which the buyer can no longer pay; None: WeChat's default two hours.
    time_expire: float | None
    state: str = NOTPAY
    transaction_id: str | None = None
    paid_at: float | None = None


@dataclass
class PayRefund:
    out_refund_no: str
    out_trade_no: str
    refund_id: str
    refund_fee: int
    notify_url: str | None
    api: str
    created_at: float
    #: PROCESSING until ended by ``refund-complete``: SUCCESS, ABNORMAL or CLOSED.
    status: str = "PROCESSING"
    #: What the merchant gave as the reason (v2 ``refund_desc``, v3 ``reason``).
    reason: str = ""
    success_time: float | None = None
    #: Where an ABNORMAL refund was sent again (发起异常退款): USER_BANK_CARD or MERCHANT_BANK_CARD, with the
    #: bank and the card's last four digits as WeChat decrypted them.
    abnormal_target: dict[str, str] | None = None


def _digits(count: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(count))


def _china(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, CHINA_TZ)


def _rfc3339(epoch: float) -> str:
    return _china(epoch).replace(microsecond=0).isoformat()


def _merge(target: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` merged into ``target`` (nested dicts too); a None value deletes the key."""
    for key, value in overrides.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
    return target


def _v2_signature(fields: Mapping[str, Any], api_key: str, sign_type: str) -> str:
    unsigned = {k: v for k, v in fields.items() if k != "sign"}
    if sign_type == "HMAC-SHA256":
        return calculate_signature_hmac(unsigned, api_key)
    return calculate_signature(unsigned, api_key)


class PayState:
    """The merchant's orders and refunds at WeChat Pay, behind one lock."""

    def __init__(self, merchant: PayMerchant | None = None) -> None:
        self.lock = threading.RLock()
        self._merchant = merchant
        self.orders: dict[str, PayOrder] = {}
        self.refunds: dict[str, PayRefund] = {}
        #: The platform certificates, oldest first; made from the merchant's on first use.
        self._certificates: list[SandboxCertificate] | None = None
        #: ``certificate`` or ``public_key``; None: the merchant's ``signer``.
        self._signer: str | None = None

    @property
    def merchant(self) -> PayMerchant:
        """The merchant; without one given, the one the environment's configuration describes."""
        with self.lock:
            if self._merchant is None:
                self._merchant = pay_merchant_from_config(vars(Config()))
            return self._merchant

    def install(self, merchant: PayMerchant) -> None:
        """Serve ``merchant`` from now on (tests give the sandbox the keys their apps hold)."""
        with self.lock:
            self._merchant = merchant
            self._certificates = None
            self._signer = None

    # -- WeChat Pay's own keys ---------------------------------------------------------------------

    def certificates(self) -> list[SandboxCertificate]:
        """Every platform certificate issued to the merchant, oldest first (none for a public-key merchant)."""
        with self.lock:
            if self._certificates is None:
                merchant = self.merchant
                now = time.time()
                self._certificates = (
                    [issue_certificate(merchant.platform_private_key, merchant.platform_serial, now - 30 * 86400, now + 5 * 365 * 86400)]
                    if merchant.platform_certificates
                    else []
                )
            return list(self._certificates)

    def certificates_in_force(self, now: float | None = None) -> list[SandboxCertificate]:
        now = time.time() if now is None else now
        return [c for c in self.certificates() if c.effective <= now <= c.expires]

    def rotate_certificates(self, old_expires_in: float = 7 * 86400) -> SandboxCertificate:
        """WeChat issues a new platform certificate and signs with it from now on; the ones before it stay
        listed and valid until they expire, at the latest ``old_expires_in`` seconds from now."""
        with self.lock:
            held = self.certificates()
            now = time.time()
            merchant = self.merchant
            ended = [c if c.expires <= now + old_expires_in else c.reissued(expires=now + old_expires_in) for c in held]
            serial = f"{max(int(c.serial, 16) for c in held) + 1:040X}" if held else merchant.platform_serial
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            fresh = issue_certificate(key, serial, now - 60, now + 5 * 365 * 86400)
            self._certificates = ended + [fresh]
            return fresh

    def set_signer(self, signer: str) -> None:
        """Sign with the public key (``public_key``) or the newest platform certificate (``certificate``)."""
        if signer not in ("certificate", "public_key"):
            raise ValueError("signer is certificate or public_key")
        if signer == "public_key" and self.merchant.public_key_private_key is None:
            raise ValueError("the merchant has no WeChat Pay public key")
        with self.lock:
            self._signer = signer

    @property
    def signer(self) -> str:
        with self.lock:
            return self._signer or self.merchant.signer

    def signing_key(self, serial: str | None = None) -> tuple[str, rsa.RSAPrivateKey]:
        """The serial and private key WeChat signs with: the one ``serial`` names (a certificate or the public key);
        else the public key when the request named it in ``Wechatpay-Serial`` or the signer is the public key;
        else the newest platform certificate in force."""
        merchant = self.merchant
        if serial is None and has_request_context() and request.headers.get("Wechatpay-Serial") == merchant.public_key_id:
            serial = merchant.public_key_id
        if serial is None and self.signer == "public_key":
            serial = merchant.public_key_id
        if serial is not None:
            key = self.private_key_of(serial, in_force=False)
            if key is None:
                raise ValueError(f"no key {serial} to sign with")
            return serial, key
        in_force = self.certificates_in_force()
        if not in_force:
            raise ValueError("no platform certificate in force to sign with")
        newest = max(in_force, key=lambda c: c.effective)
        return newest.serial, newest.private_key

    def private_key_of(self, serial: str, *, in_force: bool = True) -> rsa.RSAPrivateKey | None:
        """The private half of the key ``serial`` names: the public key's, or a platform certificate's."""
        merchant = self.merchant
        if merchant.public_key_private_key is not None and serial == merchant.public_key_id:
            return merchant.public_key_private_key
        certificates = self.certificates_in_force() if in_force else self.certificates()
        return next((c.private_key for c in certificates if c.serial == serial), None)

    def certificate_list(self) -> dict[str, Any]:
        """``GET /v3/certificates``: the certificates not yet expired, each sealed with the APIv3 key."""
        aead = AESGCM(self.merchant.api_v3_key.encode("utf-8"))
        data = []
        for certificate in self.certificates():
            if certificate.expires < time.time():
                continue
            nonce = secrets.token_hex(6)
            sealed = aead.encrypt(nonce.encode("ascii"), certificate.pem.encode("ascii"), b"certificate")
            data.append(
                {
                    "serial_no": certificate.serial,
                    "effective_time": _rfc3339(certificate.effective),
                    "expire_time": _rfc3339(certificate.expires),
                    "encrypt_certificate": {
                        "algorithm": "AEAD_AES_256_GCM",
                        "nonce": nonce,
                        "associated_data": "certificate",
                        "ciphertext": base64.b64encode(sealed).decode("ascii"),
                    },
                }
            )
        return {"data": data}

    def reset(self) -> None:
        with self.lock:
            self.orders.clear()
            self.refunds.clear()

    def order(self, out_trade_no: str) -> PayOrder:
        with self.lock:
            found = self.orders.get(out_trade_no)
        if found is None:
            raise PayFault("ORDERNOTEXIST", 404, "ORDER_NOT_EXIST", "订单不存在")
        return found

    def open_order(
        self,
        *,
        out_trade_no: str,
        appid: str,
        openid: str,
        total_fee: int,
        description: str,
        notify_url: str,
        api: str,
        sign_type: str = "MD5",
        time_expire: float | None = None,
    ) -> PayOrder:
        """A prepay: a new order, or the same one again when nothing but the notify URL changed."""
        with self.lock:
            existing = self.orders.get(out_trade_no)
            if existing is not None:
                if existing.state in (TRADE_SUCCESS, TRADE_REFUND):
                    raise PayFault("ORDERPAID", 400, "ORDERPAID", "该订单已支付")
                if existing.state == TRADE_CLOSED:
                    raise PayFault("ORDERCLOSED", 400, "ORDER_CLOSED", "订单已关闭")
                if (existing.appid, existing.openid, existing.total_fee) != (appid, openid, total_fee):
                    raise PayFault("INVALID_REQUEST", 403, "OUT_TRADE_NO_USED", "201 商户订单号重复")
                existing.api, existing.sign_type, existing.notify_url = api, sign_type, notify_url
                existing.time_expire = time_expire or existing.time_expire
                return existing
            order = PayOrder(
                out_trade_no=out_trade_no,
                appid=appid,
                openid=openid,
                total_fee=total_fee,
                description=description,
                notify_url=notify_url,
                api=api,
                sign_type=sign_type,
                prepay_id=f"wx{time.strftime('%d%H%M%S')}{secrets.token_hex(13)}",
                time_expire=time_expire or time.time() + 7200,
            )
            self.orders[out_trade_no] = order
            return order

    def pay(self, out_trade_no: str) -> PayOrder:
        """The buyer pays: the order is SUCCESS from now on (paying twice changes nothing)."""
        with self.lock:
            order = self.order(out_trade_no)
            if order.state in (TRADE_SUCCESS, TRADE_REFUND):
                return order
            if order.state == TRADE_CLOSED or (order.time_expire is not None and order.time_expire <= time.time()):
                raise PayFault("ORDERCLOSED", 400, "ORDER_CLOSED", "订单已关闭")
            order.state = TRADE_SUCCESS
            order.transaction_id = "42000" + _digits(5) + time.strftime("%Y%m%d") + _digits(10)
            order.paid_at = time.time()
            return order

    def close(self, out_trade_no: str) -> None:
        with self.lock:
            order = self.order(out_trade_no)
            if order.state in (TRADE_SUCCESS, TRADE_REFUND):
                raise PayFault("ORDERPAID", 400, "ORDERPAID", "订单已支付，不能发起关单")
            if order.state == TRADE_CLOSED:
                raise PayFault("ORDERCLOSED", 400, "ORDER_CLOSED", "订单已关闭，无法重复关闭")
            order.state = TRADE_CLOSED

    def find_order(self, out_trade_no: str | None, transaction_id: str | None) -> PayOrder | None:
        """The order named by ``transaction_id`` (WeChat prefers it when both come) or ``out_trade_no``."""
        with self.lock:
            if transaction_id:
                return next((o for o in self.orders.values() if o.transaction_id == transaction_id), None)
            return self.orders.get(out_trade_no or "")

    def open_refund(
        self,
        *,
        out_trade_no: str | None,
        out_refund_no: str,
        total_fee: int,
        refund_fee: int,
        notify_url: str | None,
        api: str,
        transaction_id: str | None = None,
        reason: str = "",
    ) -> PayRefund:
        """A refund request for the order named by either id: idempotent on ``out_refund_no``, never more than what was paid."""
        with self.lock:
            order = self.find_order(out_trade_no, transaction_id)
            if order is None:
                raise PayFault("ORDERNOTEXIST", 404, "RESOURCE_NOT_EXISTS", "订单不存在")
            out_trade_no = order.out_trade_no
            if order.state not in (TRADE_SUCCESS, TRADE_REFUND):
                raise PayFault("INVALID_REQUEST", 400, "INVALID_REQUEST", "订单未支付")
            if total_fee != order.total_fee:
                raise PayFault("INVALID_REQUEST", 400, "INVALID_REQUEST", "订单金额与实际支付金额不一致")
            existing = self.refunds.get(out_refund_no)
            if existing is not None:
                if (existing.out_trade_no, existing.refund_fee) != (out_trade_no, refund_fee):
                    raise PayFault("INVALID_REQUEST", 400, "INVALID_REQUEST", "请求参数与之前的退款请求不一致")
                return existing
            taken = sum(r.refund_fee for r in self.refunds.values() if r.out_trade_no == out_trade_no and r.status != "CLOSED")
            if refund_fee <= 0 or taken + refund_fee > order.total_fee:
                raise PayFault("INVALID_REQUEST", 400, "INVALID_REQUEST", "退款金额大于订单可退金额")
            refund = PayRefund(
                out_refund_no=out_refund_no,
                out_trade_no=out_trade_no,
                refund_id="50300" + _digits(5) + time.strftime("%Y%m%d") + _digits(10),
                refund_fee=refund_fee,
                notify_url=notify_url,
                api=api,
                created_at=time.time(),
                reason=reason,
            )
            self.refunds[out_refund_no] = refund
            order.state = TRADE_REFUND
            return refund

    def resend_abnormal(self, refund_id: str, out_refund_no: str, target: dict[str, str]) -> PayRefund:
        """发起异常退款: an ABNORMAL refund goes out again, to ``target``; it is PROCESSING until ended."""
        with self.lock:
            refund = self.refunds.get(out_refund_no)
            if refund is None or refund.refund_id != refund_id:
                raise PayFault("REFUNDNOTEXIST", 404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            if refund.status != "ABNORMAL":
                raise PayFault("INVALID_REQUEST", 400, "INVALID_REQUEST", "退款单状态不是退款异常，无法发起异常退款")
            refund.status, refund.abnormal_target = "PROCESSING", target
            return refund

    def refund(self, out_refund_no: str) -> PayRefund:
        with self.lock:
            found = self.refunds.get(out_refund_no)
        if found is None:
            raise PayFault("REFUNDNOTEXIST", 404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return found

    def end_refund(self, out_refund_no: str, status: str = "SUCCESS") -> PayRefund:
        """WeChat finishes a refund: SUCCESS, ABNORMAL (the card refused it) or CLOSED."""
        if status not in REFUND_ENDINGS:
            raise ValueError(f"status must be one of {', '.join(REFUND_ENDINGS)}")
        with self.lock:
            refund = self.refund(out_refund_no)
            if refund.status == "PROCESSING":
                refund.status = status
                refund.success_time = time.time() if status == "SUCCESS" else None
            return refund

    # -- notifications -------------------------------------------------------------------------

    def build_pay_notification(
        self,
        out_trade_no: str,
        *,
        api: str | None = None,
        sign_type: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        serial: str | None = None,
        sign_with: str | None = None,
        tamper_ciphertext: bool = False,
        literals: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """The payment notification WeChat would send for ``out_trade_no`` (paying it first if need be).

        ``overrides`` change the v2 fields, or the v3 resource before encryption, and are signed
        like the rest; ``timestamp``/``serial`` set the v3 headers (signed too), ``sign_with`` names the key that signs;
        ``tamper_ciphertext`` corrupts the v3 ciphertext and then signs the result; ``literals``
        (v3) writes a string value equal to one of its keys as that key's JSON text instead.
        """
        order = self.pay(out_trade_no)
        api = api or order.api
        if api == "v2":
            fields: dict[str, Any] = {
                "appid": order.appid,
                "bank_type": "OTHERS",
                "cash_fee": str(order.total_fee),
                "fee_type": "CNY",
                "is_subscribe": "N",
                "mch_id": self.merchant.mch_id,
                "nonce_str": secrets.token_hex(16),
                "openid": order.openid,
                "out_trade_no": order.out_trade_no,
                "result_code": "SUCCESS",
                "return_code": "SUCCESS",
                "time_end": _china(order.paid_at or time.time()).strftime("%Y%m%d%H%M%S"),
                "total_fee": str(order.total_fee),
                "trade_type": "JSAPI",
                "transaction_id": order.transaction_id,
            }
            return self._v2_notification(fields, sign_type or order.sign_type, overrides)
        resource = {
            "mchid": self.merchant.mch_id,
            "appid": order.appid,
            "out_trade_no": order.out_trade_no,
            "transaction_id": order.transaction_id,
            "trade_type": "JSAPI",
            "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功",
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": _rfc3339(order.paid_at or time.time()),
            "payer": {"openid": order.openid},
            "amount": {"total": order.total_fee, "payer_total": order.total_fee, "currency": "CNY", "payer_currency": "CNY"},
        }
        return self.build_v3_notification(
            "TRANSACTION.SUCCESS", "支付成功", "transaction", _merge(resource, overrides or {}),
            timestamp=timestamp, serial=serial, sign_with=sign_with, tamper_ciphertext=tamper_ciphertext, literals=literals,
        )

    def build_refund_notification(
        self,
        out_refund_no: str,
        *,
        status: str = "SUCCESS",
        api: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        serial: str | None = None,
        sign_with: str | None = None,
        tamper_ciphertext: bool = False,
        literals: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """The refund notification WeChat would send once ``out_refund_no`` ends with ``status`` (options as above)."""
        refund = self.end_refund(out_refund_no, status)
        order = self.order(refund.out_trade_no)
        api = api or refund.api
        if api == "v2":
            info: dict[str, Any] = {
                "transaction_id": order.transaction_id,
                "out_trade_no": order.out_trade_no,
                "refund_id": refund.refund_id,
                "out_refund_no": refund.out_refund_no,
                "total_fee": str(order.total_fee),
                "settlement_total_fee": str(order.total_fee),
                "refund_fee": str(refund.refund_fee),
                "settlement_refund_fee": str(refund.refund_fee),
                "refund_status": REFUND_ENDINGS[refund.status],
                "success_time": _china(refund.success_time).strftime("%Y-%m-%d %H:%M:%S") if refund.success_time else None,
                "refund_recv_accout": "支付用户的零钱",
                "refund_account": "REFUND_SOURCE_RECHARGE_FUNDS",
                "refund_request_source": "API",
            }
            _merge(info, overrides or {})
            inner = "<root>" + "".join(f"<{k}>{_cdata(str(v))}</{k}>" for k, v in info.items()) + "</root>"
            padder = sym_padding.PKCS7(128).padder()
            padded = padder.update(inner.encode("utf-8")) + padder.finalize()
            key = hashlib.md5(self.merchant.api_key.encode("utf-8")).hexdigest().encode("ascii")
            encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
            req_info = base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")
            fields = {
                "return_code": "SUCCESS",
                "appid": order.appid,
                "mch_id": self.merchant.mch_id,
                "nonce_str": secrets.token_hex(16),
                "req_info": req_info,
            }
            body = dict_to_xml(fields).encode("utf-8")
            return {"Content-Type": "text/xml"}, body
        resource = {
            "mchid": self.merchant.mch_id,
            "out_trade_no": order.out_trade_no,
            "transaction_id": order.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "user_received_account": "支付用户零钱",
            "amount": {"total": order.total_fee, "refund": refund.refund_fee, "payer_total": order.total_fee, "payer_refund": refund.refund_fee},
        }
        if refund.success_time:
            resource["success_time"] = _rfc3339(refund.success_time)
        return self.build_v3_notification(
            f"REFUND.{refund.status}", REFUND_SUMMARIES[refund.status], "refund", _merge(resource, overrides or {}),
            timestamp=timestamp, serial=serial, sign_with=sign_with, tamper_ciphertext=tamper_ciphertext, literals=literals,
        )

    def _v2_notification(self, fields: dict[str, Any], sign_type: str, overrides: Mapping[str, Any] | None) -> tuple[dict[str, str], bytes]:
        # As WeChat sends it: signed the way the prepay was, with no sign_type element either way
        # (an override may add one, to test a notification that names its type).
        _merge(fields, overrides or {})
        sign = fields.pop("sign", None) or _v2_signature(fields, self.merchant.api_key, sign_type)
        return {"Content-Type": "text/xml"}, dict_to_xml(fields, sign).encode("utf-8")

    def build_v3_notification(
        self,
        event_type: str,
        summary: str,
        original_type: str,
        resource: dict[str, Any],
        *,
        timestamp: int | None = None,
        serial: str | None = None,
        sign_with: str | None = None,
        tamper_ciphertext: bool = False,
        literals: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Any v3 notification: ``resource`` encrypted with the APIv3 key, the whole signed with the platform key.

        ``literals`` maps a placeholder string value to the JSON text written in its place, for
        what ``json.dumps`` cannot write (``1e400``) or writes its own way.
        """
        nonce = secrets.token_urlsafe(9)[:12]
        plaintext = json.dumps(resource, ensure_ascii=False)
        for placeholder, text in (literals or {}).items():
            plaintext = plaintext.replace(json.dumps(placeholder, ensure_ascii=False), text)
        sealed = AESGCM(self.merchant.api_v3_key.encode("utf-8")).encrypt(
            nonce.encode("ascii"), plaintext.encode("utf-8"), original_type.encode("ascii")
        )
        if tamper_ciphertext:
            sealed = bytes([sealed[0] ^ 0x01]) + sealed[1:]
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": _rfc3339(time.time()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode("ascii"),
                "associated_data": original_type,
                "nonce": nonce,
            },
        }
        body = json.dumps(envelope, ensure_ascii=False).encode("utf-8")
        headers = self.v3_headers(body, timestamp, sign_with=sign_with)
        if serial is not None:
            headers["Wechatpay-Serial"] = serial
        headers["Content-Type"] = "application/json"
        return headers, body

    def v3_headers(self, body: bytes, timestamp: int | None = None, *, sign_with: str | None = None) -> dict[str, str]:
        """The Wechatpay-* headers that make ``body`` a message from WeChat Pay (see ``signing_key``)."""
        stamp, nonce = str(int(time.time()) if timestamp is None else timestamp), secrets.token_hex(16)
        message = f"{stamp}\n{nonce}\n".encode("ascii") + body + b"\n"
        serial, key = self.signing_key(sign_with)
        signature = key.sign(message, asym_padding.PKCS1v15(), hashes.SHA256())
        return {
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": base64.b64encode(signature).decode("ascii"),
            "Wechatpay-Serial": serial,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        }


def pay_state() -> PayState:
    """The WeChat Pay state of the sandbox app handling the current request."""
    return current_app.extensions["sandbox_pay"]


def install_pay_merchant(app: Flask, merchant: PayMerchant) -> None:
    """Make the sandbox ``app`` serve ``merchant``: the keys and ids the app under test holds."""
    app.extensions["sandbox_pay"].install(merchant)


def build_pay_notification(app: Flask, out_trade_no: str, **options: Any) -> tuple[dict[str, str], bytes]:
    """``PayState.build_pay_notification`` of the sandbox ``app``: (headers, body) to POST to the notify URL."""
    return app.extensions["sandbox_pay"].build_pay_notification(out_trade_no, **options)


def build_refund_notification(app: Flask, out_refund_no: str, **options: Any) -> tuple[dict[str, str], bytes]:
    """``PayState.build_refund_notification`` of the sandbox ``app``."""
    return app.extensions["sandbox_pay"].build_refund_notification(out_refund_no, **options)


def send_notification(url: str, headers: Mapping[str, str], body: bytes, api: str) -> dict[str, Any]:
    """POST a notification as WeChat does; ``ok`` is whether WeChat would count the answer as received."""
    try:
        response = requests.post(url, data=body, headers=dict(headers), timeout=PUSH_TIMEOUT)
    except requests.RequestException as exc:
        return {"status": None, "body": None, "ok": False, "error": f"notify URL unreachable: {type(exc).__name__}"}
    text = response.content.decode("utf-8", errors="replace")
    if api == "v3":
        ok = response.status_code in (200, 204)
        return {"status": response.status_code, "body": text, "ok": ok, "error": None if ok else f"HTTP {response.status_code}"}
    try:
        return_code = parse_v2_xml(response.content).get("return_code") if response.status_code == 200 else None
    except ValueError:
        return_code = None
    ok = return_code == "SUCCESS"
    return {"status": response.status_code, "body": text, "ok": ok, "error": None if ok else "answer is not return_code SUCCESS"}


def _check_appid(appid: Any) -> str:
    merchant = pay_state().merchant
    if not isinstance(appid, str) or appid not in state().apps or (merchant.appids is not None and appid not in merchant.appids):
        raise PayFault("APPID_MCHID_NOT_MATCH", 400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
    return appid


def _check_openid(appid: str, openid: Any) -> str:
    """``openid`` if the sandbox issued it for ``appid``; WeChat's OPENID_MISMATCH otherwise."""
    if not isinstance(openid, str) or state().app_of_openid(openid) != appid:
        raise PayFault("OPENID_MISMATCH", 400, "PARAM_ERROR", "appid和openid不匹配")
    return openid


def _check_text(value: Any, name: str, limit: int, unit: str) -> None:
    """A free-text field within WeChat's limit, counted in ``unit`` ("bytes" of UTF-8 or "chars")."""
    if value is None:
        return
    if not isinstance(value, str):
        raise PayFault.param(f"{name}参数格式错误")
    if (len(value.encode("utf-8")) if unit == "bytes" else len(value)) > limit:
        raise PayFault.param(f"{name}参数长度有误")


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PayFault.param(f"{name}参数格式错误") from None
    if isinstance(value, bool) or number <= 0 or str(number) != str(value).strip():
        raise PayFault.param(f"{name}参数格式错误")
    return number


def _notify_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or "?" in value or len(value) > 256:
        raise PayFault.param("notify_url参数格式错误，需为不带参数的完整URL")
    return value


def _out_trade_no(value: Any) -> str:
    if not isinstance(value, str) or not OUT_TRADE_NO_RE.fullmatch(value):
        raise PayFault.param("out_trade_no参数格式错误")
    return value
