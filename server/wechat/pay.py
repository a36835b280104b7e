"""WeChat Pay adapters: v2 (XML, signed with the API key, through wechatpy) and v3 (JSON, RSA and AES-GCM).

``WeChatPayGateway`` holds whichever versions the merchant configured and the one new
prepays use (``WECHAT_PAY_API``); an order keeps the version it was prepaid through, so
its query, close and refund go the same way. Nothing here knows whether
``WECHAT_PAY_API_BASE`` is WeChat or the sandbox, and nothing here decides what a
payment means for an order: that is ``server.orders.payments``.

v3 verifies WeChat Pay with the platform certificates it downloads or the WeChat Pay public key
(``server.wechat.pay_keys``), whichever key each message's ``Wechatpay-Serial`` names.

Secrets never reach a log: not the API keys, not signatures, not decrypted notifications.
wechatpy logs its signing input (API key included) and raw XML at DEBUG, so its pay
loggers are muted below WARNING.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import string
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol
from urllib.parse import quote, urlencode, urlsplit
from xml.parsers.expat import ExpatError

import requests
import xmltodict
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpy.exceptions import WeChatPayException
from wechatpy.pay import WeChatPay

from server import metrics
from server.wechat.client import WeChatError, WeChatUnavailableError, with_label
from server.wechat.pay_keys import (
    CACHE_SECONDS,
    REFRESH_INTERVAL,
    VERIFY_MODES,
    PayKeyRing,
    PlatformCertificate,
    certificate_from_pem,
    pinned_key,
    rfc3339_seconds,
)

logger = logging.getLogger(__name__)

#: Where WeChat Pay lives unless ``WECHAT_PAY_API_BASE`` says otherwise.
PRODUCTION_PAY_BASE = "https://api.mch.weixin.qq.com/"
API_VERSIONS = ("v2", "v3")
V2_SIGN_TYPES = ("MD5", "HMAC-SHA256")
#: The scheme of a v3 request's Authorization header.
V3_AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
#: A v3 message (answer or notification) whose timestamp is further than this from now is refused.
V3_MAX_CLOCK_SKEW = 300
V3_API_KEY_LENGTH = 32

# WeChat's limits on free text, each in the unit WeChat counts it in (v2 ``String(n)`` is UTF-8
# bytes; v3 says per field). Sources: pay.weixin.qq.com v2 统一下单 and 申请退款 (doc/v2/merchant/
# 4011940985), v3 JSAPI/小程序下单 and 申请退款 (docs/merchant/products/mini-program-payment/apilist,
# docs/merchant/products/refund/apilist).
#: v2 unifiedorder ``body``: String(127), UTF-8 bytes.
V2_BODY_MAX_BYTES = 127
#: v2 unifiedorder ``attach``: String(127), UTF-8 bytes.
V2_ATTACH_MAX_BYTES = 127
#: v2 unifiedorder ``detail``: String(6000), UTF-8 bytes.
V2_DETAIL_MAX_BYTES = 6000
#: v2 refund ``refund_desc``: String(80), UTF-8 bytes.
V2_REFUND_DESC_MAX_BYTES = 80
#: v3 JSAPI ``description``: string(127), characters ("不能超过127个字符").
V3_DESCRIPTION_MAX_CHARS = 127
#: v3 JSAPI ``attach``: string(128), characters ("总长度限制在128字符").
V3_ATTACH_MAX_CHARS = 128
#: v3 refund ``reason``: string(80), UTF-8 bytes ("不得超过80个字节").
V3_REASON_MAX_BYTES = 80

#: The shortest ``time_expire`` window WeChat Pay accepts: v2 refuses anything up to five minutes
#: from the call (err_code_des "time_expire时间过短，刷卡至少1分钟，其他5分钟"; exactly five is refused too).
WECHAT_MIN_PAY_WINDOW = timedelta(minutes=5)
#: Slack on top of the minimum for clock skew between us and WeChat and the request's own time.
PAY_WINDOW_MARGIN = timedelta(minutes=1)
#: The shortest window the adapters send; a shorter one raises PayWindowTooShortError instead.
SAFE_MIN_PAY_WINDOW = WECHAT_MIN_PAY_WINDOW + PAY_WINDOW_MARGIN
#: The largest amount, in fen, believed from a notification (10^12 fen is ten billion yuan).
MAX_NOTIFIED_FEN = 10**12
#: Beijing time, in which v2 writes every time (``yyyyMMddHHmmss``) and v3 offsets its RFC 3339 times.
CHINA_TZ = timezone(timedelta(hours=8))

#: Error codes meaning the same thing in both versions; compare ``WeChatPayError.code`` against them.
ORDER_NOT_FOUND_CODES = frozenset({"ORDERNOTEXIST", "ORDER_NOT_EXIST", "RESOURCE_NOT_EXISTS"})
ORDER_CLOSED_CODES = frozenset({"ORDERCLOSED", "ORDER_CLOSED"})
ORDER_PAID_CODES = frozenset({"ORDERPAID"})
#: How v3 may pay out an ABNORMAL refund again: the buyer's debit card, or the merchant's bank account.
ABNORMAL_REFUND_TARGETS = frozenset({"USER_BANK_CARD", "MERCHANT_BANK_CARD"})
#: v2 business errors worth a retry: WeChat's side is busy or broken.
_V2_RETRYABLE = frozenset({"SYSTEMERROR", "BANKERROR", "FREQUENCY_LIMITED", "FREQ_LIMIT"})

_NONCE_ALPHABET = string.ascii_uppercase + string.digits


class WeChatPayError(WeChatError):
    """WeChat Pay refused the call; ``code`` is its error code (``ORDERPAID``, ``PARAM_ERROR``, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(None, f"{code}: {message}")
        self.code = code

    @property
    def metrics_label(self) -> str:
        return metrics.pay_code_label(self.code)


class PayWindowTooShortError(WeChatError):
    """A prepay's ``time_expire`` is closer than ``SAFE_MIN_PAY_WINDOW``: WeChat would refuse it, so it is not sent."""

    def __init__(self, time_expire: datetime, now: datetime) -> None:
        seconds = int((time_expire - now).total_seconds())
        super().__init__(None, f"time_expire is {seconds}s away; WeChat Pay needs more than {int(SAFE_MIN_PAY_WINDOW.total_seconds())}s")
        self.time_expire = time_expire


class PayNotConfiguredError(WeChatError):
    """The merchant has not configured the WeChat Pay API version this needs."""


class InvalidNotificationError(WeChatError):
    """A notification that is forged, stale, garbled or meant for another merchant: never to be applied."""

    def __init__(self, reason: str) -> None:
        super().__init__(None, reason)
        self.reason = reason


@dataclass(frozen=True)
class QueryResult:
    """What an order query says: ``trade_state`` is SUCCESS, REFUND, NOTPAY, CLOSED, REVOKED, USERPAYING or PAYERROR."""

    trade_state: str
    #: Only once paid.
    transaction_id: str | None
    #: Fen; v2 gives it only once paid.
    total_fee: int | None


@dataclass(frozen=True)
class RefundQueryResult:
    """What a refund query says. ``status`` in WeChat's words: SUCCESS, PROCESSING, and v3 ABNORMAL / CLOSED
    or v2 CHANGE / REFUNDCLOSE."""

    status: str
    refund_id: str | None
    refund_fee: int | None


@dataclass(frozen=True)
class PayNotice:
    """A verified payment notification."""

    api: str
    out_trade_no: str
    transaction_id: str
    total_fee: int
    #: False for a v2 notification with ``result_code`` FAIL: verified, but no money moved.
    succeeded: bool
    openid: str | None = None


@dataclass(frozen=True)
class RefundNotice:
    """A verified refund notification."""

    api: str
    out_trade_no: str
    out_refund_no: str
    refund_id: str
    refund_fee: int
    #: The order's total as WeChat knows it, to check against ours.
    total_fee: int | None
    #: SUCCESS, or what ended it otherwise: v2 CHANGE / REFUNDCLOSE, v3 ABNORMAL / CLOSED.
    status: str

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"


@dataclass(frozen=True)
class IgnoredNotice:
    """A verified v3 notification of a kind the app does not act on; acknowledged so WeChat stops resending."""

    event_type: str


_muted = False
_mute_guard = threading.Lock()


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def mute_wechatpy_pay_logs() -> None:
    """Drop wechatpy's pay DEBUG lines: they carry the API key (signing input), signatures and raw XML."""
    global _muted
    with _mute_guard:
        if not _muted:
            for name in ("wechatpy.pay", "wechatpy.pay.utils", "wechatpy.pay.api.jsapi"):
                logging.getLogger(name).addFilter(_BelowWarning())
            _muted = True


def nonce_str(length: int = 32) -> str:
    """A random string of capitals and digits, WeChat's ``nonce_str``."""
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


def clip_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, never through a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def china_time(value: datetime) -> datetime:
    return value.astimezone(CHINA_TZ)


def check_pay_window(time_expire: datetime | None, now: datetime | None = None) -> None:
    """PayWindowTooShortError unless ``time_expire`` is absent or at least ``SAFE_MIN_PAY_WINDOW`` away."""
    if time_expire is None:
        return
    now = now or datetime.now(timezone.utc)
    if time_expire - now < SAFE_MIN_PAY_WINDOW:
        raise PayWindowTooShortError(time_expire, now)


def _json_object(value: Any) -> dict[str, Any]:
    """A JSON object of WeChat's answer, or {} when the field is missing or not an object."""
    return value if isinstance(value, dict) else {}


def notified_fen(value: Any, name: str) -> int:
    """An amount from a v3 notification: a JSON integer in 1..MAX_NOTIFIED_FEN, else InvalidNotificationError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NOTIFIED_FEN:
        raise InvalidNotificationError(f"{name} is not an amount in fen")
    return value


def notified_v2_fen(value: Any, name: str, minimum: int = 1) -> int:
    """An amount from a v2 notification: ASCII digits only, in minimum..MAX_NOTIFIED_FEN, else InvalidNotificationError."""
    if not isinstance(value, str) or not 1 <= len(value) <= 13 or not value.isascii() or not value.isdigit():
        raise InvalidNotificationError(f"{name} is not an amount in fen")
    number = int(value)
    if not minimum <= number <= MAX_NOTIFIED_FEN:
        raise InvalidNotificationError(f"{name} is not an amount in fen")
    return number


def _strict_json(text: bytes) -> Any:
    """JSON without NaN or Infinity (Python reads them by default; WeChat never sends them)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -- v2 ---------------------------------------------------------------------------------------


def v2_sign(params: Mapping[str, Any], api_key: str, sign_type: str = "MD5") -> str:
    """The v2 signature: non-empty fields but ``sign`` sorted as ``k=v&…&key=API_KEY``, MD5 or HMAC-SHA256, in capitals."""
    pairs = [f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] not in (None, "")]
    message = ("&".join(pairs) + f"&key={api_key}").encode("utf-8")
    if sign_type == "HMAC-SHA256":
        return hmac.new(api_key.encode("utf-8"), message, hashlib.sha256).hexdigest().upper()
    if sign_type == "MD5":
        return hashlib.md5(message).hexdigest().upper()
    raise ValueError(f"unknown v2 sign type {sign_type!r}")


def v2_signature_matches(params: Mapping[str, Any], api_key: str, sign_type: str) -> bool:
    given = params.get("sign")
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.upper().encode("ascii", "replace"), v2_sign(params, api_key, sign_type).encode("ascii"))


def parse_v2_xml(data: bytes | str, root: str = "xml") -> dict[str, Any]:
    """A flat v2 XML document as a dict of strings; ValueError for anything else."""
    try:
        document = xmltodict.parse(data, disable_entities=True)
    except (ExpatError, ValueError, TypeError) as exc:
        raise ValueError("not XML") from exc
    body = document.get(root) if isinstance(document, dict) else None
    if not isinstance(body, dict):
        raise ValueError(f"no <{root}> element")
    return {k: v for k, v in body.items() if isinstance(v, str) or v is None}


def v2_reply(ok: bool, msg: str = "OK") -> str:
    """The answer WeChat expects from a v2 notify URL: SUCCESS stops the resends, FAIL asks for them."""
    text = msg.replace("]]>", "]]]]><![CDATA[>")
    code = "SUCCESS" if ok else "FAIL"
    return f"<xml><return_code><![CDATA[{code}]]></return_code><return_msg><![CDATA[{text}]]></return_msg></xml>"


def v2_refund_key(api_key: str) -> bytes:
    """The AES-256 key of a refund notification's ``req_info``: the lowercase hex MD5 of the API key."""
    return hashlib.md5(api_key.encode("utf-8")).hexdigest().lower().encode("ascii")


def decrypt_req_info(req_info: str, api_key: str) -> bytes:
    """``req_info``: base64, then AES-256-ECB with PKCS#7 padding."""
    try:
        data = base64.b64decode(req_info, validate=True)
    except ValueError as exc:
        raise InvalidNotificationError("req_info is not base64") from exc
    if not data or len(data) % 16:
        raise InvalidNotificationError("req_info is not whole AES blocks")
    decryptor = Cipher(algorithms.AES(v2_refund_key(api_key)), modes.ECB()).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise InvalidNotificationError("req_info does not decrypt with this merchant's key") from None


@contextlib.contextmanager
def _counted(path: str) -> Iterator[None]:
    """Count one WeChat Pay call to ``path`` (ids in it become ``{id}``) by how it ended, and time an answered one."""
    began = time.perf_counter()
    try:
        yield
    except WeChatError as error:
        answered = error.label not in ("timeout", "network")
        metrics.count_wechat(path, error.metrics_label, time.perf_counter() - began if answered else None)
        raise
    metrics.count_wechat(path, "0", time.perf_counter() - began)


class _V2Client(WeChatPay):
    """wechatpy's pay client on ``api_base``, whose answers must carry a valid signature (wechatpy never checks)."""

    def __init__(self, *, api_base: str, sign_type: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # An instance attribute, so a sandbox client and a production client can share a process.
        self.API_BASE_URL = api_base
        self.sign_type = sign_type

    def _handle_result(self, res: requests.Response) -> dict[str, Any]:
        path = urlsplit(res.url or "").path.lstrip("/")
        try:
            data = parse_v2_xml(res.content)
        except ValueError:
            raise with_label(WeChatUnavailableError(None, f"{path}: answer is not XML"), "not_xml") from None
        if data.get("return_code") != "SUCCESS":
            # Unsigned by design: WeChat could not even read the request (bad signature, bad XML).
            raise WeChatPayError(str(data.get("return_code") or "FAIL"), str(data.get("return_msg") or ""))
        if not v2_signature_matches(data, self.api_key, self.sign_type):
            raise with_label(WeChatUnavailableError(None, f"{path}: answer's signature does not verify"), "bad_signature")
        if data.get("result_code") != "SUCCESS":
            code = str(data.get("err_code") or "FAIL")
            message = str(data.get("err_code_des") or "")
            if code in _V2_RETRYABLE:
                raise with_label(WeChatUnavailableError(None, f"{path}: {code} {message}"), metrics.pay_code_label(code))
            raise WeChatPayError(code, message)
        return data


class PayV2:
    """WeChat Pay v2 for one merchant and one appid: XML over HTTPS, signed with the API key."""

    api = "v2"

    def __init__(
        self,
        *,
        appid: str,
        mch_id: str,
        api_key: str,
        api_base: str = PRODUCTION_PAY_BASE,
        sign_type: str = "HMAC-SHA256",
        mch_cert: str | None = None,
        mch_key: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if sign_type not in V2_SIGN_TYPES:
            raise ValueError(f"WECHAT_PAY_V2_SIGN_TYPE must be one of {', '.join(V2_SIGN_TYPES)}")
        mute_wechatpy_pay_logs()
        self.appid = appid
        self.mch_id = mch_id
        self.sign_type = sign_type
        self._api_key = api_key
        self._client = _V2Client(
            api_base=api_base if api_base.endswith("/") else api_base + "/",
            sign_type=sign_type,
            appid=appid,
            api_key=api_key,
            mch_id=mch_id,
            # The refund API (secapi) wants the merchant's client certificate; wechatpy sends it on every call.
            mch_cert=mch_cert or None,
            mch_key=mch_key or None,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"PayV2(appid={self.appid!r}, mch_id={self.mch_id!r}, sign_type={self.sign_type!r})"

    def close(self) -> None:
        self._client._http.close()

    def _call(self, endpoint: str, data: dict[str, Any]) -> dict[str, Any]:
        """One v2 exchange, counted in the metrics by endpoint and error code."""
        data = {"appid": self.appid, **data}
        if self.sign_type != "MD5":
            data["sign_type"] = self.sign_type
        with _counted(endpoint):
            try:
                return self._client.post(endpoint, data=data)
            except requests.Timeout:
                raise with_label(WeChatUnavailableError(None, f"{endpoint}: timed out"), "timeout") from None
            except requests.RequestException as exc:
                raise with_label(WeChatUnavailableError(None, f"{endpoint}: {type(exc).__name__}"), "network") from None
            except WeChatPayException as exc:  # raised by wechatpy for an HTTP error status
                status = exc.response.status_code if exc.response is not None else None
                raise with_label(WeChatUnavailableError(None, f"{endpoint}: HTTP {status}"), f"http_{status // 100}xx" if status else "network") from None

    def unified_order(
        self,
        out_trade_no: str,
        total_fee: int,
        openid: str,
        body: str,
        notify_url: str,
        client_ip: str,
        time_expire: datetime | None = None,
    ) -> str:
        """A JSAPI prepay (``pay/unifiedorder``); returns the ``prepay_id``.

        PayWindowTooShortError, without a call, for a ``time_expire`` WeChat would refuse.
        """
        check_pay_window(time_expire)
        data: dict[str, Any] = {
            # wechatpy writes text into CDATA sections without escaping their terminator.
            "body": clip_utf8(body.replace("]]>", "]] >"), V2_BODY_MAX_BYTES) or out_trade_no,
            "out_trade_no": out_trade_no,
            "total_fee": int(total_fee),
            "spbill_create_ip": client_ip,
            "notify_url": notify_url,
            "trade_type": "JSAPI",
            "openid": openid,
        }
        if time_expire is not None:
            data["time_expire"] = china_time(time_expire).strftime("%Y%m%d%H%M%S")
        result = self._call("pay/unifiedorder", data)
        prepay_id = result.get("prepay_id")
        if not prepay_id:
            raise WeChatUnavailableError(None, "pay/unifiedorder: answer lacks prepay_id")
        return str(prepay_id)

    def jsapi_params(self, prepay_id: str) -> dict[str, str]:
        """What ``wx.requestPayment`` takes, signed with the API key (the signature covers ``appId`` too)."""
        params = {
            "appId": self.appid,
            "timeStamp": str(int(time.time())),
            "nonceStr": nonce_str(),
            "package": f"prepay_id={prepay_id}",
            "signType": self.sign_type,
        }
        signature = v2_sign(params, self._api_key, self.sign_type)
        params.pop("appId")
        return params | {"paySign": signature}

    def order_query(self, out_trade_no: str) -> QueryResult:
        """``pay/orderquery`` by our order number."""
        result = self._call("pay/orderquery", {"out_trade_no": out_trade_no})
        state = result.get("trade_state")
        if not state:
            raise WeChatUnavailableError(None, "pay/orderquery: answer lacks trade_state")
        total = result.get("total_fee")
        return QueryResult(str(state), result.get("transaction_id") or None, int(total) if total else None)

    def close_order(self, out_trade_no: str) -> None:
        """``pay/closeorder``: the buyer can no longer pay this order."""
        self._call("pay/closeorder", {"out_trade_no": out_trade_no})

    def refund_query(self, out_refund_no: str) -> RefundQueryResult:
        """``pay/refundquery`` by our refund number: the one refund it names (``…_0`` fields)."""
        result = self._call("pay/refundquery", {"out_refund_no": out_refund_no})
        status = result.get("refund_status_0")
        if not status or result.get("out_refund_no_0") != out_refund_no:
            raise WeChatUnavailableError(None, "pay/refundquery: answer lacks the refund's status")
        fee = str(result.get("refund_fee_0") or "")
        return RefundQueryResult(str(status), result.get("refund_id_0") or None, int(fee) if fee.isdigit() else None)

    def refund(
        self,
        out_trade_no: str,
        out_refund_no: str,
        total_fee: int,
        refund_fee: int,
        notify_url: str,
        reason: str = "",
        *,
        transaction_id: str | None = None,
    ) -> str:
        """``secapi/pay/refund`` (needs the client certificate in production); returns WeChat's ``refund_id``.

        The order is named by ``out_trade_no`` or ``transaction_id`` (either will do; WeChat
        prefers the latter when both come). Idempotent on ``out_refund_no``: WeChat answers a
        repeat with the same refund.
        """
        if not (out_trade_no or transaction_id):
            raise ValueError("a refund needs out_trade_no or transaction_id")
        data = {
            "out_trade_no": out_trade_no or None,
            "transaction_id": transaction_id or None,
            "out_refund_no": out_refund_no,
            "total_fee": int(total_fee),
            "refund_fee": int(refund_fee),
            "notify_url": notify_url,
            "refund_desc": clip_utf8(reason, V2_REFUND_DESC_MAX_BYTES) or None,
        }
        result = self._call("secapi/pay/refund", data)
        refund_id = result.get("refund_id")
        if not refund_id:
            raise WeChatUnavailableError(None, "secapi/pay/refund: answer lacks refund_id")
        return str(refund_id)

    def _check_merchant(self, data: Mapping[str, Any]) -> None:
        if data.get("appid") != self.appid:
            raise InvalidNotificationError("appid is not ours")
        if data.get("mch_id") != self.mch_id:
            raise InvalidNotificationError("mch_id is not ours")

    def notify_sign_type(self, data: Mapping[str, Any]) -> str:
        """The sign type a notification is verified with.

        WeChat signs a notification the way the prepay was signed but leaves ``sign_type`` out
        (an HMAC-SHA256 notification carries only its 64-hex ``sign``), so an absent element
        means the merchant's configured type; MD5 is taken only when configured or named.
        """
        named = data.get("sign_type")
        if named is None or named == "":
            return self.sign_type
        if named not in V2_SIGN_TYPES:
            raise InvalidNotificationError("unknown sign_type")
        return str(named)

    def parse_pay_notify(self, xml: bytes) -> PayNotice:
        """A payment notification, verified: signature (see ``notify_sign_type``), appid, mch_id, return_code."""
        try:
            data = parse_v2_xml(xml)
        except ValueError:
            raise InvalidNotificationError("body is not a v2 XML notification") from None
        if data.get("return_code") != "SUCCESS":
            raise InvalidNotificationError("return_code is not SUCCESS")
        if not v2_signature_matches(data, self._api_key, self.notify_sign_type(data)):
            raise InvalidNotificationError("signature does not verify")
        self._check_merchant(data)
        total_fee = notified_v2_fen(data.get("total_fee"), "total_fee")
        if data.get("cash_fee") is not None:
            notified_v2_fen(data["cash_fee"], "cash_fee", minimum=0)  # zero when coupons paid it all
        out_trade_no, transaction_id = data.get("out_trade_no"), data.get("transaction_id")
        if not out_trade_no or not transaction_id:
            raise InvalidNotificationError("notification lacks out_trade_no, transaction_id or total_fee")
        return PayNotice(
            api=self.api,
            out_trade_no=out_trade_no,
            transaction_id=transaction_id,
            total_fee=total_fee,
            succeeded=data.get("result_code") == "SUCCESS",
            openid=data.get("openid"),
        )

    def parse_refund_notify(self, xml: bytes) -> RefundNotice:
        """A refund notification: appid and mch_id checked, ``req_info`` decrypted (it is the only proof)."""
        try:
            data = parse_v2_xml(xml)
        except ValueError:
            raise InvalidNotificationError("body is not a v2 XML notification") from None
        if data.get("return_code") != "SUCCESS":
            raise InvalidNotificationError("return_code is not SUCCESS")
        self._check_merchant(data)
        req_info = data.get("req_info")
        if not req_info:
            raise InvalidNotificationError("notification lacks req_info")
        try:
            info = parse_v2_xml(decrypt_req_info(req_info, self._api_key), root="root")
            refund_fee = notified_v2_fen(info.get("refund_fee"), "refund_fee")
            total_fee = notified_v2_fen(info["total_fee"], "total_fee") if info.get("total_fee") is not None else None
            for name in ("settlement_refund_fee", "settlement_total_fee", "cash_refund_fee"):
                if info.get(name) is not None:
                    notified_v2_fen(info[name], name, minimum=0)
            notice = RefundNotice(
                api=self.api,
                out_trade_no=str(info["out_trade_no"]),
                out_refund_no=str(info["out_refund_no"]),
                refund_id=str(info["refund_id"]),
                refund_fee=refund_fee,
                total_fee=total_fee,
                status=str(info["refund_status"]),
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidNotificationError("req_info is not a refund result") from None
        if not (notice.out_trade_no and notice.out_refund_no and notice.refund_id):
            raise InvalidNotificationError("req_info is not a refund result")
        return notice


# -- v3 ---------------------------------------------------------------------------------------


def v3_message(*parts: str | bytes) -> bytes:
    """What v3 signs: each part on its own line, the last one ended by a newline too."""
    return b"".join((p if isinstance(p, bytes) else p.encode("utf-8")) + b"\n" for p in parts)


def rsa_sign(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), base64: v3 request signatures and the JSAPI ``paySign``."""
    return base64.b64encode(private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def rsa_verify(public_key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def load_private_key(path: str | os.PathLike[str]) -> rsa.RSAPrivateKey:
    """The merchant's API private key (``apiclient_key.pem``)."""
    key = _parse_private_key(Path(path).read_bytes())
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return key


@functools.lru_cache(maxsize=8)
def _parse_private_key(pem: bytes) -> Any:
    """A PEM private key, parsed once per process: checking an RSA key costs tens of milliseconds,
    and every app built in the process (a worker's, each test's) loads the same file. A new file's
    bytes are a new key."""
    return serialization.load_pem_private_key(pem, password=None)


def load_public_key(path: str | os.PathLike[str]) -> rsa.RSAPublicKey:
    """WeChat Pay's public key (微信支付公钥) or its platform certificate (平台证书), from PEM."""
    data = Path(path).read_bytes()
    if b"BEGIN CERTIFICATE" in data:
        key: Any = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{path} is not an RSA public key or certificate")
    return key


def parse_authorization(header: str) -> dict[str, str]:
    """The fields of a v3 Authorization header; empty when it is not the v3 scheme."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme != V3_AUTH_SCHEME:
        return {}
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, value = part.strip().partition("=")
        if sep and len(value) >= 2 and value[0] == value[-1] == '"':
            fields[key] = value[1:-1]
    return fields


class Headers(Protocol):
    """Request headers: a plain mapping, or Werkzeug's ``Headers`` (which is not a ``Mapping``)."""

    def get(self, key: str) -> str | None: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


def _header(headers: Headers, name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _rfc3339(value: datetime) -> str:
    return china_time(value).replace(microsecond=0).isoformat()


class PayV3:
    """WeChat Pay v3 for one merchant and one appid: JSON, SHA256withRSA both ways, AES-256-GCM notifications."""

    api = "v3"

    def __init__(
        self,
        *,
        appid: str,
        mchid: str,
        api_v3_key: str | bytes,
        private_key: rsa.RSAPrivateKey,
        serial_no: str,
        platform_keys: Mapping[str, rsa.RSAPublicKey] | None = None,
        keys: PayKeyRing | None = None,
        api_base: str = PRODUCTION_PAY_BASE,
        timeout: float = 5.0,
    ) -> None:
        """``keys`` verify WeChat Pay; ``platform_keys`` (serial to key) is shorthand for certificates pinned by hand."""
        key = api_v3_key.encode("utf-8") if isinstance(api_v3_key, str) else api_v3_key
        if len(key) != V3_API_KEY_LENGTH:
            raise ValueError("WECHAT_PAY_API_V3_KEY must be 32 bytes")
        if keys is None:
            if not platform_keys:
                raise ValueError("WeChat Pay v3 needs the platform public key and its serial")
            keys = PayKeyRing("certificates", certificates=[pinned_key(s, k, None) for s, k in platform_keys.items()])
        self.appid = appid
        self.mchid = mchid
        self.serial_no = serial_no
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.keys = keys
        self._aead = AESGCM(key)
        self._private_key = private_key
        self._http = requests.Session()
        #: Where a downloaded certificate list is shared between workers: (get, set) of JSON values by key,
        #: ``server.cache`` in the app; this process only when unset.
        self.cache: tuple[Callable[[str], Any], Callable[[str, Any, float], None]] | None = None
        #: Whether a database transaction is open here; a refresh is never made inside one.
        self.in_transaction: Callable[[], bool] = lambda: False
        self._local_cache: dict[str, tuple[float, Any]] = {}

    def __repr__(self) -> str:
        return f"PayV3(appid={self.appid!r}, mchid={self.mchid!r}, serial_no={self.serial_no!r})"

    def close(self) -> None:
        self._http.close()

    # -- signatures --------------------------------------------------------------------------

    def authorization(self, method: str, url_path: str, body: bytes | str = b"", *, timestamp: int | None = None, nonce: str | None = None) -> str:
        """The Authorization header of a request: ``url_path`` is the path with its query, as sent."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        nonce = nonce or nonce_str()
        signature = rsa_sign(self._private_key, v3_message(method.upper(), url_path, str(timestamp), nonce, body))
        return (
            f'{V3_AUTH_SCHEME} mchid="{self.mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{self.serial_no}"'
        )

    def _verify(self, headers: Headers, body: bytes, *, refresh: bool = True, keys: PayKeyRing | None = None) -> str | None:
        """Why ``body`` with ``headers`` is not WeChat Pay's signed message (verified with ``keys``, by default the
        merchant's), or None when it is.

        A serial no key names may be a platform certificate WeChat has just rotated to: with ``refresh``,
        the certificate list is fetched once (see ``refresh_certificates``) before the message is refused.
        """
        keys = keys or self.keys
        timestamp = _header(headers, "Wechatpay-Timestamp")
        nonce = _header(headers, "Wechatpay-Nonce")
        signature = _header(headers, "Wechatpay-Signature")
        serial = _header(headers, "Wechatpay-Serial")
        if not (timestamp and nonce and signature and serial):
            return "Wechatpay-* signature headers missing"
        try:
            skew = abs(time.time() - int(timestamp))
        except ValueError:
            return "Wechatpay-Timestamp is not a number"
        if skew > V3_MAX_CLOCK_SKEW:
            return "Wechatpay-Timestamp is too far from now"
        key, problem = keys.lookup(serial)
        if key is None and problem is None and refresh and keys.should_refresh(serial):
            self.refresh_certificates()
            key, problem = keys.lookup(serial)
        if key is None:
            return problem or "Wechatpay-Serial names no WeChat Pay key we hold"
        if not rsa_verify(key, v3_message(timestamp, nonce, body), signature):
            return "signature does not verify"
        return None

    # -- platform certificates ---------------------------------------------------------------------

    def _cache_key(self) -> str:
        return f"wechatpay:v3:certificates:{self.mchid}"

    def _cache_get(self, key: str) -> Any:
        if self.cache is not None:
            return self.cache[0](key)
        stored = self._local_cache.get(key)
        return stored[1] if stored and stored[0] > time.monotonic() else None

    def _cache_set(self, key: str, value: Any, ttl: float) -> None:
        if self.cache is not None:
            self.cache[1](key, value, ttl)
        else:
            self._local_cache[key] = (time.monotonic() + ttl, value)

    def _take_cached_certificates(self) -> None:
        cached = self._cache_get(self._cache_key())
        if isinstance(cached, list):
            try:
                self.keys.merge(PlatformCertificate.from_cached(item) for item in cached)
            except (KeyError, TypeError, ValueError):
                logger.warning("WeChat Pay platform certificates in the cache are unreadable; downloading them again")

    def refresh_certificates(self, *, force: bool = False) -> bool:
        """Bring the platform certificate list up to date; whether a download was made and taken.

        First from the cache another worker filled; then, unless one was made in the last
        ``REFRESH_INTERVAL`` seconds by any worker (``force`` skips that wait), from ``GET /v3/certificates``.
        Never inside a database transaction: a notification or answer that needs a refresh there is refused,
        and WeChat sends the notification again. A failed download leaves the keys as they were.
        """
        if not self.keys.uses_certificates:
            return False
        if self.in_transaction():
            logger.warning("WeChat Pay platform certificates not refreshed: a database transaction is open")
            return False
        self._take_cached_certificates()
        stamp_key = self._cache_key() + ":downloaded"
        with self.keys.download_lock:
            recent = self.keys.last_download is not None and time.monotonic() - self.keys.last_download < REFRESH_INTERVAL
            if not force and (recent or self._cache_get(stamp_key)):
                return False
            self.keys.last_download = time.monotonic()
            self._cache_set(stamp_key, True, REFRESH_INTERVAL)
            try:
                certificates = self.download_certificates()
            except WeChatError as error:
                logger.warning("WeChat Pay platform certificates not refreshed: %s", error.errmsg)
                return False
        self.keys.merge(certificates)
        self._cache_set(self._cache_key(), [c.as_cached() for c in certificates], CACHE_SECONDS)
        logger.info("WeChat Pay platform certificates refreshed: %s", ", ".join(c.serial for c in certificates))
        return True

    def download_certificates(self) -> list[PlatformCertificate]:
        """``GET /v3/certificates`` (see ``_download_certificates``), counted in the metrics."""
        with _counted("/v3/certificates"):
            return self._download_certificates()

    def _download_certificates(self) -> list[PlatformCertificate]:
        """``GET /v3/certificates``: every certificate decrypted with the APIv3 key, the answer verified.

        The answer is signed with one of the certificates: verified with the key its serial names when we
        hold one, else, on the first download, with the certificate of that serial in the answer itself, as
        WeChat's SDKs bootstrap (its ciphertext decrypting under our APIv3 key is what shows it is WeChat's).
        """
        path = "/v3/certificates"
        res = self._send("GET", path)
        if not res.ok:
            self._raise_for_error(path, res)
        try:
            listing = _strict_json(res.content)
            items = listing["data"]
            if not isinstance(items, list) or not items:
                raise ValueError("no certificates")
            certificates = [self._open_certificate(item) for item in items]
        except (KeyError, TypeError, ValueError, InvalidTag) as exc:
            raise WeChatUnavailableError(None, f"{path}: the certificate list is unreadable ({type(exc).__name__})") from None
        serial = _header(res.headers, "Wechatpay-Serial") or ""
        problem = self._verify(res.headers, res.content, refresh=False)
        if problem and self.keys.lookup(serial) == (None, None):
            signer = next((c for c in certificates if c.serial == serial.upper()), None)
            if signer is None:
                raise WeChatUnavailableError(None, f"{path}: answer is signed by no certificate it lists")
            problem = self._verify(res.headers, res.content, refresh=False, keys=PayKeyRing("certificates", certificates=[signer]))
        if problem:
            raise with_label(WeChatUnavailableError(None, f"{path}: answer rejected: {problem}"), "bad_signature")
        return certificates

    def _open_certificate(self, item: Mapping[str, Any]) -> PlatformCertificate:
        sealed = item["encrypt_certificate"]
        if sealed["algorithm"] != "AEAD_AES_256_GCM":
            raise ValueError("unknown algorithm")
        pem = self._aead.decrypt(
            str(sealed["nonce"]).encode("utf-8"),
            base64.b64decode(str(sealed["ciphertext"]), validate=True),
            str(sealed.get("associated_data") or "").encode("utf-8"),
        )
        return certificate_from_pem(
            pem.decode("ascii"),
            effective=rfc3339_seconds(item["effective_time"]),
            expires=rfc3339_seconds(item["expire_time"]),
            serial=str(item["serial_no"]),
        )

    # -- requests ------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One signed request; the answer as it came, or WeChatUnavailableError when none came."""
        url = self.api_base + path + ("?" + urlencode(params) if params else "")
        # Signed as the server will see it: the full path (a base may add a prefix) and the query.
        parts = urlsplit(url)
        signed_path = parts.path + ("?" + parts.query if parts.query else "")
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {
            "Authorization": self.authorization(method, signed_path, body),
            "Accept": "application/json",
            "User-Agent": "referral-server wechatpay-v3",
        }
        if self.keys.public_key_id:
            # Names the key WeChat Pay is to sign its answer with (during a switch-over too).
            headers["Wechatpay-Serial"] = self.keys.public_key_id
        if payload is not None:
            headers["Content-Type"] = "application/json"
        headers.update(extra_headers or {})
        try:
            return self._http.request(method, url, data=body or None, headers=headers, timeout=self.timeout)
        except requests.Timeout:
            raise with_label(WeChatUnavailableError(None, f"{path}: timed out"), "timeout") from None
        except requests.RequestException as exc:
            raise with_label(WeChatUnavailableError(None, f"{path}: {type(exc).__name__}"), "network") from None

    def _raise_for_error(self, path: str, res: requests.Response) -> None:
        """WeChatPayError (4xx) or WeChatUnavailableError (5xx, 429, unreadable) for an error answer."""
        try:
            answer = json.loads(res.content.decode("utf-8")) if res.content else {}
        except ValueError:
            raise with_label(WeChatUnavailableError(None, f"{path}: HTTP {res.status_code}, answer is not JSON"), "not_json") from None
        if not isinstance(answer, dict):
            raise with_label(WeChatUnavailableError(None, f"{path}: answer is not a JSON object"), "not_json")
        if res.status_code >= 500 or res.status_code == 429:
            raise with_label(WeChatUnavailableError(None, f"{path}: HTTP {res.status_code} {answer.get('code', '')}"), f"http_{res.status_code // 100}xx")
        code = str(answer.get("code") or f"HTTP_{res.status_code}")
        logger.warning("WeChat Pay %s answered %s %s", path, res.status_code, code)
        raise WeChatPayError(code, str(answer.get("message") or ""))

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        template: str | None = None,
    ) -> dict[str, Any] | None:
        """One signed exchange, counted in the metrics by ``template`` (the path with its ids as ``{id}``;
        the path itself when it has none) and error code."""
        with _counted(template or path):
            return self._exchange(method, path, params=params, payload=payload, extra_headers=extra_headers)

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """One signed exchange; the verified JSON answer, None for 204, WeChatError otherwise."""
        res = self._send(method, path, params=params, payload=payload, extra_headers=extra_headers)
        signed = _header(res.headers, "Wechatpay-Signature") is not None
        # Error answers may come unsigned (WeChat cannot sign an answer to a request it could not
        # authenticate); they only ever make us fail, so they are read either way.
        if (res.ok or signed) and (problem := self._verify(res.headers, res.content)):
            raise with_label(WeChatUnavailableError(None, f"{path}: answer rejected: {problem}"), "bad_signature")
        if res.status_code == 204:
            return None
        if res.status_code >= 400:
            self._raise_for_error(path, res)
        try:
            answer = json.loads(res.content.decode("utf-8")) if res.content else {}
        except ValueError:
            raise with_label(WeChatUnavailableError(None, f"{path}: HTTP {res.status_code}, answer is not JSON"), "not_json") from None
        if not isinstance(answer, dict):
            raise with_label(WeChatUnavailableError(None, f"{path}: answer is not a JSON object"), "not_json")
        return answer

    def jsapi_prepay(
        self,
        out_trade_no: str,
        total_fee: int,
        openid: str,
        description: str,
        notify_url: str,
        time_expire: datetime | None = None,
    ) -> str:
        """``POST /v3/pay/transactions/jsapi``; returns the ``prepay_id``.

        PayWindowTooShortError, without a call, for a ``time_expire`` WeChat would refuse.
        """
        check_pay_window(time_expire)
        payload: dict[str, Any] = {
            "appid": self.appid,
            "mchid": self.mchid,
            "description": description[:V3_DESCRIPTION_MAX_CHARS] or out_trade_no,
            "out_trade_no": out_trade_no,
            "notify_url": notify_url,
            "amount": {"total": int(total_fee), "currency": "CNY"},
            "payer": {"openid": openid},
        }
        if time_expire is not None:
            payload["time_expire"] = _rfc3339(time_expire)
        answer = self._request("POST", "/v3/pay/transactions/jsapi", payload=payload) or {}
        prepay_id = answer.get("prepay_id")
        if not prepay_id:
            raise WeChatUnavailableError(None, "/v3/pay/transactions/jsapi: answer lacks prepay_id")
        return str(prepay_id)

    def jsapi_params(self, prepay_id: str) -> dict[str, str]:
        """What ``wx.requestPayment`` takes; ``paySign`` is RSA over ``appId\\ntimeStamp\\nnonceStr\\npackage\\n``."""
        timestamp, nonce, package = str(int(time.time())), nonce_str(), f"prepay_id={prepay_id}"
        signature = rsa_sign(self._private_key, v3_message(self.appid, timestamp, nonce, package))
        return {"timeStamp": timestamp, "nonceStr": nonce, "package": package, "signType": "RSA", "paySign": signature}

    def query_order(self, out_trade_no: str) -> QueryResult:
        """``GET /v3/pay/transactions/out-trade-no/{no}?mchid=``."""
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}"
        answer = self._request("GET", path, params={"mchid": self.mchid}, template="/v3/pay/transactions/out-trade-no/{id}") or {}
        state = answer.get("trade_state")
        if not state:
            raise WeChatUnavailableError(None, f"{path}: answer lacks trade_state")
        if answer.get("mchid") not in (None, self.mchid):
            raise WeChatUnavailableError(None, f"{path}: answer is for another merchant")
        amount = _json_object(answer.get("amount"))
        total = amount.get("total")
        return QueryResult(str(state), answer.get("transaction_id") or None, int(total) if isinstance(total, int) else None)

    def query_refund(self, out_refund_no: str) -> RefundQueryResult:
        """``GET /v3/refund/domestic/refunds/{out_refund_no}``."""
        path = f"/v3/refund/domestic/refunds/{quote(out_refund_no, safe='')}"
        answer = self._request("GET", path, template="/v3/refund/domestic/refunds/{id}") or {}
        status = answer.get("status")
        if not isinstance(status, str) or not status or answer.get("out_refund_no") != out_refund_no:
            raise WeChatUnavailableError(None, f"{path}: answer lacks the refund's status")
        amount = _json_object(answer.get("amount"))
        fee = amount.get("refund")
        refund_id = answer.get("refund_id")
        return RefundQueryResult(status, str(refund_id) if refund_id else None, fee if isinstance(fee, int) and not isinstance(fee, bool) else None)

    def close_order(self, out_trade_no: str) -> None:
        """``POST /v3/pay/transactions/out-trade-no/{no}/close`` (answers 204)."""
        self._request(
            "POST", f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/close", payload={"mchid": self.mchid},
            template="/v3/pay/transactions/out-trade-no/{id}/close",
        )

    def refund(
        self,
        out_trade_no: str,
        out_refund_no: str,
        total_fee: int,
        refund_fee: int,
        notify_url: str,
        reason: str = "",
        *,
        transaction_id: str | None = None,
    ) -> str:
        """``POST /v3/refund/domestic/refunds``; returns WeChat's ``refund_id``. Idempotent on ``out_refund_no``.

        The order is named by ``out_trade_no`` or ``transaction_id``, either will do.
        """
        if not (out_trade_no or transaction_id):
            raise ValueError("a refund needs out_trade_no or transaction_id")
        payload: dict[str, Any] = {"out_trade_no": out_trade_no} if out_trade_no else {"transaction_id": transaction_id}
        payload |= {
            "out_refund_no": out_refund_no,
            "notify_url": notify_url,
            "amount": {"refund": int(refund_fee), "total": int(total_fee), "currency": "CNY"},
        }
        if reason:
            payload["reason"] = clip_utf8(reason, V3_REASON_MAX_BYTES)
        answer = self._request("POST", "/v3/refund/domestic/refunds", payload=payload) or {}
        refund_id = answer.get("refund_id")
        if not refund_id:
            raise WeChatUnavailableError(None, "/v3/refund/domestic/refunds: answer lacks refund_id")
        return str(refund_id)

    def encrypt_sensitive(self, text: str) -> tuple[str, str]:
        """``text`` encrypted for WeChat Pay (RSA-OAEP with SHA-1 and MGF1, base64) and the serial that names the
        key it was sealed with (sent as ``Wechatpay-Serial``): the WeChat Pay public key when configured, else the
        platform certificate in force that expires last, the list refreshed first when none is."""
        found = self.keys.encryption_key()
        if found is None and self.refresh_certificates():
            found = self.keys.encryption_key()
        if found is None:
            raise WeChatUnavailableError(None, "no WeChat Pay platform certificate in force to encrypt with")
        serial, key = found
        sealed = key.encrypt(text.encode("utf-8"), padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
        return base64.b64encode(sealed).decode("ascii"), serial

    def apply_abnormal_refund(
        self,
        refund_id: str,
        out_refund_no: str,
        target: str,
        *,
        bank_type: str | None = None,
        bank_account: str | None = None,
        real_name: str | None = None,
    ) -> str:
        """``POST /v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund`` (发起异常退款): WeChat pays
        an ABNORMAL refund into the buyer's debit card (``USER_BANK_CARD``, whose number and holder are sent
        encrypted) or the merchant's bank account (``MERCHANT_BANK_CARD``). Returns the refund's new status."""
        if target not in ABNORMAL_REFUND_TARGETS:
            raise ValueError(f"target must be one of {sorted(ABNORMAL_REFUND_TARGETS)}")
        payload: dict[str, Any] = {"out_refund_no": out_refund_no, "type": target}
        extra: dict[str, str] = {}
        if target == "USER_BANK_CARD":
            if not (bank_type and bank_account and real_name):
                raise ValueError("a refund to the buyer's card needs bank_type, bank_account and real_name")
            payload["bank_type"] = bank_type
            payload["bank_account"], serial = self.encrypt_sensitive(bank_account)
            payload["real_name"], _ = self.encrypt_sensitive(real_name)
            extra["Wechatpay-Serial"] = serial
        path = f"/v3/refund/domestic/refunds/{quote(refund_id, safe='')}/apply-abnormal-refund"
        answer = self._request("POST", path, payload=payload, extra_headers=extra, template="/v3/refund/domestic/refunds/{id}/apply-abnormal-refund") or {}
        status = answer.get("status")
        if not isinstance(status, str) or not status:
            raise WeChatUnavailableError(None, f"{path}: answer lacks status")
        return status

    # -- notifications -----------------------------------------------------------------------------

    def decrypt_resource(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """A notification's ``resource``: AEAD_AES_256_GCM with the APIv3 key, its nonce and associated data."""
        if resource.get("algorithm") != "AEAD_AES_256_GCM":
            raise InvalidNotificationError("resource algorithm is not AEAD_AES_256_GCM")
        ciphertext, nonce = resource.get("ciphertext"), resource.get("nonce")
        associated = resource.get("associated_data") or ""
        if not isinstance(ciphertext, str) or not isinstance(nonce, str) or not isinstance(associated, str):
            raise InvalidNotificationError("resource lacks ciphertext or nonce")
        try:
            plaintext = self._aead.decrypt(nonce.encode("utf-8"), base64.b64decode(ciphertext, validate=True), associated.encode("utf-8"))
            data = _strict_json(plaintext)
        except (InvalidTag, ValueError):
            raise InvalidNotificationError("resource does not decrypt with this merchant's APIv3 key") from None
        if not isinstance(data, dict):
            raise InvalidNotificationError("resource is not a JSON object")
        return data

    def parse_notification(self, headers: Headers, body: bytes) -> PayNotice | RefundNotice | IgnoredNotice:
        """A v3 notification, verified (signature by the platform key named in ``Wechatpay-Serial``, timestamp
        within five minutes, AEAD decryption, appid and mchid) and read."""
        problem = self._verify(headers, body)
        if problem:
            raise InvalidNotificationError(problem)
        try:
            envelope = json.loads(body)
        except ValueError:
            raise InvalidNotificationError("body is not JSON") from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("resource"), dict):
            raise InvalidNotificationError("body lacks resource")
        event_type = str(envelope.get("event_type") or "")
        resource = self.decrypt_resource(envelope["resource"])
        if resource.get("mchid") != self.mchid:
            raise InvalidNotificationError("mchid is not ours")
        # Refund resources carry no appid; payment resources always do.
        if resource.get("appid", self.appid) != self.appid:
            raise InvalidNotificationError("appid is not ours")
        amount = _json_object(resource.get("amount"))
        try:
            if event_type == "TRANSACTION.SUCCESS":
                if resource.get("trade_state") != "SUCCESS" or "appid" not in resource:
                    raise InvalidNotificationError("TRANSACTION.SUCCESS without a successful transaction")
                payer = _json_object(resource.get("payer"))
                paid = PayNotice(
                    api=self.api,
                    out_trade_no=str(resource["out_trade_no"]),
                    transaction_id=str(resource["transaction_id"]),
                    total_fee=notified_fen(amount.get("total"), "amount.total"),
                    succeeded=True,
                    openid=payer.get("openid"),
                )
                notice: PayNotice | RefundNotice = paid
                ok = bool(paid.out_trade_no and paid.transaction_id)
            elif event_type.startswith("REFUND."):
                status = str(resource.get("refund_status") or "")
                if event_type != f"REFUND.{status}":
                    raise InvalidNotificationError("event_type and refund_status disagree")
                notice = RefundNotice(
                    api=self.api,
                    out_trade_no=str(resource["out_trade_no"]),
                    out_refund_no=str(resource["out_refund_no"]),
                    refund_id=str(resource["refund_id"]),
                    refund_fee=notified_fen(amount.get("refund"), "amount.refund"),
                    total_fee=notified_fen(amount["total"], "amount.total") if "total" in amount else None,
                    status=status,
                )
                ok = bool(notice.out_trade_no and notice.out_refund_no and notice.refund_id)
            else:
                return IgnoredNotice(event_type)
        except (KeyError, TypeError, ValueError):
            raise InvalidNotificationError(f"{event_type} resource lacks its fields") from None
        if not ok:
            raise InvalidNotificationError(f"{event_type} resource lacks its fields")
        return notice


# -- key material ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class V3KeyConfig:
    """The v3 key files, serials and verification mode the app uses, as configured or (sandbox) generated."""

    merchant_private_key: Path
    merchant_serial: str
    #: ``certificates``, ``public_key`` or ``both`` (``WECHAT_PAY_V3_VERIFY``).
    verify: str = "certificates"
    #: A platform certificate (or its bare public key) pinned by hand, and its serial: optional.
    platform_public_key: Path | None = None
    platform_serial: str | None = None
    #: The WeChat Pay public key (微信支付公钥) and its ``PUB_KEY_ID_…``.
    public_key: Path | None = None
    public_key_id: str | None = None


def v3_verify_mode(config: Mapping[str, Any]) -> str:
    """``WECHAT_PAY_V3_VERIFY``, or when unset: ``public_key`` once a public key id is set, else ``certificates``."""
    mode = str(config.get("WECHAT_PAY_V3_VERIFY") or "").strip().lower()
    if not mode:
        return "public_key" if config.get("WECHAT_PAY_PUBLIC_KEY_ID") else "certificates"
    if mode not in VERIFY_MODES:
        raise ValueError(f"WECHAT_PAY_V3_VERIFY must be one of {', '.join(VERIFY_MODES)}")
    return mode


def v3_key_config(config: Mapping[str, Any]) -> V3KeyConfig | None:
    """The configured PEM paths and serials; in sandbox mode without them, the sandbox's generated keys."""
    mode = v3_verify_mode(config)
    private = config.get("WECHAT_PAY_MCH_PRIVATE_KEY")
    if private:
        mch_serial = config.get("WECHAT_PAY_MCH_CERT_SERIAL")
        if not mch_serial:
            raise ValueError("WECHAT_PAY_MCH_CERT_SERIAL must be set with WECHAT_PAY_MCH_PRIVATE_KEY")
        platform, platform_serial = config.get("WECHAT_PAY_PLATFORM_PUBLIC_KEY") or None, config.get("WECHAT_PAY_PLATFORM_SERIAL") or None
        if bool(platform) != bool(platform_serial):
            raise ValueError("WECHAT_PAY_PLATFORM_PUBLIC_KEY and WECHAT_PAY_PLATFORM_SERIAL go together")
        public, public_id = config.get("WECHAT_PAY_PUBLIC_KEY") or None, config.get("WECHAT_PAY_PUBLIC_KEY_ID") or None
        if mode != "certificates" and not (public and public_id):
            raise ValueError(f"WECHAT_PAY_V3_VERIFY={mode} needs WECHAT_PAY_PUBLIC_KEY and WECHAT_PAY_PUBLIC_KEY_ID")
        return V3KeyConfig(
            Path(private),
            str(mch_serial),
            mode,
            Path(platform) if platform else None,
            str(platform_serial) if platform_serial else None,
            Path(public) if public else None,
            str(public_id) if public_id else None,
        )
    if config.get("WECHAT_SANDBOX"):
        # Sandbox mode only, and so imported here: production code never loads the sandbox (tests/test_layers.py).
        from wechat_sandbox.keys import SANDBOX_MCH_SERIAL, SANDBOX_PLATFORM_SERIAL, SANDBOX_PUBLIC_KEY_ID, ensure_sandbox_keys, sandbox_key_dir

        keys = ensure_sandbox_keys(sandbox_key_dir(config))
        return V3KeyConfig(
            keys.merchant_private,
            SANDBOX_MCH_SERIAL,
            mode,
            keys.platform_public,
            SANDBOX_PLATFORM_SERIAL,
            keys.wechatpay_public_key if mode != "certificates" else None,
            SANDBOX_PUBLIC_KEY_ID if mode != "certificates" else None,
        )
    return None


def load_key_ring(keys: V3KeyConfig) -> PayKeyRing:
    """The verifying keys ``keys`` names, loaded (a file that cannot be read fails here, at start-up)."""
    pinned: list[PlatformCertificate] = []
    if keys.verify != "public_key" and keys.platform_public_key and keys.platform_serial:
        data = keys.platform_public_key.read_bytes()
        certificate = x509.load_pem_x509_certificate(data) if b"BEGIN CERTIFICATE" in data else None
        pinned.append(pinned_key(keys.platform_serial, load_public_key(keys.platform_public_key), certificate))
    public = load_public_key(keys.public_key) if keys.public_key and keys.verify != "certificates" else None
    return PayKeyRing(keys.verify, certificates=pinned, public_key=public, public_key_id=keys.public_key_id)


# -- the gateway ----------------------------------------------------------------------------------


@dataclass
class WeChatPayGateway:
    """The app's WeChat Pay: the configured API versions, and ``default_api`` for new prepays."""

    v2: PayV2 | None
    v3: PayV3 | None
    default_api: str = "v3"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WeChatPayGateway:
        """Build from ``WECHAT_PAY_*`` (see ``server.config``); a key that cannot be loaded fails here, at start-up."""
        default_api = (config.get("WECHAT_PAY_API") or "v3").lower()
        if default_api not in API_VERSIONS:
            raise ValueError("WECHAT_PAY_API must be v2 or v3")
        appid, mch_id = config.get("WECHAT_APPID") or "", config.get("WECHAT_PAY_MCH_ID") or ""
        api_base = config.get("WECHAT_PAY_API_BASE") or PRODUCTION_PAY_BASE
        timeout = float(config.get("WECHAT_TIMEOUT") or 5)
        v2 = v3 = None
        if appid and mch_id and config.get("WECHAT_PAY_API_KEY"):
            cert, key = config.get("WECHAT_PAY_MCH_CERT") or None, config.get("WECHAT_PAY_MCH_KEY") or None
            for path in (cert, key):
                if path and not Path(path).is_file():
                    raise ValueError(f"WeChat Pay client certificate file {path} does not exist")
            v2 = PayV2(
                appid=appid,
                mch_id=mch_id,
                api_key=config["WECHAT_PAY_API_KEY"],
                api_base=api_base,
                sign_type=config.get("WECHAT_PAY_V2_SIGN_TYPE") or "HMAC-SHA256",
                mch_cert=cert,
                mch_key=key,
                timeout=timeout,
            )
        keys = v3_key_config(config) if appid and mch_id and config.get("WECHAT_PAY_API_V3_KEY") else None
        if keys is not None:
            v3 = PayV3(
                appid=appid,
                mchid=mch_id,
                api_v3_key=config["WECHAT_PAY_API_V3_KEY"],
                private_key=load_private_key(keys.merchant_private_key),
                serial_no=keys.merchant_serial,
                keys=load_key_ring(keys),
                api_base=api_base,
                timeout=timeout,
            )
        return cls(v2, v3, default_api)

    def client(self, api: str | None = None) -> PayV2 | PayV3:
        """The adapter of ``api`` (default: ``default_api``); PayNotConfiguredError if the merchant lacks it."""
        api = api or self.default_api
        found = self.v2 if api == "v2" else self.v3 if api == "v3" else None
        if found is None:
            raise PayNotConfiguredError(None, f"WeChat Pay {api} is not configured")
        return found

    def v2_client(self) -> PayV2:
        client = self.client("v2")
        assert isinstance(client, PayV2)
        return client

    def v3_client(self) -> PayV3:
        client = self.client("v3")
        assert isinstance(client, PayV3)
        return client

    def prepay(
        self,
        api: str,
        *,
        out_trade_no: str,
        total_fee: int,
        openid: str,
        description: str,
        notify_url: str,
        client_ip: str,
        time_expire: datetime | None = None,
    ) -> str:
        """A JSAPI prepay through ``api``; returns the ``prepay_id``."""
        client = self.client(api)
        if isinstance(client, PayV2):
            return client.unified_order(out_trade_no, total_fee, openid, description, notify_url, client_ip, time_expire)
        return client.jsapi_prepay(out_trade_no, total_fee, openid, description, notify_url, time_expire)

    def jsapi_params(self, api: str, prepay_id: str) -> dict[str, str]:
        return self.client(api).jsapi_params(prepay_id)

    def query(self, api: str, out_trade_no: str) -> QueryResult:
        client = self.client(api)
        return client.order_query(out_trade_no) if isinstance(client, PayV2) else client.query_order(out_trade_no)

    def close_order(self, api: str, out_trade_no: str) -> None:
        self.client(api).close_order(out_trade_no)

    def query_refund(self, api: str, out_refund_no: str) -> RefundQueryResult:
        client = self.client(api)
        return client.refund_query(out_refund_no) if isinstance(client, PayV2) else client.query_refund(out_refund_no)

    def refund(
        self,
        api: str,
        *,
        out_trade_no: str,
        out_refund_no: str,
        total_fee: int,
        refund_fee: int,
        notify_url: str,
        reason: str = "",
        transaction_id: str | None = None,
    ) -> str:
        """A refund through ``api``, of the order named by ``out_trade_no`` or ``transaction_id``."""
        return self.client(api).refund(out_trade_no, out_refund_no, total_fee, refund_fee, notify_url, reason, transaction_id=transaction_id)

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        for client in (self.v2, self.v3):
            if client is not None:
                client.close()
