"""Notice pages: the list with read counts and audience sizes, the editor of a draft, publishing and
withdrawing (audited by the services), and who has read a notice."""
from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from server import db
from server.console.forms import FIELD_LIMIT, checked, problems, whole_number
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.errors import ValidationError
from server.notices import routes as api
from server.notices import services
from server.notices.errors import NoticeStateError
from server.notices.models import Notice, NoticeAudience, NoticeStatus

STATUSES = {"draft": "草稿", "published": "已发布", "withdrawn": "已撤回"}
AUDIENCES = {"all": "全部会员", "distributors": "全部分销员", "tier": "指定分销等级"}
TIERS = {1: "一级分销员", 2: "二级分销员"}
HINTS = {
    "title": "请填写标题（最多 64 字）。",
    "body": "请填写正文（最多 20,000 字）。",
    "audience": "请选择发送对象。",
    "tier": "发给指定等级时请选择一级或二级；发给其他对象时不选等级。",
}


def audience_text(notice: Notice) -> str:
    return TIERS[notice.tier] if notice.audience == NoticeAudience.tier and notice.tier in TIERS else AUDIENCES[notice.audience.value]


@bp.get("/notices")
@console_view("notices")
def notices() -> Any:
    """Notices by status, newest first, each with how many of its audience read it."""
    sess = db.session()
    status_arg = request.args.get("status", "")
    status = NoticeStatus(status_arg) if status_arg in STATUSES else None
    q = request.args.get("q", "").strip()[:64]
    page = int_arg("page", 1)
    rows, total = db.paginate(
        sess, services.notices_query(status=status, q=q or None), offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=services.ADMIN_ORDER, count_cap=COUNT_CAP
    )
    return render_template(
        "console/notices.html",
        rows=rows,
        reads=services.read_counts(sess, [n.id for n in rows]),
        sizes=services.audience_sizes(sess),
        audience_text=audience_text,
        statuses=STATUSES,
        filters={"status": status_arg if status else "", "q": q},
        pager=pages(total),
    )


def _form_page(notice: Notice | None, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    sess = db.session()
    receipts: list[Any] = []
    pager = None
    if notice is not None and notice.status != NoticeStatus.draft:
        page = int_arg("page", 1)
        receipts, total = db.paginate(
            sess, services.receipts_query(notice.id), offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=services.RECEIPT_ORDER, scalars=False, count_cap=COUNT_CAP
        )
        pager = pages(total)
    return render_template(
        "console/notice.html",
        notice=notice,
        audiences=AUDIENCES,
        tiers=TIERS,
        statuses=STATUSES,
        audience_text=audience_text,
        read_count=services.read_counts(sess, [notice.id]).get(notice.id, 0) if notice else 0,
        audience_size=services.audience_sizes(sess)[(notice.audience, notice.tier)] if notice else 0,
        receipts=receipts,
        pager=pager,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


def _fields() -> dict[str, Any]:
    """The form as the admin API's notice fields."""
    audience = form_text("audience", 16)
    tier = form_text("tier", 8)
    return {
        "title": form_text("title", 200),
        "body": form_text("body", FIELD_LIMIT),
        "audience": audience,
        "tier": whole_number(tier) if tier and audience == "tier" else None,
        "pinned": request.form.get("pinned") == "1",
    }


def _saved(notice: Notice, verb: str) -> Any:
    flash(f"已{verb}公告「{notice.title}」。", "success")
    return redirect(url_for("console.notices_edit", notice_id=notice.id), 303)


@bp.get("/notices/new")
@console_view("notices.edit")
def notices_new() -> Any:
    return _form_page(None)


@bp.post("/notices")
@console_view("notices.edit")
def notices_create() -> Any:
    body, invalid = checked(api.NoticeBody, _fields(), HINTS)
    if body is None:
        return _form_page(None, invalid, 422)
    try:
        notice = services.create_notice(db.session(), api.notice_fields(body, partial=False), staff_id=current_staff().id)
    except ValidationError as error:
        return _form_page(None, problems(error, HINTS), error.http_status)
    return _saved(notice, "保存草稿")


@bp.get("/notices/<int:notice_id>")
@console_view("notices")
def notices_edit(notice_id: int) -> Any:
    """A draft in the editor; a published or withdrawn notice with who has read it."""
    return _form_page(services.get_notice(db.session(), notice_id))


@bp.post("/notices/<int:notice_id>")
@console_view("notices.edit")
def notices_update(notice_id: int) -> Any:
    notice = services.get_notice(db.session(), notice_id)
    body, invalid = checked(api.NoticePatchBody, _fields(), HINTS)
    if body is None:
        return _form_page(notice, invalid, 422)
    try:
        services.update_notice(db.session(), notice_id, api.notice_fields(body, partial=False), staff_id=current_staff().id)
    except ValidationError as error:
        return _form_page(notice, problems(error, HINTS), error.http_status)
    except NoticeStateError as error:
        return _form_page(notice, {"": "只有草稿可以修改。"}, error.http_status)
    return _saved(notice, "保存")


@bp.post("/notices/<int:notice_id>/publish")
@console_view("notices.edit")
def notices_publish(notice_id: int) -> Any:
    try:
        notice = services.publish_notice(db.session(), notice_id, staff_id=current_staff().id)
    except NoticeStateError as error:
        return _form_page(services.get_notice(db.session(), notice_id), {"": "只有草稿可以发布。"}, error.http_status)
    return _saved(notice, "发布")


@bp.post("/notices/<int:notice_id>/withdraw")
@console_view("notices.edit")
def notices_withdraw(notice_id: int) -> Any:
    try:
        notice = services.withdraw_notice(db.session(), notice_id, staff_id=current_staff().id)
    except NoticeStateError as error:
        return _form_page(services.get_notice(db.session(), notice_id), {"": "只有已发布的公告可以撤回。"}, error.http_status)
    return _saved(notice, "撤回")
