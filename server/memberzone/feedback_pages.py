"""Feedback and reports in the member zone: a form to send a suggestion or complaint, or to report a
distributor by the code on their poster or link, and the member's past items with the staff's replies.
The same services as ``/api/v1/feedback``, with its per-member hourly limit."""
from __future__ import annotations

from typing import Any

from flask import current_app, redirect, request, url_for

from server import db
from server.accounts.models import Member
from server.console.labels import FEEDBACK_CATEGORY, FEEDBACK_STATE
from server.errors import AppError, RateLimitedError
from server.feedback import services
from server.feedback.models import FeedbackCategory, FeedbackKind
from server.memberzone.routes import Pager, add_section, bp, page, page_arg, zone_view

#: What a member may choose, by kind: (kind, category) → label.
CHOICES = {
    f"{kind.value}:{category.value}": f"{'举报推广员' if kind == FeedbackKind.report else '意见反馈'} · {FEEDBACK_CATEGORY[category.value]}"
    for kind, categories in services.CATEGORIES.items()
    for category in categories
}
#: Why a form was refused, by field, in words a member reads.
FIELD_ERRORS = {
    "body": "请填写内容（最多 2000 字）。",
    "contact": "联系方式最多 64 个字符。",
    "scene": "没有找到这个推广码对应的推广员，请核对海报或链接上的推广码。",
    "distributor_member_id": "请填写被举报推广员海报或链接上的推广码。",
    "category": "请选择类型。",
}


def _feedback_page(member: Member, status: int = 200, error: str = "", form: dict[str, str] | None = None, notice: str = "") -> Any:
    pager = Pager(page_arg(), 0)
    rows, total = services.member_items(db.session(), member.id, offset=pager.offset, limit=pager.size)
    return page(
        "memberzone/feedback.html", status, tab="home", rows=rows, pager=Pager(pager.page, total), choices=CHOICES,
        categories=FEEDBACK_CATEGORY, states=FEEDBACK_STATE, error=error, form=form or {}, notice=notice,
    )


@bp.get("/feedback")
@zone_view
def feedback(member: Member) -> Any:
    return _feedback_page(member, notice="已收到，我们会尽快处理并在这里回复你。" if request.args.get("sent") == "1" else "")


@bp.post("/feedback")
@zone_view
def feedback_send(member: Member) -> Any:
    """Send feedback or a report; a refusal shows the form again with the reason, and nothing is stored."""
    form = {k: request.form.get(k, "").strip()[:2100] for k in ("choice", "body", "contact", "scene")}
    kind_text, _, category_text = form["choice"].partition(":")
    if form["choice"] not in CHOICES:
        return _feedback_page(member, 422, FIELD_ERRORS["category"], form)
    kind, category = FeedbackKind(kind_text), FeedbackCategory(category_text)
    if not form["body"] or len(form["body"]) > 2000:
        return _feedback_page(member, 422, FIELD_ERRORS["body"], form)
    if len(form["contact"]) > 64:
        return _feedback_page(member, 422, FIELD_ERRORS["contact"], form)
    if kind == FeedbackKind.report and not form["scene"]:
        return _feedback_page(member, 422, FIELD_ERRORS["distributor_member_id"], form)
    try:
        services.limit_rate(member.id, current_app.config["FEEDBACK_RATE_LIMIT"])
        services.submit(
            db.session(), member, kind=kind, category=category, body=form["body"], contact=form["contact"],
            scene=form["scene"][:32] if kind == FeedbackKind.report else None,
        )
    except RateLimitedError:
        return _feedback_page(member, 429, "提交太频繁了，请一小时后再试。", form)
    except AppError as error:
        db.session().rollback()
        fields = [str(e.get("field", "")) for e in (error.data or {}).get("errors", []) if isinstance(e, dict)] if isinstance(error.data, dict) else []
        message = next((FIELD_ERRORS[f] for f in fields if f in FIELD_ERRORS), "提交失败，请检查后重试。")
        return _feedback_page(member, error.http_status, message, form)
    return redirect(url_for("memberzone.feedback", sent=1), code=303)


add_section("memberzone.feedback", "反馈与举报", "意见建议、投诉推广员，查看回复")
