"""The console's notifications page: messages to members, their state and, for dropped ones, why; a
dropped or failed one can be sent again, through the same service as the admin API."""
from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from server import db
from server.console import points_queries as pq
from server.console.points_pages import id_value
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, int_arg, pages
from server.console.session import console_view, current_staff
from server.errors import AppError
from server.notifications import services
from server.notifications.models import NotifyEvent, OutboxMessage, OutboxState
from server.notifications.queries import outbox_query


def _enum_arg(name: str, enum: Any, problems: list[str], what: str) -> Any:
    raw = request.args.get(name, "")
    if raw and raw not in enum._value2member_map_:
        problems.append(f"未知的{what}，已显示全部。")
        return None
    return enum(raw) if raw else None


@bp.get("/notifications")
@console_view("notifications")
def notifications(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """Messages to members, newest first, by state, event and member."""
    sess = db.session()
    problems: list[str] = []
    state = _enum_arg("state", OutboxState, problems, "状态")
    event = _enum_arg("event", NotifyEvent, problems, "事件")
    member_arg = request.args.get("member", "").strip()
    member_id = id_value(member_arg) if member_arg else None
    if member_arg and member_id is None:
        problems.append("会员 ID 应为数字。")
    page = int_arg("page", 1)
    rows, total = db.paginate(
        sess,
        outbox_query(state=state, event=event, member_id=member_id),
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
        order_by=(OutboxMessage.id.desc(),),
        count_cap=COUNT_CAP,
    )
    return render_template(
        "console/notifications.html",
        rows=rows,
        members=pq.members_by_id(sess, {r.member_id for r in rows}),
        states=list(OutboxState),
        events=list(NotifyEvent),
        args=request.args,
        problems=problems,
        pager=pages(total),
        errors=errors or {},
    ), status


def _back() -> str:
    """The list as it was filtered when the form was posted (only our own path is followed)."""
    target = request.form.get("back", "")
    return target if target.startswith("/console/notifications") and "//" not in target and "\\" not in target else url_for("console.notifications")


@bp.post("/notifications/<int:outbox_id>/resend")
@console_view("notifications.resend")
def notifications_resend(outbox_id: int) -> Any:
    """Queue a dropped or failed message again; it is sent after the commit, within the member's allowance."""
    try:
        services.resend(db.session(), outbox_id, staff_id=current_staff().id)
    except AppError as error:
        if error.http_status == 404:
            raise
        return notifications(errors={f"row-{outbox_id}": "该消息已不是未发出或失败状态，不能重发。"}, status=409)
    flash(f"消息 {outbox_id} 已重新排队发送。", "success")
    return redirect(_back(), 303)
