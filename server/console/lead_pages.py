"""The lead pool's pages: filter, review, assign, follow up with notes, reveal the phone, link to a member, sign a contract.

Every action calls the service the admin API's lead routes call (``referral.services.review_lead``,
``referral.lead_work``, ``orders.contracts.create_contract``); the list is ``referral.queries.lead_pool``,
the same selection the API pages through.
"""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Mapping

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from server import db
from server.accounts.models import Member, Staff
from server.console import queries
from server.console.labels import CHANNEL, FOLLOW_UP, LEAD_SOURCE, LEAD_STATUS
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, date_arg, field_errors, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.errors import AppError, ConflictError, ValidationError
from server.orders.contracts import InstallmentPlan, create_contract
from server.orders.models import Order, OrderKind
from server.referral import lead_work
from server.referral.errors import IllegalFollowUpError, LeadAlreadyReviewedError, LeadNotQualifiedError
from server.referral.lead_work import FOLLOW_UP_TRANSITIONS, LEAD_ROLES
from server.referral.models import Lead, LeadFollowUp, LeadSource, LeadStatus, Partner
from server.referral.queries import LeadFilters, lead_pool
from server.referral.services import review_lead

#: An id typed into a form or a filter: digits, at most 18 of them (a BIGINT).
ID_RE = re.compile(r"^[0-9]{1,18}$")
#: An amount in yuan: up to twelve digits, and at most two decimals.
YUAN_RE = re.compile(r"^([0-9]{1,12})(?:\.([0-9]{1,2}))?$")
#: The most installments a contract form takes, as the admin API.
MAX_INSTALLMENTS = 60
#: The largest contract amount in fen the form takes (¥100 million).
MAX_CONTRACT_FEN = 10_000_000_000


def id_value(text: str) -> int | None:
    """A positive id typed by a person, or None."""
    text = text.strip()
    return int(text) if ID_RE.match(text) and int(text) > 0 else None


def fen_value(text: str) -> int | None:
    """Yuan as typed ("1200", "1,200.50") in fen, or None when it is not a positive amount with at most two decimals."""
    cleaned = text.strip().replace(",", "").replace("，", "").lstrip("¥")
    found = YUAN_RE.match(cleaned)
    if found is None:
        return None
    fen = int(found.group(1)) * 100 + int((found.group(2) or "").ljust(2, "0"))
    return fen or None


def _choice(args: Mapping[str, str], name: str, table: dict[str, str]) -> str | None:
    value = args.get(name, "")
    return value if value in table else None


def lead_workers() -> list[Staff]:
    """Active accounts a lead may be assigned to."""
    return list(db.session().scalars(select(Staff).where(Staff.active.is_(True), Staff.role.in_(LEAD_ROLES)).order_by(Staff.username)))


def lead_filters(args: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The lead pool's selection for the filters in ``args``, and their problems."""
    problems: list[str] = []
    start_day, end_day = date_arg("from", problems, args), date_arg("to", problems, args)
    assignee = args.get("assignee", "")
    sharer = args.get("sharer", "").strip()
    if sharer and id_value(sharer) is None:
        problems.append("分享人请填写会员 ID（数字）。")
    filters = LeadFilters(
        status=LeadStatus(s) if (s := _choice(args, "status", LEAD_STATUS)) else None,
        follow_up=LeadFollowUp(f) if (f := _choice(args, "follow_up", FOLLOW_UP)) else None,
        source=LeadSource(src) if (src := _choice(args, "source", LEAD_SOURCE)) else None,
        assignee_id=0 if assignee == "none" else id_value(assignee),
        channel=_choice(args, "channel", CHANNEL),
        sharer_id=id_value(sharer),
        start=queries.day_start(start_day) if start_day else None,
        end=queries.day_start(end_day + timedelta(days=1)) if end_day else None,
    )
    return lead_pool(filters), problems


@bp.get("/leads")
@console_view("leads")
def leads() -> Any:
    """The lead pool, newest first, with its filters in the URL."""
    sess = db.session()
    stmt, problems = lead_filters(request.args)
    page = int_arg("page", 1)
    rows, total = db.paginate(sess, stmt, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=(Lead.id.desc(),), count_cap=COUNT_CAP)
    staff = {s.id: s for s in queries.staff_names(sess)}
    sharers = {m.id: m for m in sess.scalars(select(Member).where(Member.id.in_({r.sharer_id for r in rows if r.sharer_id})))}
    return render_template(
        "console/leads.html",
        rows=rows,
        staff=staff,
        sharers=sharers,
        workers=lead_workers(),
        args=request.args,
        problems=problems,
        tables={"status": LEAD_STATUS, "follow_up": FOLLOW_UP, "source": LEAD_SOURCE, "channel": CHANNEL},
        pager=pages(total),
    )


@bp.get("/leads/<int:lead_id>")
@console_view("leads")
def lead(lead_id: int, errors: dict[str, str] | None = None, status: int = 200, phone: str | None = None) -> Any:
    sess = db.session()
    found = lead_work.get_lead(sess, lead_id)
    member = sess.get(Member, found.member_id) if found.member_id else None
    contracts = list(
        sess.scalars(select(Order).where(Order.lead_id == found.id, Order.kind == OrderKind.contract).order_by(Order.id.desc()).limit(20))
    )
    return render_template(
        "console/lead.html",
        lead=found,
        member=member,
        sharer=sess.get(Member, found.sharer_id) if found.sharer_id else None,
        partner=sess.get(Partner, found.partner_id) if found.partner_id else None,
        staff={s.id: s for s in queries.staff_names(sess)},
        workers=lead_workers(),
        notes=lead_work.lead_notes(sess, found.id),
        next_states=sorted(FOLLOW_UP_TRANSITIONS[found.follow_up], key=list(LeadFollowUp).index),
        timeline=queries.member_timeline(sess, member.id) if member else [],
        contracts=contracts,
        phone=phone,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


def _back(lead_id: int, message: str) -> Response:
    flash(message, "success")
    return redirect(url_for("console.lead", lead_id=lead_id), 303)


@bp.post("/leads/<int:lead_id>/review")
@console_view("leads")
def lead_review(lead_id: int) -> Any:
    """Mark a new lead valid or invalid (a valid lead credits its sharer's points, once)."""
    decision = request.form.get("status", "")
    if decision not in ("valid", "invalid"):
        return lead(lead_id, errors={"review": "请选择有效或无效。"}, status=422)
    lead_work.get_lead(db.session(), lead_id)
    try:
        review_lead(db.session(), lead_id, LeadStatus(decision), staff=current_staff(), note=form_text("note", 255))
    except LeadNotQualifiedError:
        return lead(lead_id, errors={"review": "只有留了手机号并写明需求的线索才能标为有效（分享进店只是登录，不是销售线索）。"}, status=422)
    except LeadAlreadyReviewedError:
        return lead(lead_id, errors={"review": "这条线索已经审核过了。"}, status=409)
    return _back(lead_id, "已标记为有效线索，分享人的积分已记入。" if decision == "valid" else "已标记为无效线索。")


@bp.post("/leads/<int:lead_id>/assign")
@console_view("leads")
def lead_assign(lead_id: int) -> Any:
    raw = request.form.get("assignee_id", "")
    assignee = None if raw == "" else id_value(raw)
    if raw != "" and assignee is None:
        return lead(lead_id, errors={"assignee_id": "请选择负责人。"}, status=422)
    try:
        lead_work.assign_lead(db.session(), lead_id, assignee, staff_id=current_staff().id)
    except ValidationError:
        return lead(lead_id, errors={"assignee_id": "只能分配给在用的店主或运营账号。"}, status=422)
    return _back(lead_id, "已更新负责人。" if assignee else "已取消分配。")


@bp.post("/leads/<int:lead_id>/follow-up")
@console_view("leads")
def lead_follow_up(lead_id: int) -> Any:
    """A follow-up note, optionally moving the lead's follow-up state."""
    raw_state = request.form.get("state", "")
    if raw_state and raw_state not in FOLLOW_UP:
        return lead(lead_id, errors={"state": "请选择跟进状态。"}, status=422)
    note = request.form.get("note", "")
    if len(note.strip()) > lead_work.NOTE_LIMIT:
        return lead(lead_id, errors={"note": f"跟进记录最多 {lead_work.NOTE_LIMIT} 字。"}, status=422)
    try:
        lead_work.follow_up_lead(db.session(), lead_id, note, staff_id=current_staff().id, state=LeadFollowUp(raw_state) if raw_state else None)
    except ValidationError:
        return lead(lead_id, errors={"note": "请填写跟进记录。"}, status=422)
    except IllegalFollowUpError as error:
        data = error.data if isinstance(error.data, dict) else {}
        reason = "无效线索不能标为已成交。" if data.get("status") == "invalid" and data.get("to") == "converted" else (
            f"跟进状态不能从「{FOLLOW_UP.get(str(data.get('from')), '')}」改为「{FOLLOW_UP.get(str(data.get('to')), '')}」。"
        )
        return lead(lead_id, errors={"state": reason}, status=409)
    return _back(lead_id, "已记录跟进。")


@bp.post("/leads/<int:lead_id>/phone")
@console_view("leads.reveal_phone")
def lead_phone(lead_id: int) -> Any:
    """The full phone number, in place (htmx) or on the lead page; each reveal is audited by the service."""
    number = lead_work.reveal_lead_phone(db.session(), lead_id, staff_id=current_staff().id)
    if request.headers.get("HX-Request") == "true":
        return render_template("console/_lead_phone.html", phone=number)
    return lead(lead_id, phone=number)


#: The link form's refusals in Chinese, by the service's message.
LINK_REFUSALS = {
    "no such member": "找不到该会员。",
    "the member is disabled": "该会员已停用。",
    "the member shared the link that brought this lead": "该会员是这条线索的分享人，不能关联为线索本人。",
}


@bp.post("/leads/<int:lead_id>/member")
@console_view("leads")
def lead_member(lead_id: int) -> Any:
    """Link an anonymous lead to the member who left it and signed in later."""
    member_id = id_value(request.form.get("member_id", ""))
    if member_id is None:
        return lead(lead_id, errors={"member_id": "请输入会员 ID（数字）。"}, status=422)
    try:
        lead_work.link_lead_member(db.session(), lead_id, member_id, staff_id=current_staff().id)
    except ValidationError as error:
        message = field_errors(error).get("member_id", "")
        return lead(lead_id, errors={"member_id": LINK_REFUSALS.get(message, "无法关联该会员。")}, status=422)
    except ConflictError:
        return lead(lead_id, errors={"member_id": "这条线索已关联会员。"}, status=409)
    return _back(lead_id, f"已关联会员 {member_id}。")


def installment_plan(text: str) -> list[int] | None:
    """Installment amounts typed as yuan separated by commas, spaces or line breaks, in fen; None if any is wrong."""
    parts = [p for p in re.split(r"[\s,，、;；]+", text.strip()) if p]
    if not parts or len(parts) > MAX_INSTALLMENTS:
        return None
    amounts = [fen_value(p) for p in parts]
    return None if any(a is None for a in amounts) else [a for a in amounts if a is not None]


#: The contract form's refusals, by envelope code.
CONTRACT_REFUSALS = {
    42261: "只有审核为有效的线索才能签合同。",
    42262: "线索还没有关联会员，请先关联会员。",
    42263: "各期金额之和必须等于合同金额。",
    42264: "上一期合同必须是该会员已支付或已完成的合同。",
}


@bp.post("/leads/<int:lead_id>/contract")
@console_view("contracts.manage")
def lead_contract(lead_id: int) -> Any:
    """Turn a valid lead with a member into an offline contract with its installments."""
    title = form_text("title", 128)
    amount = fen_value(request.form.get("amount", "")[:32])
    plan = installment_plan(request.form.get("installments", "")[:2000])
    raw_parent = request.form.get("parent_order_id", "").strip()
    parent = id_value(raw_parent) if raw_parent else None
    errors = {}
    if not title:
        errors["title"] = "请填写合同名称。"
    if amount is None or amount > MAX_CONTRACT_FEN:
        errors["amount"] = "请填写合同金额（元，最多两位小数）。"
    if plan is None:
        errors["installments"] = f"请按期填写金额（元），用逗号分隔，最多 {MAX_INSTALLMENTS} 期。"
    if raw_parent and parent is None:
        errors["parent_order_id"] = "上一期合同请填写合同 ID（数字）。"
    if errors:
        return lead(lead_id, errors=errors, status=422)
    assert amount is not None and plan is not None
    lead_work.get_lead(db.session(), lead_id)
    try:
        order = create_contract(
            db.session(),
            lead_id=lead_id,
            title=title,
            amount_fen=amount,
            installments=[InstallmentPlan(fen) for fen in plan],
            parent_order_id=parent,
            staff_id=current_staff().id,
        )
    except AppError as error:
        return lead(lead_id, errors={"contract": CONTRACT_REFUSALS.get(error.code, "无法创建合同，请检查后重试。")}, status=error.http_status)
    flash(f"已创建合同 {order.out_trade_no}。", "success")
    return redirect(url_for("console.contract", order_id=order.id), 303)
