"""Notice API: members' notices and read receipts (/api/v1), and the console's (/admin/api/v1)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import Field, StringConstraints

from server import db
from server.accounts.auth import current_member, current_staff, member_required, staff_required
from server.accounts.models import Member, StaffRole
from server.api import TEXT_BYTES, Body, NonBlank, Page, Query, Utf8Bytes, iso, parse_body, parse_query
from server.errors import envelope
from server.notices import services
from server.notices.models import Notice, NoticeAudience, NoticeReceipt, NoticeStatus

bp = Blueprint("notices", __name__, url_prefix="/api/v1")
admin_bp = Blueprint("notices_admin", __name__, url_prefix="/admin/api/v1")

Title = Annotated[NonBlank, StringConstraints(max_length=64)]
#: Plain text: 20,000 characters, and no more bytes than a TEXT column holds.
Text = Annotated[NonBlank, StringConstraints(max_length=20_000), Utf8Bytes(TEXT_BYTES)]
Audience = Literal["all", "distributors", "tier"]
#: A strict int, not Literal[1, 2]: Literal would take true for 1.
Tier = Annotated[int, Field(ge=1, le=2)]


class NoticeBody(Body):
    title: Title
    body: Text
    audience: Audience = "all"
    #: Only with audience ``tier``.
    tier: Tier | None = None
    pinned: bool = False


class NoticePatchBody(Body):
    title: Title | None = None
    body: Text | None = None
    audience: Audience | None = None
    #: Null clears it (with another audience); left out, it is unchanged.
    tier: Tier | None = None
    pinned: bool | None = None


class MemberNoticeQuery(Query):
    #: ``next_before`` of the previous page.
    before: str | None = None
    page_size: int = Field(20, ge=1, le=100)


class AdminNoticeQuery(Page):
    status: NoticeStatus | None = None
    audience: NoticeAudience | None = None
    q: str | None = Field(None, max_length=64)


def notice_fields(body: Body, *, partial: bool) -> dict[str, Any]:
    """A body's fields for the services: a PATCH's nulls mean unchanged (except ``tier``), audiences as enums."""
    fields = body.model_dump(exclude_unset=partial)
    if partial:
        fields = {k: v for k, v in fields.items() if v is not None or k == "tier"}
    if fields.get("audience") is not None:
        fields["audience"] = NoticeAudience(fields["audience"])
    return fields


def serialize_notice(notice: Notice, *, read_at: datetime | None = None, body: bool = True) -> dict[str, Any]:
    """A notice as a member sees it; ``read_at`` is when they first read it (null: unread)."""
    data: dict[str, Any] = {
        "id": notice.id,
        "title": notice.title,
        "pinned": notice.pinned,
        "published_at": iso(notice.published_at),
        "read": read_at is not None,
        "read_at": iso(read_at),
    }
    if body:
        data["body"] = notice.body
    return data


def serialize_admin_notice(notice: Notice, *, read_count: int, audience_size: int) -> dict[str, Any]:
    return {
        "id": notice.id,
        "title": notice.title,
        "body": notice.body,
        "audience": notice.audience.value,
        "tier": notice.tier,
        "status": notice.status.value,
        "pinned": notice.pinned,
        "published_at": iso(notice.published_at),
        "withdrawn_at": iso(notice.withdrawn_at),
        "created_at": notice.created_at.isoformat(),
        "created_by": notice.created_by,
        "updated_at": notice.updated_at.isoformat(),
        "read_count": read_count,
        "audience_size": audience_size,
    }


def _admin_items(notices: list[Notice]) -> list[dict[str, Any]]:
    sess = db.session()
    counts = services.read_counts(sess, [n.id for n in notices])
    sizes = services.audience_sizes(sess)
    return [serialize_admin_notice(n, read_count=counts.get(n.id, 0), audience_size=sizes[(n.audience, n.tier)]) for n in notices]


# -- mini-program ---------------------------------------------------------------------------------


@bp.get("/notices")
@member_required
def list_notices() -> Any:
    """The member's notices, pinned first, newest first, a page at a time (keyset: ``before``)."""
    query = parse_query(MemberNoticeQuery)
    sess = db.session()
    member_id = current_member().id
    before = services.parse_cursor(query.before) if query.before is not None else None
    rows, more = services.member_notices(sess, member_id, before=before, limit=query.page_size)
    return envelope(
        {
            "items": [serialize_notice(n, read_at=read_at, body=False) for n, read_at in rows],
            "unread": services.unread_count(sess, member_id),
            "next_before": more.encode() if more else None,
        }
    )


@bp.get("/notices/<int:notice_id>")
@member_required
def get_notice(notice_id: int) -> Any:
    """A notice for the member, in full; reading it marks it read."""
    notice, read_at = services.mark_read(db.session(), current_member().id, notice_id)
    return envelope(serialize_notice(notice, read_at=read_at))


@bp.post("/notices/<int:notice_id>/read")
@member_required
def read_notice(notice_id: int) -> Any:
    """Mark a notice read without fetching it again (idempotent)."""
    notice, read_at = services.mark_read(db.session(), current_member().id, notice_id)
    return envelope(serialize_notice(notice, read_at=read_at, body=False))


# -- console --------------------------------------------------------------------------------------


@admin_bp.get("/notices")
@staff_required(StaffRole.operations)
def admin_list_notices() -> Any:
    query = parse_query(AdminNoticeQuery)
    stmt = services.notices_query(status=query.status, audience=query.audience, q=query.q)
    rows, total = db.paginate(db.session(), stmt, offset=query.offset, limit=query.page_size, order_by=services.ADMIN_ORDER)
    return envelope({"items": _admin_items(rows), "total": total, "page": query.page})


@admin_bp.post("/notices")
@staff_required(StaffRole.operations)
def admin_create_notice() -> Any:
    body = parse_body(NoticeBody)
    notice = services.create_notice(db.session(), notice_fields(body, partial=False), staff_id=current_staff().id)
    return envelope(_admin_items([notice])[0], status=201)


@admin_bp.get("/notices/<int:notice_id>")
@staff_required(StaffRole.operations)
def admin_get_notice(notice_id: int) -> Any:
    return envelope(_admin_items([services.get_notice(db.session(), notice_id)])[0])


@admin_bp.patch("/notices/<int:notice_id>")
@staff_required(StaffRole.operations)
def admin_update_notice(notice_id: int) -> Any:
    body = parse_body(NoticePatchBody)
    notice = services.update_notice(db.session(), notice_id, notice_fields(body, partial=True), staff_id=current_staff().id)
    return envelope(_admin_items([notice])[0])


@admin_bp.post("/notices/<int:notice_id>/publish")
@staff_required(StaffRole.operations)
def admin_publish_notice(notice_id: int) -> Any:
    notice = services.publish_notice(db.session(), notice_id, staff_id=current_staff().id)
    return envelope(_admin_items([notice])[0])


@admin_bp.post("/notices/<int:notice_id>/withdraw")
@staff_required(StaffRole.operations)
def admin_withdraw_notice(notice_id: int) -> Any:
    notice = services.withdraw_notice(db.session(), notice_id, staff_id=current_staff().id)
    return envelope(_admin_items([notice])[0])


def serialize_receipt(receipt: NoticeReceipt, member: Member) -> dict[str, Any]:
    return {"member": {"id": member.id, "nickname": member.nickname, "avatar_url": member.avatar_url}, "read_at": receipt.read_at.isoformat()}


@admin_bp.get("/notices/<int:notice_id>/receipts")
@staff_required(StaffRole.operations)
def admin_notice_receipts(notice_id: int) -> Any:
    """Who read the notice, most recent first."""
    query = parse_query(Page)
    sess = db.session()
    services.get_notice(sess, notice_id)
    rows, total = db.paginate(
        sess, services.receipts_query(notice_id), offset=query.offset, limit=query.page_size, order_by=services.RECEIPT_ORDER, scalars=False
    )
    return envelope({"items": [serialize_receipt(r, m) for r, m in rows], "total": total, "page": query.page})
