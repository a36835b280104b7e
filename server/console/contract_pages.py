"""Offline contracts: the list (and finance's confirmation queue), a contract with its installments, receipts,
the final confirmation and cancelling, on ``server.orders.contracts`` as the admin API's contract routes."""
from __future__ import annotations

from datetime import datetime, time
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from server import db
from server.accounts.models import Member
from server.clock import CHINA
from server.console import queries
from server.console.labels import ORDER_STATUS
from server.console.lead_pages import id_value
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.db import utcnow
from server.errors import AppError
from server.orders import contracts as contract_services
from server.orders.models import Order, OrderKind, OrderStatus

#: The statuses a contract can be in, in the order the filter lists them.
CONTRACT_STATUSES = ("created", "paid", "completed", "closed", "refunding", "refunded")


@bp.get("/contracts")
@console_view("contracts")
def contracts() -> Any:
    """Contracts, newest first, by status or member; ``queue=confirm`` is finance's queue, oldest first."""
    sess = db.session()
    page = int_arg("page", 1)
    queue = request.args.get("queue") == "confirm"
    status = request.args.get("status", "")
    member_id = id_value(request.args.get("member", ""))
    if queue:
        rows, total = contract_services.confirmation_queue(sess, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    else:
        stmt = select(Order).where(Order.kind == OrderKind.contract)
        if status in CONTRACT_STATUSES:
            stmt = stmt.where(Order.status == OrderStatus(status))
        if member_id is not None:
            stmt = stmt.where(Order.member_id == member_id)
        rows, total = db.paginate(sess, stmt, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=(Order.id.desc(),), count_cap=COUNT_CAP)
    members = {m.id: m for m in sess.scalars(select(Member).where(Member.id.in_({o.member_id for o in rows})))}
    return render_template(
        "console/contracts.html",
        rows=rows,
        members=members,
        progress=contract_services.installment_progress(sess, [o.id for o in rows]),
        statuses=[(s, ORDER_STATUS[s]) for s in CONTRACT_STATUSES],
        queue=queue,
        args=request.args,
        pager=pages(total),
    )


@bp.get("/contracts/<int:order_id>")
@console_view("contracts")
def contract(order_id: int, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    sess = db.session()
    order = contract_services.get_contract(sess, order_id)
    installments = contract_services.installments_of(sess, order.id)
    return render_template(
        "console/contract.html",
        order=order,
        member=sess.get(Member, order.member_id),
        installments=installments,
        outstanding=[i.seq for i in installments if i.received_at is None],
        phases=contract_services.contract_phases(sess, order),
        staff={s.id: s for s in queries.staff_names(sess)},
        errors=errors or {},
        form=request.form if errors else {},
    ), status


def _back(order_id: int, message: str) -> Response:
    flash(message, "success")
    return redirect(url_for("console.contract", order_id=order_id), 303)


#: What the contract forms say for the services' refusals, by envelope code.
REFUSALS = {
    40464: "该合同没有这一期。",
    40965: "这一期已经登记到账。",
    40966: "还有分期未到账，不能确认尾款。",
    40967: "尾款已经确认过了。",
}


def _refusal(error: AppError) -> str:
    if error.code in REFUSALS:
        return REFUSALS[error.code]
    status = error.data.get("status") if isinstance(error.data, dict) else None
    if status:
        return f"合同当前为「{ORDER_STATUS.get(str(status), status)}」，不能进行此操作。"
    return "无法完成此操作，请刷新后重试。"


def received_time(text: str) -> datetime | None | str:
    """The receipt day typed in the form (China time, noon so the day survives any clock), None for now, or "bad"."""
    text = text.strip()
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        return "bad"
    when = datetime.combine(day, time(12), tzinfo=CHINA)
    return "bad" if day.year < 2000 or when.date() > utcnow().astimezone(CHINA).date() else min(when, utcnow())


@bp.post("/contracts/<int:order_id>/installments/<int:seq>/receive")
@console_view("contracts.receive")
def contract_receive(order_id: int, seq: int) -> Any:
    """Finance records that an installment arrived; the first one makes the contract paid."""
    contract_services.get_contract(db.session(), order_id)
    when = received_time(request.form.get("received_on", "")[:20])
    if when == "bad":
        return contract(order_id, errors={f"seq-{seq}": "到账日期应为今天或更早的 YYYY-MM-DD。"}, status=422)
    try:
        contract_services.receive_installment(
            db.session(), order_id, seq, staff_id=current_staff().id, received_at=when if isinstance(when, datetime) else None, note=form_text("note", 255)
        )
    except AppError as error:
        return contract(order_id, errors={f"seq-{seq}": _refusal(error)}, status=error.http_status)
    return _back(order_id, f"已登记第 {seq} 期到账。")


@bp.post("/contracts/<int:order_id>/confirm-final")
@console_view("contracts.confirm")
def contract_confirm(order_id: int) -> Any:
    """Finance confirms the final payment: the contract completes and its points can mature."""
    contract_services.get_contract(db.session(), order_id)
    try:
        contract_services.confirm_final_payment(db.session(), order_id, staff_id=current_staff().id)
    except AppError as error:
        return contract(order_id, errors={"confirm": _refusal(error)}, status=error.http_status)
    return _back(order_id, "已确认尾款，合同已完成。")


@bp.post("/contracts/<int:order_id>/cancel")
@console_view("contracts.manage")
def contract_cancel(order_id: int) -> Any:
    """Operations withdraws a contract before any money arrived."""
    contract_services.get_contract(db.session(), order_id)
    try:
        contract_services.cancel_contract(db.session(), order_id, staff_id=current_staff().id, reason=form_text("reason", 255))
    except AppError as error:
        return contract(order_id, errors={"cancel": _refusal(error)}, status=error.http_status)
    return _back(order_id, "合同已撤销。")
