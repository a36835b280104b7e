"""The sandbox plays the buyer and WeChat's notifications (``/sandbox/pay/…``): paying an order,
ending a refund, and the signed notifications that follow.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from wechat_sandbox.core import _control_error
from wechat_sandbox.pay_state import REFUND_ENDINGS, PayFault, PayOrder, pay_state, send_notification

pay_control_bp = Blueprint("sandbox_pay_control", __name__, url_prefix="/sandbox/pay")


def _pay_order_view(order: PayOrder) -> dict[str, Any]:
    refunds = [vars(r) for r in pay_state().refunds.values() if r.out_trade_no == order.out_trade_no]
    return {**vars(order), "refunds": refunds}


@pay_control_bp.post("/pay")
def play_buyer_paying() -> Response:
    """``{"out_trade_no": …, "notify": true}``: the buyer pays; WeChat's notification goes to the notify URL.

    Answers the transaction and ``notification``: the app's status and body, and ``ok`` (whether
    WeChat would count it as received).
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("out_trade_no"), str):
        return _control_error(400, "need out_trade_no")
    paystate = pay_state()
    try:
        order = paystate.pay(body["out_trade_no"])
    except PayFault as fault:
        return _control_error(fault.status if fault.status == 404 else 409, fault.message)
    answer: dict[str, Any] = {"out_trade_no": order.out_trade_no, "transaction_id": order.transaction_id, "state": order.state}
    if body.get("notify", True):
        headers, payload = paystate.build_pay_notification(order.out_trade_no)
        answer["notification"] = send_notification(order.notify_url, headers, payload, order.api)
    return jsonify(answer)


@pay_control_bp.post("/refund-complete")
def end_refund() -> Response:
    """``{"out_refund_no": …, "status": "SUCCESS" | "ABNORMAL" | "CLOSED"}``: WeChat ends the refund and notifies."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("out_refund_no"), str):
        return _control_error(400, "need out_refund_no")
    status = body.get("status", "SUCCESS")
    if status not in REFUND_ENDINGS:
        return _control_error(400, f"status must be one of {', '.join(REFUND_ENDINGS)}")
    paystate = pay_state()
    try:
        refund = paystate.refund(body["out_refund_no"])
    except PayFault as fault:
        return _control_error(404, fault.message)
    if refund.status != "PROCESSING" and refund.status != status:
        return _control_error(409, f"the refund already ended {refund.status}")
    headers, payload = paystate.build_refund_notification(refund.out_refund_no, status=status)
    answer: dict[str, Any] = {"out_refund_no": refund.out_refund_no, "refund_id": refund.refund_id, "status": refund.status}
    if refund.notify_url:
        answer["notification"] = send_notification(refund.notify_url, headers, payload, refund.api)
    return jsonify(answer)


@pay_control_bp.post("/notifications")
def make_notification() -> Response:
    """Build, without sending, a signed notification: ``{"out_trade_no"}`` or ``{"out_refund_no", "status"}``,
    optionally with ``api`` and ``sign_type``; answers ``{"headers", "body"}``."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _control_error(400, "need a JSON object")
    options = {k: body[k] for k in ("api", "sign_type") if isinstance(body.get(k), str)}
    try:
        if isinstance(body.get("out_trade_no"), str):
            headers, payload = pay_state().build_pay_notification(body["out_trade_no"], **options)
        elif isinstance(body.get("out_refund_no"), str):
            status = body.get("status", "SUCCESS")
            if status not in REFUND_ENDINGS:
                return _control_error(400, f"status must be one of {', '.join(REFUND_ENDINGS)}")
            headers, payload = pay_state().build_refund_notification(body["out_refund_no"], status=status, api=options.get("api"))
        else:
            return _control_error(400, "need out_trade_no or out_refund_no")
    except PayFault as fault:
        return _control_error(404 if fault.status == 404 else 409, fault.message)
    return jsonify(headers=headers, body=payload.decode("utf-8"))


@pay_control_bp.get("/orders/<out_trade_no>")
def show_pay_order(out_trade_no: str) -> Response:
    """What WeChat Pay knows of an order and its refunds."""
    try:
        order = pay_state().order(out_trade_no)
    except PayFault:
        return _control_error(404, "no such order")
    with pay_state().lock:
        return jsonify(_pay_order_view(order))


@pay_control_bp.post("/reset")
def reset_pay() -> Response:
    """Forget every order and refund (the merchant stays)."""
    pay_state().reset()
    return jsonify(ok=True)


@pay_control_bp.post("/certificates/rotate")
def rotate_certificates() -> Response:
    """WeChat rotates the platform certificate: ``{"old_expires_in": seconds}`` (default 7 days) is how long the
    ones before stay valid; a new one signs from now on. Answers every certificate's serial and validity."""
    body = request.get_json(silent=True) or {}
    old_expires_in = body.get("old_expires_in", 7 * 86400) if isinstance(body, dict) else None
    if isinstance(old_expires_in, bool) or not isinstance(old_expires_in, (int, float)):
        return _control_error(400, "old_expires_in is a number of seconds")
    fresh = pay_state().rotate_certificates(float(old_expires_in))
    listing = [{"serial_no": c.serial, "effective": c.effective, "expires": c.expires} for c in pay_state().certificates()]
    return jsonify(new=fresh.serial, certificates=listing)


@pay_control_bp.put("/signer")
def set_signer() -> Response:
    """``{"signer": "public_key" | "certificate"}``: what WeChat Pay signs answers and notifications with."""
    body = request.get_json(silent=True)
    try:
        pay_state().set_signer(body.get("signer") if isinstance(body, dict) else None)  # type: ignore[arg-type]
    except ValueError as error:
        return _control_error(400, str(error))
    return jsonify(signer=pay_state().signer)
