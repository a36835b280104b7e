"""The console's order pages: the order list, the order with its timeline, shipping, and refunds
(a member's request approved or rejected, a staff refund, the failed and abnormal refunds queue).

Every action validates its form with the admin API's own request body and calls the service the
admin route calls; approved refunds go to WeChat Pay after the commit (``submit_refund_after_commit``),
and an abnormal refund is resent by ``resend_abnormal_refund``, which commits before WeChat is asked.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Mapping

from flask import flash, redirect, render_template, request, url_for
from pydantic import BaseModel
from werkzeug.wrappers import Response

from server import db
from server.api import validate
from server.console.labels import fen, label, yuan
from server.console.queries import day_start
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, date_arg, field_errors, form_text, int_arg, pages
from server.console.session import console_view, current_staff, safe_next
from server.errors import AppError, ValidationError
from server.orders import payments, services
from server.orders.errors import OrderNotFoundError, RefundNotFoundError, RefundTooLargeError
from server.orders.models import Order, OrderKind, OrderStatus, Refund, RefundStatus
from server.orders.queries import members_by_id, order_record, product_choices, staff_orders, staff_refunds
from server.orders.routes import RefundBody, RejectBody, ResendAbnormalBody, SettleOfflineBody, ShipBody

#: The refund queues, in the order of the tabs on the refunds page: status (or "" for all), label.
REFUND_TABS = (("requested", "待审批"), ("failed", "失败"), ("abnormal", "异常"), ("processing", "处理中"), ("", "全部"))

#: What each form field must be, in Chinese, for the messages of the API's body validation.
FIELD_RULES = {
    "carrier": "请填写快递公司（最多 32 字）。",
    "tracking_no": "请填写运单号（最多 64 字）。",
    "amount_fen": "退款金额应为大于 0 的金额，最多两位小数。",
    "reason": "请填写原因（最多 255 字）。",
    "note": "请写明线下如何处理（最多 255 字）。",
    "target": "请选择退款去向。",
    "bank_type": "请填写银行代码，如 ICBC_DEBIT。",
    "bank_account": "请填写 12 到 24 位银行卡号。",
    "real_name": "请填写持卡人姓名。",
    "body": "退到买家银行卡需要银行代码、卡号和姓名；退到商户账户则不填这些。",
}


def checked(model: type[BaseModel], payload: dict[str, Any]) -> Any:
    """``payload`` validated by the admin API's body ``model`` (ValidationError with each field's problem)."""
    return validate(model, payload)


def chinese_errors(error: AppError, prefix: str = "") -> dict[str, str]:
    """A validation error's fields with the console's Chinese rule for each, keyed ``prefix + field``."""
    found = field_errors(error)
    if not found:
        return {prefix + "form": error_message(error)}
    return {prefix + field: FIELD_RULES.get(field, message) for field, message in found.items()}


def error_message(error: AppError) -> str:
    """A service's refusal in Chinese."""
    data = error.data if isinstance(error.data, dict) else {}
    if isinstance(error, RefundTooLargeError):
        return f"退款金额超过可退金额：最多可退 {yuan(data.get('refundable_fen', 0))}。"
    if error.code == 40962:  # IllegalTransitionError
        if "status" in data:
            table = "order_status" if data["status"] in OrderStatus._value2member_map_ else "refund_status"
            return f"状态已变化（当前：{label(data['status'], table)}），无法执行此操作；请刷新后重试。"
        if "from" in data and "to" in data:
            return f"状态已变化：订单现在是「{label(data['from'], 'order_status')}」，不能改为「{label(data['to'], 'order_status')}」。"
        if "contract" in error.message:
            return "合同订单的款项在线下收取，请在线下退款。"
        if "refund id" in error.message:
            return "微信支付没有这笔退款的单号，请在线下处理。"
        return "订单当前的状态不允许此操作；请刷新后重试。"
    if error.code == 50360:
        return "微信支付未配置。"
    if error.http_status >= 500:
        return "微信支付暂时无法处理，请稍后重试；结果会在退款记录中更新。"
    return error.message


# -- the order list -----------------------------------------------------------------------------


def _member_id(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 18 else None


def order_filters(args: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The order list's selection for the filters in ``args``, and their problems."""
    problems: list[str] = []
    status_arg, kind_arg = args.get("status", ""), args.get("kind", "")
    inviter_arg, product_arg = args.get("inviter", "").strip()[:32], args.get("product", "").strip()[:32]
    q = args.get("q", "").strip()[:64]
    inviter = _member_id(inviter_arg)
    if inviter_arg and inviter is None:
        problems.append("邀请人应填写会员 ID（数字）。")
    start_day, end_day = date_arg("from", problems, args), date_arg("to", problems, args)
    stmt = staff_orders(
        status=OrderStatus(status_arg) if status_arg in OrderStatus._value2member_map_ else None,
        kind=OrderKind(kind_arg) if kind_arg in OrderKind._value2member_map_ else None,
        inviter_id=inviter,
        product_id=_member_id(product_arg),
        number=q if q.isascii() and q.isalnum() and len(q) <= 32 and not q.isdigit() else None,
        order_or_member_id=_member_id(q),
        openid=q if q and not q.isdigit() else None,
        start=day_start(start_day) if start_day else None,
        end=day_start(end_day + timedelta(days=1)) if end_day else None,
    )
    return stmt, problems


@bp.get("/orders")
@console_view("orders")
def orders() -> Any:
    """Orders, newest first, filtered by status, kind, creation dates (China time), inviter, product and a search."""
    sess = db.session()
    stmt, problems = order_filters(request.args)
    page = int_arg("page", 1)
    rows, total = db.paginate(sess, stmt, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=(Order.id.desc(),), count_cap=COUNT_CAP)
    return render_template(
        "console/orders.html",
        rows=rows,
        members=members_by_id(sess, {o.member_id for o in rows} | {o.inviter_id for o in rows} | {o.upline_id for o in rows}),
        products=product_choices(sess),
        statuses=list(OrderStatus),
        args=request.args,
        problems=problems,
        pager=pages(total),
    )


# -- one order ----------------------------------------------------------------------------------


def _order_or_404(order_id: int) -> Order:
    order = db.session().get(Order, order_id)
    if order is None:
        raise OrderNotFoundError()
    return order


@bp.get("/orders/<int:order_id>")
@console_view("orders")
def orders_view(order_id: int, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """The order: lines, amounts, referrers, payments, refunds, the timeline, and the role's actions."""
    sess = db.session()
    order = _order_or_404(order_id)
    return render_template(
        "console/order.html",
        order=order,
        record=order_record(sess, order),
        refundable=services.refundable(sess, order) if order.kind == OrderKind.online else 0,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


def _back_to(order_id: int, anchor: str = "") -> Response:
    target = safe_next(request.form.get("next"))
    return redirect(target or url_for("console.orders_view", order_id=order_id) + anchor, 303)


@bp.post("/orders/<int:order_id>/ship")
@console_view("orders.ship")
def orders_ship(order_id: int) -> Any:
    """Ship a paid order with its carrier and tracking number (the admin API's ``ship``)."""
    order = _order_or_404(order_id)
    try:
        body = checked(ShipBody, {"carrier": form_text("carrier", 100), "tracking_no": form_text("tracking_no", 100)})
        services.ship(db.session(), order, carrier=body.carrier, tracking_no=body.tracking_no, actor=f"staff:{current_staff().id}")
    except ValidationError as error:
        return orders_view(order_id, errors=chinese_errors(error), status=error.http_status)
    except AppError as error:
        # The ship form is gone once the order has moved on: the message goes at the top.
        return orders_view(order_id, errors={"form": error_message(error)}, status=error.http_status)
    flash(f"已发货：{body.carrier} {body.tracking_no}。", "success")
    return _back_to(order_id)


@bp.post("/orders/<int:order_id>/refunds")
@console_view("orders.refund")
def orders_refund(order_id: int) -> Any:
    """A staff refund (all that is refundable when no amount is given); WeChat Pay is asked after the commit."""
    order = _order_or_404(order_id)
    amount_text = form_text("amount", 32)
    amount = fen(amount_text) if amount_text else None
    if amount_text and amount is None:
        return orders_view(order_id, errors={"amount_fen": FIELD_RULES["amount_fen"]}, status=422)
    staff_id = current_staff().id
    try:
        body = checked(RefundBody, {"amount_fen": amount, "reason": form_text("reason", 1000)})
        refund = services.request_refund(
            db.session(), order, body.amount_fen, body.reason, actor=f"staff:{staff_id}", approved=True, staff_id=staff_id
        )
    except ValidationError as error:
        return orders_view(order_id, errors=chinese_errors(error), status=error.http_status)
    except AppError as error:
        key = "amount_fen" if isinstance(error, RefundTooLargeError) and services.refundable(db.session(), order) > 0 else "form"
        return orders_view(order_id, errors={key: error_message(error)}, status=error.http_status)
    payments.submit_refund_after_commit(refund.id)
    flash(f"已发起退款 {yuan(refund.amount_fen)}，正在提交微信支付。", "success")
    return _back_to(order_id, f"#refund-{refund.id}")


# -- refunds --------------------------------------------------------------------------------------


@bp.get("/refunds")
@console_view("refunds")
def refunds() -> Any:
    """Refunds by status, newest first: the requests to decide and the failed and abnormal ones to resolve."""
    sess = db.session()
    status_arg = request.args.get("status", "")
    status = RefundStatus(status_arg) if status_arg in RefundStatus._value2member_map_ else None
    page = int_arg("page", 1)
    rows, total = db.paginate(
        sess, staff_refunds(status), offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=(Refund.id.desc(),), count_column=Refund.id, scalars=False,
        count_cap=COUNT_CAP,
    )
    return render_template(
        "console/refunds.html",
        rows=[(refund, order) for refund, order in rows],
        members=members_by_id(sess, {order.member_id for _refund, order in rows}),
        tabs=REFUND_TABS,
        status=status.value if status else "",
        statuses=list(RefundStatus),
        pager=pages(total),
    )


def _refund_or_404(refund_id: int) -> Refund:
    refund = db.session().get(Refund, refund_id)
    if refund is None:
        raise RefundNotFoundError()
    return refund


def _refund_action(refund_id: int, act: Any, done: str) -> Any:
    """Run ``act(staff_id)`` on a refund; on a refusal, the order page with the message next to the refund."""
    refund = _refund_or_404(refund_id)
    order_id, key = refund.order_id, f"refund-{refund_id}"
    try:
        act(current_staff().id)
    except ValidationError as error:
        return orders_view(order_id, errors=chinese_errors(error, key + "-"), status=error.http_status)
    except AppError as error:
        return orders_view(order_id, errors={key: error_message(error)}, status=error.http_status)
    flash(done, "success")
    return _back_to(order_id, f"#{key}")


@bp.post("/refunds/<int:refund_id>/approve")
@console_view("refunds.decide")
def refunds_approve(refund_id: int) -> Any:
    """Approve a member's request; WeChat Pay is asked after the commit."""

    def act(staff_id: int) -> None:
        refund = services.approve_refund(db.session(), refund_id, actor=f"staff:{staff_id}", staff_id=staff_id)
        payments.submit_refund_after_commit(refund.id)

    return _refund_action(refund_id, act, "已批准退款，正在提交微信支付。")


@bp.post("/refunds/<int:refund_id>/reject")
@console_view("refunds.decide")
def refunds_reject(refund_id: int) -> Any:
    def act(staff_id: int) -> None:
        body = checked(RejectBody, {"reason": form_text("reason", 1000)})
        services.reject_refund(db.session(), refund_id, reason=body.reason, actor=f"staff:{staff_id}", staff_id=staff_id)

    return _refund_action(refund_id, act, "已拒绝退款申请，订单恢复原状态。")


@bp.post("/refunds/<int:refund_id>/settle-offline")
@console_view("refunds.settle_offline")
def refunds_settle_offline(refund_id: int) -> Any:
    """An abnormal refund paid to the buyer another way counts as paid out."""

    def act(staff_id: int) -> None:
        body = checked(SettleOfflineBody, {"note": form_text("note", 1000)})
        services.settle_abnormal_refund_offline(db.session(), refund_id, note=body.note, actor=f"staff:{staff_id}", staff_id=staff_id)

    return _refund_action(refund_id, act, "已记为线下退款完成。")


@bp.post("/refunds/<int:refund_id>/resend")
@console_view("refunds.resend")
def refunds_resend(refund_id: int) -> Any:
    """Ask WeChat Pay to pay an abnormal refund into another account; ``resend_abnormal_refund`` commits
    before it calls WeChat (its refusal is kept), as the admin API's resend does."""

    def act(staff_id: int) -> None:
        payload: dict[str, Any] = {"target": form_text("target", 32)}
        if payload["target"] == "user_bank_card":
            payload.update(bank_type=form_text("bank_type", 32) or None, bank_account=form_text("bank_account", 32) or None, real_name=form_text("real_name", 100) or None)
        body = checked(ResendAbnormalBody, payload)
        payments.resend_abnormal_refund(
            refund_id,
            target=body.target,
            bank_type=body.bank_type,
            bank_account=body.bank_account,
            real_name=body.real_name,
            actor=f"staff:{staff_id}",
            staff_id=staff_id,
        )

    return _refund_action(refund_id, act, "已请微信支付重新退款，结果以微信通知为准。")

