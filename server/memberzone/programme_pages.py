"""The programme rules in the zone, with the application form that accepts the version shown; and the
member's notices, read (and so marked read) one at a time."""
from __future__ import annotations

from typing import Any

from flask import redirect, request, url_for

from server import db
from server.accounts.models import Member
from server.api import client_address, validate
from server.distribution import programme
from server.distribution import services as distribution
from server.distribution.errors import RulesNotAcceptedError, RulesOutdatedError
from server.distribution.models import DistributorStatus
from server.distribution.routes import ApplyBody
from server.errors import AppError, ValidationError
from server.memberzone.routes import add_section, bp, member_error, page, zone_view
from server.notices import services as notices
from server.notices.errors import NoSuchNoticeError

#: What the form's fields are called on the page, for a refusal that names one.
FIELD_NAMES = {"real_name": "真实姓名", "phone": "手机号", "wechat_id": "微信号", "intro": "个人简介", "rules_version": "规则版本"}
#: Notices per page of the list.
NOTICE_PAGE = 20


def _rules_page(member: Member, status: int = 200, error: str = "", form: dict[str, str] | None = None) -> Any:
    """The current rules as members read them, and what the member may do: apply accepting them, or their status."""
    sess = db.session()
    rules = programme.current_rules(sess)
    record = distribution.distributor_of(sess, member.id)
    can_apply = record is None or record.status == DistributorStatus.rejected
    return page(
        "memberzone/rules.html",
        status,
        tab="home",
        rules=rules,
        rendered=programme.render_text(sess, rules.body) if rules else None,
        record=record,
        can_apply=can_apply,
        applied=request.args.get("applied") == "1",
        error=error,
        form=form or {},
    )


@bp.get("/rules")
@zone_view
def rules(member: Member) -> Any:
    return _rules_page(member)


@bp.post("/rules")
@zone_view
def apply(member: Member) -> Any:
    """Apply as a distributor, accepting the version of the rules the page showed (``rules_version``)."""
    form = {k: request.form.get(k, "").strip()[:600] for k in ("real_name", "phone", "wechat_id", "intro", "rules_version")}
    if programme.current_rules(db.session()) is not None and request.form.get("accept") != "1":
        return _rules_page(member, 422, "请先阅读并勾选同意分销规则与协议。", form)
    version = form["rules_version"]
    payload: dict[str, Any] = {k: form[k] for k in ("real_name", "phone", "wechat_id", "intro")}
    payload["rules_version"] = int(version) if version.isascii() and version.isdigit() and len(version) <= 9 else (version or None)
    try:
        body = validate(ApplyBody, payload)
    except ValidationError as error:
        fields = [FIELD_NAMES.get(str(e.get("field")), "输入") for e in error.data.get("errors", []) if isinstance(e, dict)]
        return _rules_page(member, 422, f"请检查{'、'.join(dict.fromkeys(fields))}。", form)
    try:
        distribution.apply(
            db.session(),
            member,
            real_name=body.real_name,
            phone=body.phone,
            wechat_id=body.wechat_id,
            intro=body.intro,
            rules_version=body.rules_version,
            client_address=client_address(),
        )
    except (RulesOutdatedError, RulesNotAcceptedError) as error:
        db.session().rollback()
        return _rules_page(member, error.http_status, "分销规则已更新，请阅读下面的新版本后再次确认申请。", form)
    except AppError as error:
        db.session().rollback()
        return _rules_page(member, error.http_status, member_error(error), form)
    return redirect(url_for("memberzone.rules", applied=1), code=303)


@bp.get("/notices")
@zone_view
def notices_list(member: Member) -> Any:
    """The member's notices, pinned first, then newest first; ``before`` continues after a page."""
    sess = db.session()
    before_arg = request.args.get("before")
    try:
        before = notices.parse_cursor(before_arg) if before_arg else None
    except ValidationError:
        before = None  # an address typed by hand starts from the first page
    rows, more = notices.member_notices(sess, member.id, before=before, limit=NOTICE_PAGE)
    return page(
        "memberzone/notices.html",
        tab="home",
        rows=rows,
        unread=notices.unread_count(sess, member.id),
        next_before=more.encode() if more else None,
        first_page=before is None,
    )


@bp.get("/notices/<notice_id>")
def notice_page(notice_id: str) -> Any:
    # Any text is a page address here: what cannot be a notice is the zone's "not found" card, before sign-in.
    if not (notice_id.isascii() and notice_id.isdigit() and 0 < int(notice_id) < 2**63):
        raise NoSuchNoticeError()
    return _notice(int(notice_id))


@zone_view
def _notice(member: Member, notice_id: int) -> Any:
    """A notice for the member; opening it marks it read (once)."""
    item, read_at = notices.mark_read(db.session(), member.id, notice_id)
    return page("memberzone/notice.html", tab="home", item=item, read_at=read_at)


add_section("memberzone.notices_list", "公告", "商户发布的最新通知")
add_section("memberzone.rules", "分销规则", "推广员规则与协议，申请成为推广员")
