"""Feedback and report pages: the staff's queue filtered by state, kind and reported distributor, and an
item's page where staff start, resolve or dismiss it (with a reply the member sees), assign it and keep
internal notes.

Moves go through ``feedback.services.transition`` with the state the page showed, so when two staff
members act on one item at once the second is told it moved on. A report's distributor links to their
record, where the existing decisions (freeze, disable) are taken.
"""
from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select

from server import db
from server.accounts.models import Member, Staff
from server.console import labels
from server.console.forms import FIELD_LIMIT, checked, whole_number
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.distribution.models import Distributor
from server.errors import AppError
from server.feedback import routes as api
from server.feedback import services
from server.feedback.errors import IllegalFeedbackTransitionError
from server.feedback.models import FeedbackItem, FeedbackKind, FeedbackState

STATES, KINDS, CATEGORIES = labels.FEEDBACK_STATE, labels.FEEDBACK_KIND, labels.FEEDBACK_CATEGORY
ACTIONS = {"start": "受理", "resolve": "解决", "dismiss": "驳回"}
#: Which moves each state offers (the services' transition table decides; this only shows the buttons).
OFFERED = {"new": ("start", "dismiss"), "in_progress": ("resolve", "dismiss")}


@bp.get("/feedback")
@console_view("feedback")
def feedback() -> Any:
    """The queue, newest first, filtered by state, kind and the reported distributor's member id."""
    state_arg, kind_arg = request.args.get("state", ""), request.args.get("kind", "")
    reported = int_arg("reported", 0, lo=0, hi=10**12)
    filters = {"state": state_arg if state_arg in STATES else "", "kind": kind_arg if kind_arg in KINDS else "", "reported": reported or ""}
    stmt = services.items_query(
        state=FeedbackState(state_arg) if filters["state"] else None,
        kind=FeedbackKind(kind_arg) if filters["kind"] else None,
        reported_member_id=reported or None,
    )
    page = int_arg("page", 1)
    sess = db.session()
    rows, total = db.paginate(sess, stmt, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=services.ITEM_ORDER, count_cap=COUNT_CAP)
    member_ids = {i.member_id for i in rows} | {i.reported_member_id for i in rows if i.reported_member_id}
    members = {m.id: m for m in sess.scalars(select(Member).where(Member.id.in_(member_ids)))} if member_ids else {}
    staff = {s.id: s for s in sess.scalars(select(Staff).where(Staff.id.in_({i.assignee_id for i in rows if i.assignee_id})))}
    return render_template(
        "console/feedback.html", rows=rows, members=members, staff=staff, filters=filters, states=STATES, kinds=KINDS,
        categories=CATEGORIES, pager=pages(total),
    )


def _item_page(item: FeedbackItem, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    sess = db.session()
    reported = sess.get(Member, item.reported_member_id) if item.reported_member_id else None
    distributor = sess.scalars(select(Distributor).where(Distributor.member_id == item.reported_member_id)).first() if reported else None
    return render_template(
        "console/feedback_item.html",
        item=item,
        member=sess.get(Member, item.member_id),
        reported=reported,
        distributor=distributor,
        assignee=sess.get(Staff, item.assignee_id) if item.assignee_id else None,
        colleagues=sess.scalars(select(Staff).where(Staff.active.is_(True)).order_by(Staff.username)).all(),
        notes=services.notes_of(sess, item.id),
        offered=OFFERED.get(item.state.value, ()),
        actions=ACTIONS, states=STATES, kinds=KINDS, categories=CATEGORIES,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


@bp.get("/feedback/<int:item_id>")
@console_view("feedback")
def feedback_item(item_id: int) -> Any:
    return _item_page(services.get_item(db.session(), item_id))


@bp.post("/feedback/<int:item_id>/transitions")
@console_view("feedback.handle")
def feedback_transition(item_id: int) -> Any:
    """Start, resolve or dismiss from the state the page showed; a reply goes to the member."""
    item = services.get_item(db.session(), item_id)
    payload = {"action": request.form.get("action", "")[:16], "expected_state": request.form.get("expected_state", "")[:16] or None,
               "reply": form_text("reply", FIELD_LIMIT)}
    body, errors = checked(api.TransitionBody, payload, {"action": "请选择一项操作。", "reply": "回复最多 2000 字。", "expected_state": "页面已过期，请刷新后重试。"})
    if body is None:
        return _item_page(item, errors, 422)
    try:
        services.transition(
            db.session(), item_id, body.action, staff=current_staff(), reply=body.reply or None,
            expected=FeedbackState(body.expected_state) if body.expected_state else None,
        )
    except IllegalFeedbackTransitionError as error:
        db.session().refresh(item)
        message = f"这条{KINDS[item.kind.value]}已是「{STATES[item.state.value]}」，可能已有同事处理；请查看后再操作。"
        return _item_page(item, {"action": message}, error.http_status)
    flash(f"已{ACTIONS[body.action]}。", "success")
    return redirect(url_for("console.feedback_item", item_id=item_id), 303)


@bp.post("/feedback/<int:item_id>/assign")
@console_view("feedback.handle")
def feedback_assign(item_id: int) -> Any:
    item = services.get_item(db.session(), item_id)
    raw = form_text("assignee_id", 32)
    assignee = whole_number(raw) if raw else None
    if assignee is not None and not isinstance(assignee, int):
        return _item_page(item, {"assignee_id": "请选择一位员工。"}, 422)
    try:
        services.assign(db.session(), item_id, assignee, staff=current_staff())
    except AppError as error:
        return _item_page(item, {"assignee_id": "请选择一位在用的员工；已关闭的事项不能再指派。"}, error.http_status)
    flash("已指派。" if assignee else "已取消指派。", "success")
    return redirect(url_for("console.feedback_item", item_id=item_id), 303)


@bp.post("/feedback/<int:item_id>/notes")
@console_view("feedback.handle")
def feedback_note(item_id: int) -> Any:
    item = services.get_item(db.session(), item_id)
    text = form_text("note", FIELD_LIMIT)
    if not text or len(text) > 2000:
        return _item_page(item, {"note": "请填写备注（最多 2000 字）。"}, 422)
    services.add_note(db.session(), item_id, text, staff=current_staff())
    flash("已添加内部备注。", "success")
    return redirect(url_for("console.feedback_item", item_id=item_id), 303)
