"""WeChat Pay v2: XML signed with the API key (MD5 or HMAC-SHA256), errors as ``return_code``/``result_code``."""
from __future__ import annotations

import functools
import secrets
import time
from datetime import datetime
from typing import Any, Callable, Mapping

from flask import Blueprint, Response, request
from wechatpy.pay.utils import dict_to_xml

from server.wechat.pay import (
    CHINA_TZ,
    V2_ATTACH_MAX_BYTES,
    V2_BODY_MAX_BYTES,
    V2_DETAIL_MAX_BYTES,
    V2_REFUND_DESC_MAX_BYTES,
    WECHAT_MIN_PAY_WINDOW,
    parse_v2_xml,
)
from wechat_sandbox.core import _cdata, state
from wechat_sandbox.pay_state import (
    OUT_REFUND_NO_RE,
    REFUND_ENDINGS,
    TRADE_REFUND,
    TRADE_STATE_DESC,
    TRADE_SUCCESS,
    PayFault,
    PayOrder,
    _check_appid,
    _check_openid,
    _check_text,
    _china,
    _notify_url,
    _out_trade_no,
    _positive_int,
    _v2_signature,
    _V2ReturnFail,
    pay_state,
)

pay_v2_bp = Blueprint("sandbox_pay_v2", __name__)


@pay_v2_bp.errorhandler(_V2ReturnFail)
def _v2_return_fail(error: _V2ReturnFail) -> Response:
    xml = f"<xml><return_code>{_cdata('FAIL')}</return_code><return_msg>{_cdata(str(error))}</return_msg></xml>"
    return Response(xml, mimetype="text/xml")


def pay_v2_api(rule: str) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Callable[..., Any]]:
    """A v2 endpoint: reads and authenticates the signed XML, answers signed XML with the same sign type.

    The view gets the request's fields and returns the answer's business fields; a PayFault
    becomes ``result_code`` FAIL with its ``err_code``.
    """

    def decorator(view: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper() -> Response:
            state().count(rule)
            if request.method != "POST":
                raise _V2ReturnFail("请使用post方法")
            try:
                data = parse_v2_xml(request.get_data(cache=True))
            except ValueError:
                raise _V2ReturnFail("XML格式错误") from None
            merchant = pay_state().merchant
            if data.get("mch_id") != merchant.mch_id:
                raise _V2ReturnFail("mch_id参数格式错误")
            sign_type = data.get("sign_type") or "MD5"
            if sign_type not in ("MD5", "HMAC-SHA256"):
                raise _V2ReturnFail("sign_type参数格式错误")
            # As WeChat really answers a bad signature (its error table's SIGNERROR never shows up).
            if not data.get("sign") or data["sign"] != _v2_signature(data, merchant.api_key, sign_type):
                raise _V2ReturnFail("签名错误，请检查后再试")
            if not data.get("nonce_str"):
                raise _V2ReturnFail("缺少参数nonce_str")
            try:
                _check_appid(data.get("appid"))
                fields = {"result_code": "SUCCESS", **view(data)}
            except PayFault as fault:
                fields = {"result_code": "FAIL", "err_code": fault.v2_code, "err_code_des": fault.message}
            answer = {
                "return_code": "SUCCESS",
                "return_msg": "OK",
                "appid": data.get("appid") or "",
                "mch_id": merchant.mch_id,
                "nonce_str": secrets.token_hex(16),
                **fields,
            }
            return Response(dict_to_xml(answer, _v2_signature(answer, merchant.api_key, sign_type)), mimetype="text/xml")

        pay_v2_bp.add_url_rule(rule, view.__name__, wrapper, methods=["GET", "POST"])
        return view

    return decorator


def _required(data: Mapping[str, Any], *names: str) -> None:
    for name in names:
        if not data.get(name):
            raise PayFault.missing(name)


def _v2_trade(order: PayOrder) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "out_trade_no": order.out_trade_no,
        "trade_state": order.state,
        "trade_state_desc": TRADE_STATE_DESC[order.state],
    }
    if order.state in (TRADE_SUCCESS, TRADE_REFUND):
        fields |= {
            "openid": order.openid,
            "is_subscribe": "N",
            "trade_type": "JSAPI",
            "bank_type": "OTHERS",
            "total_fee": order.total_fee,
            "cash_fee": order.total_fee,
            "fee_type": "CNY",
            "transaction_id": order.transaction_id,
            "time_end": _china(order.paid_at or time.time()).strftime("%Y%m%d%H%M%S"),
        }
    return fields


def _china_epoch(value: str) -> float:
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=CHINA_TZ).timestamp()
    except ValueError:
        raise PayFault.param("time_expire参数格式错误") from None


@pay_v2_api("/pay/unifiedorder")
def unified_order(data: dict[str, Any]) -> dict[str, Any]:
    _required(data, "body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type")
    if data["trade_type"] != "JSAPI":
        raise PayFault("PARAM_ERROR", 400, "PARAM_ERROR", "sandbox: only trade_type JSAPI is served")
    if not data.get("openid"):
        raise PayFault("LACK_PARAMS", 400, "PARAM_ERROR", "JSAPI支付必须传openid")
    _check_text(data["body"], "body", V2_BODY_MAX_BYTES, "bytes")
    _check_text(data.get("attach"), "attach", V2_ATTACH_MAX_BYTES, "bytes")
    _check_text(data.get("detail"), "detail", V2_DETAIL_MAX_BYTES, "bytes")
    out_trade_no = _out_trade_no(data["out_trade_no"])
    openid = _check_openid(data["appid"], data["openid"])
    time_expire = _china_epoch(data["time_expire"]) if data.get("time_expire") else None
    # WeChat refuses a window of five minutes or less ("exactly five" included, in practice).
    if time_expire is not None and time_expire - time.time() <= WECHAT_MIN_PAY_WINDOW.total_seconds():
        raise PayFault("INVALID_REQUEST", 400, "PARAM_ERROR", "time_expire时间过短，刷卡至少1分钟，其他5分钟")
    order = pay_state().open_order(
        out_trade_no=out_trade_no,
        appid=data["appid"],
        openid=openid,
        total_fee=_positive_int(data["total_fee"], "total_fee"),
        description=data["body"],
        notify_url=_notify_url(data["notify_url"]),
        api="v2",
        sign_type=data.get("sign_type") or "MD5",
        time_expire=time_expire,
    )
    return {"trade_type": "JSAPI", "prepay_id": order.prepay_id}


@pay_v2_api("/pay/orderquery")
def order_query(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("transaction_id"):
        with pay_state().lock:
            found = next((o for o in pay_state().orders.values() if o.transaction_id == data["transaction_id"]), None)
        if found is None:
            raise PayFault("ORDERNOTEXIST", 404, "ORDER_NOT_EXIST", "order not exist")
        return _v2_trade(found)
    _required(data, "out_trade_no")
    return _v2_trade(pay_state().order(data["out_trade_no"]))


@pay_v2_api("/pay/refundquery")
def refund_query_v2(data: dict[str, Any]) -> dict[str, Any]:
    _required(data, "out_refund_no")
    refund = pay_state().refund(data["out_refund_no"])
    order = pay_state().order(refund.out_trade_no)
    return {
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "total_fee": order.total_fee,
        "cash_fee": order.total_fee,
        "refund_count": 1,
        "out_refund_no_0": refund.out_refund_no,
        "refund_id_0": refund.refund_id,
        "refund_fee_0": refund.refund_fee,
        "refund_status_0": REFUND_ENDINGS.get(refund.status, refund.status),
        "refund_channel_0": "ORIGINAL",
    }


@pay_v2_api("/pay/closeorder")
def close_order_v2(data: dict[str, Any]) -> dict[str, Any]:
    _required(data, "out_trade_no")
    pay_state().close(data["out_trade_no"])
    return {}


@pay_v2_api("/secapi/pay/refund")
def refund_v2(data: dict[str, Any]) -> dict[str, Any]:
    # WeChat wants the client certificate here; over plain HTTP there is none to check.
    _required(data, "out_refund_no", "total_fee", "refund_fee")
    if not (data.get("out_trade_no") or data.get("transaction_id")):
        raise PayFault.missing("out_trade_no或transaction_id")
    if not OUT_REFUND_NO_RE.fullmatch(data["out_refund_no"]):
        raise PayFault.param("out_refund_no参数格式错误")
    _check_text(data.get("refund_desc"), "refund_desc", V2_REFUND_DESC_MAX_BYTES, "bytes")
    refund = pay_state().open_refund(
        out_trade_no=data.get("out_trade_no"),
        transaction_id=data.get("transaction_id"),
        out_refund_no=data["out_refund_no"],
        total_fee=_positive_int(data["total_fee"], "total_fee"),
        refund_fee=_positive_int(data["refund_fee"], "refund_fee"),
        notify_url=_notify_url(data["notify_url"]) if data.get("notify_url") else None,
        api="v2",
        reason=data.get("refund_desc") or "",
    )
    order = pay_state().order(refund.out_trade_no)
    return {
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "out_refund_no": refund.out_refund_no,
        "refund_id": refund.refund_id,
        "refund_fee": refund.refund_fee,
        "settlement_refund_fee": refund.refund_fee,
        "total_fee": order.total_fee,
        "settlement_total_fee": order.total_fee,
        "fee_type": "CNY",
        "cash_fee": order.total_fee,
        "cash_refund_fee": refund.refund_fee,
    }
