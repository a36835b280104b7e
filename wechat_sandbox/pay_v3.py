"""WeChat Pay v3: JSON, requests checked and answers signed with SHA256withRSA, errors as HTTP status
and ``{"code", "message"}``.
"""
from __future__ import annotations

import base64
import functools
import json
import re
import time
import uuid
from datetime import datetime
from typing import Any, Callable, Mapping

from flask import Blueprint, Response, request
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding

from server.wechat.pay import V3_ATTACH_MAX_CHARS, V3_DESCRIPTION_MAX_CHARS, V3_REASON_MAX_BYTES
from wechat_sandbox.core import state
from wechat_sandbox.pay_state import (
    OUT_REFUND_NO_RE,
    PAY_V3_MAX_SKEW,
    TRADE_REFUND,
    TRADE_STATE_DESC,
    TRADE_SUCCESS,
    TRANSACTION_ID_RE,
    V3_MIN_PAY_WINDOW,
    PayFault,
    PayOrder,
    PayRefund,
    _check_appid,
    _check_openid,
    _check_text,
    _notify_url,
    _out_trade_no,
    _positive_int,
    _rfc3339,
    _V3Fault,
    pay_state,
)

pay_v3_bp = Blueprint("sandbox_pay_v3", __name__)


def _v3_answer(status: int, payload: Mapping[str, Any] | None) -> Response:
    """An answer signed with the platform key, as WeChat Pay signs every answer."""
    body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = pay_state().v3_headers(body) | {"Request-ID": str(uuid.uuid4())}
    response = Response(body, status=status, headers=headers)
    if payload is not None:
        response.content_type = "application/json; charset=utf-8"
    return response


@pay_v3_bp.errorhandler(_V3Fault)
def _v3_fault(fault: _V3Fault) -> Response:
    return _v3_answer(fault.status, {"code": fault.code, "message": fault.message})


def _check_v3_authorization(body: bytes) -> None:
    """Our Authorization header, verified as WeChat does: scheme, merchant, serial, clock, signature."""
    merchant = pay_state().merchant
    scheme, _, rest = (request.headers.get("Authorization") or "").partition(" ")
    fields = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    refused = _V3Fault(401, "SIGN_ERROR", "签名错误，请检查后再试")
    if scheme != "WECHATPAY2-SHA256-RSA2048" or fields.get("mchid") != merchant.mch_id:
        raise refused
    if fields.get("serial_no") != merchant.merchant_serial:
        raise _V3Fault(401, "SIGN_ERROR", "商户证书序列号有误")
    try:
        stamp = int(fields.get("timestamp", ""))
    except ValueError:
        raise refused from None
    if abs(time.time() - stamp) > PAY_V3_MAX_SKEW:
        raise _V3Fault(401, "SIGN_ERROR", "请求时间戳与当前时间相差过大")
    # The URL exactly as the client sent it: path and query, undecoded.
    uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.full_path.rstrip("?")
    message = f"{request.method}\n{uri}\n{fields['timestamp']}\n{fields.get('nonce_str', '')}\n".encode("utf-8") + body + b"\n"
    try:
        signature = base64.b64decode(fields.get("signature", ""), validate=True)
        merchant.merchant_public_key.verify(signature, message, asym_padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise refused from None


def pay_v3_api(rule: str, method: str) -> Callable[[Callable[..., tuple[int, Mapping[str, Any] | None]]], Callable[..., Any]]:
    """A v3 endpoint: authenticated, JSON in, (status, JSON or None) out, signed; a PayFault becomes its v3 error."""

    def decorator(view: Callable[..., tuple[int, Mapping[str, Any] | None]]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> Response:
            state().count(rule)
            if request.method != method:
                raise _V3Fault(405, "INVALID_REQUEST", f"请使用{method}方法")
            raw = request.get_data(cache=True)
            _check_v3_authorization(raw)
            body: dict[str, Any] = {}
            if method == "POST":
                try:
                    parsed = json.loads(raw or b"null")
                except ValueError:
                    raise _V3Fault(400, "PARAM_ERROR", "请求体不是合法的JSON") from None
                if not isinstance(parsed, dict):
                    raise _V3Fault(400, "PARAM_ERROR", "请求体不是JSON对象")
                body = parsed
            try:
                status, payload = view(body, **kwargs)
            except PayFault as fault:
                raise _V3Fault(fault.status, fault.v3_code, fault.message) from None
            return _v3_answer(status, payload)

        pay_v3_bp.add_url_rule(rule, view.__name__, wrapper, methods=["GET", "POST"])
        return view

    return decorator


def _v3_mchid(value: Any) -> None:
    if value != pay_state().merchant.mch_id:
        raise PayFault("MCH_NOT_EXISTS", 400, "MCH_NOT_EXISTS", "商户号不存在")


def _v3_trade(order: PayOrder) -> dict[str, Any]:
    trade: dict[str, Any] = {
        "appid": order.appid,
        "mchid": pay_state().merchant.mch_id,
        "out_trade_no": order.out_trade_no,
        "trade_state": order.state,
        "trade_state_desc": TRADE_STATE_DESC[order.state],
        "amount": {"total": order.total_fee, "currency": "CNY", "payer_currency": "CNY"},
    }
    if order.state in (TRADE_SUCCESS, TRADE_REFUND):
        trade |= {
            "transaction_id": order.transaction_id,
            "trade_type": "JSAPI",
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": _rfc3339(order.paid_at or time.time()),
            "payer": {"openid": order.openid},
            "promotion_detail": [],
        }
        trade["amount"]["payer_total"] = order.total_fee
    return trade


@pay_v3_api("/v3/pay/transactions/jsapi", "POST")
def jsapi_prepay(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    _v3_mchid(body.get("mchid"))
    appid = _check_appid(body.get("appid"))
    for name in ("description", "out_trade_no", "notify_url", "amount", "payer"):
        if not body.get(name):
            raise PayFault.missing(name)
    description = body["description"]
    _check_text(description, "description", V3_DESCRIPTION_MAX_CHARS, "chars")
    _check_text(body.get("attach"), "attach", V3_ATTACH_MAX_CHARS, "chars")
    amount, payer = body["amount"], body["payer"]
    if not isinstance(amount, dict) or not isinstance(payer, dict) or not isinstance(amount.get("total"), int):
        raise PayFault.param("amount.total或payer.openid参数格式错误")
    if amount.get("currency", "CNY") != "CNY" or not payer.get("openid"):
        raise PayFault.param("amount.currency或payer.openid参数格式错误")
    out_trade_no = _out_trade_no(body["out_trade_no"])
    openid = _check_openid(appid, payer["openid"])
    time_expire = None
    if body.get("time_expire"):
        try:
            parsed = datetime.fromisoformat(str(body["time_expire"]))
        except ValueError:
            raise PayFault.param("time_expire参数格式错误") from None
        if parsed.tzinfo is None:
            raise PayFault.param("time_expire参数格式错误，需为rfc3339格式")
        # v3 documents no refusal: an end sooner than a minute away is moved to a minute away.
        time_expire = max(parsed.timestamp(), time.time() + V3_MIN_PAY_WINDOW)
    order = pay_state().open_order(
        out_trade_no=out_trade_no,
        appid=appid,
        openid=openid,
        total_fee=_positive_int(amount["total"], "amount.total"),
        description=description,
        notify_url=_notify_url(body["notify_url"]),
        api="v3",
        time_expire=time_expire,
    )
    return 200, {"prepay_id": order.prepay_id}


@pay_v3_api("/v3/pay/transactions/out-trade-no/<out_trade_no>", "GET")
def query_order_v3(body: dict[str, Any], out_trade_no: str) -> tuple[int, dict[str, Any]]:
    if not request.args.get("mchid"):
        raise PayFault.missing("mchid")
    _v3_mchid(request.args.get("mchid"))
    return 200, _v3_trade(pay_state().order(_out_trade_no(out_trade_no)))


@pay_v3_api("/v3/pay/transactions/out-trade-no/<out_trade_no>/close", "POST")
def close_order_v3(body: dict[str, Any], out_trade_no: str) -> tuple[int, None]:
    _v3_mchid(body.get("mchid"))
    pay_state().close(_out_trade_no(out_trade_no))
    return 204, None


def _v3_refund_view(refund: PayRefund, order: PayOrder, *, channel: str = "ORIGINAL", account: str = "支付用户零钱") -> dict[str, Any]:
    """A refund as v3 answers it (the refund, its query and an abnormal refund sent again)."""
    return {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "channel": channel,
        "user_received_account": account,
        "create_time": _rfc3339(refund.created_at),
        "status": refund.status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": order.total_fee,
            "refund": refund.refund_fee,
            "payer_total": order.total_fee,
            "payer_refund": refund.refund_fee,
            "settlement_total": order.total_fee,
            "settlement_refund": refund.refund_fee,
            "discount_refund": 0,
            "currency": "CNY",
        },
    }


@pay_v3_api("/v3/refund/domestic/refunds", "POST")
def refund_v3(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    for name in ("out_refund_no", "amount"):
        if not body.get(name):
            raise PayFault.missing(name)
    out_trade_no, transaction_id = body.get("out_trade_no"), body.get("transaction_id")
    if not (out_trade_no or transaction_id):
        raise PayFault.missing("out_trade_no或transaction_id")
    if out_trade_no is not None:
        _out_trade_no(out_trade_no)
    if transaction_id is not None and (not isinstance(transaction_id, str) or not TRANSACTION_ID_RE.fullmatch(transaction_id)):
        raise PayFault.param("transaction_id参数格式错误")
    _check_text(body.get("reason"), "reason", V3_REASON_MAX_BYTES, "bytes")
    amount = body["amount"]
    if not isinstance(amount, dict) or amount.get("currency") != "CNY":
        raise PayFault.param("amount参数格式错误")
    if not isinstance(body["out_refund_no"], str) or not OUT_REFUND_NO_RE.fullmatch(body["out_refund_no"]):
        raise PayFault.param("out_refund_no参数格式错误")
    refund = pay_state().open_refund(
        out_trade_no=out_trade_no,
        transaction_id=transaction_id,
        out_refund_no=body["out_refund_no"],
        total_fee=_positive_int(amount.get("total"), "amount.total"),
        refund_fee=_positive_int(amount.get("refund"), "amount.refund"),
        notify_url=_notify_url(body["notify_url"]) if body.get("notify_url") else None,
        api="v3",
        reason=body.get("reason") or "",
    )
    return 200, _v3_refund_view(refund, pay_state().order(refund.out_trade_no))


#: The debit cards 发起异常退款 can pay into, by WeChat Pay's bank code.
ABNORMAL_REFUND_BANKS = frozenset(
    f"{bank}_DEBIT" for bank in ("CMB", "COMM", "ABC", "CCB", "ICBC", "BOC", "SPABANK", "SPDB", "CITIC", "CEB", "CMBC", "CIB", "GDB", "PSBC", "NBCB")
)


def _platform_decrypt(value: Any, name: str) -> str:
    """A field the merchant encrypted (RSA-OAEP, SHA-1) with the key its ``Wechatpay-Serial`` names: a platform
    certificate in force or the WeChat Pay public key; PARAM_ERROR otherwise."""
    key = pay_state().private_key_of(request.headers.get("Wechatpay-Serial") or "")
    if key is None:
        raise PayFault.param("Wechatpay-Serial与加密所用证书不一致")
    try:
        sealed = base64.b64decode(str(value), validate=True)
        padding = asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        return key.decrypt(sealed, padding).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise PayFault.param(f"{name}解密失败") from None


@pay_v3_api("/v3/certificates", "GET")
def certificates(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """下载平台证书: the certificates not yet expired, sealed with the APIv3 key; a merchant given only the
    WeChat Pay public key has none, and WeChat answers 404 RESOURCE_NOT_EXISTS."""
    listing = pay_state().certificate_list()
    if not listing["data"]:
        raise PayFault("RESOURCE_NOT_EXISTS", 404, "RESOURCE_NOT_EXISTS", "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥")
    return 200, listing


@pay_v3_api("/v3/refund/domestic/refunds/<out_refund_no>", "GET")
def query_refund_v3(body: dict[str, Any], out_refund_no: str) -> tuple[int, dict[str, Any]]:
    refund = pay_state().refund(out_refund_no)
    return 200, _v3_refund_view(refund, pay_state().order(refund.out_trade_no))


@pay_v3_api("/v3/refund/domestic/refunds/<refund_id>/apply-abnormal-refund", "POST")
def apply_abnormal_refund(body: dict[str, Any], refund_id: str) -> tuple[int, dict[str, Any]]:
    out_refund_no, kind = body.get("out_refund_no"), body.get("type")
    if not isinstance(out_refund_no, str) or not out_refund_no:
        raise PayFault.missing("out_refund_no")
    if kind not in ("USER_BANK_CARD", "MERCHANT_BANK_CARD"):
        raise PayFault.param("type参数格式错误")
    target = {"type": kind}
    if kind == "USER_BANK_CARD":
        for name in ("bank_type", "bank_account", "real_name"):
            if not body.get(name):
                raise PayFault.missing(name)
        if body["bank_type"] not in ABNORMAL_REFUND_BANKS:
            raise PayFault.param("bank_type不支持，仅支持部分银行的借记卡")
        account = _platform_decrypt(body["bank_account"], "bank_account")
        _platform_decrypt(body["real_name"], "real_name")
        if not account.isdigit():
            raise PayFault.param("bank_account参数格式错误")
        target |= {"bank_type": body["bank_type"], "account_tail": account[-4:]}
    refund = pay_state().resend_abnormal(refund_id, out_refund_no, target)
    to_card = kind == "USER_BANK_CARD"
    view = _v3_refund_view(
        refund, pay_state().order(refund.out_trade_no), channel="BANK" if to_card else "ORIGINAL", account="用户银行卡" if to_card else "交易商户银行账户"
    )
    return 200, view
