"""Notices: staff write, publish and withdraw them; members read those meant for them, once counted.

A notice is for every member, for every approved distributor, or for the approved distributors of
one tier. A member never sees a notice that is not for them, nor a draft or a withdrawn one: to
them it does not exist. Reading a notice leaves one receipt per member and notice, whatever the
number of requests, concurrent ones included (a unique key; the loser of a race finds the winner's
row).

Services take a session and plain arguments, ``flush()`` and never commit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.accounts.models import Member, MemberStatus
from server.accounts.services import record_audit
from server.db import utcnow
from server.distribution.models import Distributor, DistributorStatus
from server.errors import ValidationError
from server.notices.errors import NoSuchNoticeError, NoticeStateError
from server.notices.models import Notice, NoticeAudience, NoticeReceipt, NoticeStatus

#: The fields staff set on a notice.
FIELDS = ("title", "body", "audience", "tier", "pinned")
#: A member list's cursor: ``<pinned 0|1>.<published_at as Unix seconds>.<id>`` of the last notice seen.
CURSOR_RE = re.compile(r"^([01])\.([0-9]{1,11})\.([0-9]{1,18})$")


# -- who sees what ----------------------------------------------------------------------------------


def member_tier(sess: Session, member_id: int) -> int | None:
    """The member's tier while an approved distributor, else None."""
    return sess.scalar(select(Distributor.tier).where(Distributor.member_id == member_id, Distributor.status == DistributorStatus.approved))


def for_member(sess: Session, member_id: int) -> ColumnElement[bool]:
    """The condition a notice meets to be shown to this member: published and for them."""
    tier = member_tier(sess, member_id)
    audience = Notice.audience == NoticeAudience.all
    if tier is not None:
        audience = or_(
            audience,
            Notice.audience == NoticeAudience.distributors,
            and_(Notice.audience == NoticeAudience.tier, Notice.tier == tier),
        )
    return and_(Notice.status == NoticeStatus.published, audience)


def visible_notice(sess: Session, member_id: int, notice_id: int) -> Notice:
    """The notice if this member may see it; NoSuchNoticeError otherwise (a draft, a withdrawn notice or
    one for others looks exactly like a missing one)."""
    notice = sess.scalar(select(Notice).where(Notice.id == notice_id, for_member(sess, member_id)))
    if notice is None:
        raise NoSuchNoticeError()
    return notice


@dataclass(frozen=True)
class Cursor:
    """Where a member's list continues: after the notice with these sort keys."""

    pinned: bool
    published_at: datetime
    id: int

    def encode(self) -> str:
        return f"{int(self.pinned)}.{int(self.published_at.timestamp())}.{self.id}"

    @classmethod
    def of(cls, notice: Notice) -> Cursor:
        assert notice.published_at is not None
        return cls(notice.pinned, notice.published_at, notice.id)


def parse_cursor(text: str) -> Cursor:
    """A cursor from the client; ValidationError (field ``before``) if it is not one this API gave."""
    found = CURSOR_RE.match(text)
    try:
        if found is None:
            raise ValueError
        return Cursor(found.group(1) == "1", datetime.fromtimestamp(int(found.group(2)), timezone.utc), int(found.group(3)))
    except (ValueError, OverflowError, OSError):
        raise ValidationError(data={"errors": [{"field": "before", "error": "not a cursor this list gave (next_before)"}]}) from None


#: A member's list order: pinned first, then newest first.
MEMBER_ORDER = (Notice.pinned.desc(), Notice.published_at.desc(), Notice.id.desc())


def member_notices(sess: Session, member_id: int, *, before: Cursor | None, limit: int) -> tuple[list[tuple[Notice, datetime | None]], Cursor | None]:
    """One page of the member's notices with when they read each (None: unread), and the cursor of the
    next page (None at the end). Keyset paging: a notice published meanwhile never shifts a page."""
    stmt = (
        select(Notice, NoticeReceipt.read_at)
        .outerjoin(NoticeReceipt, and_(NoticeReceipt.notice_id == Notice.id, NoticeReceipt.member_id == member_id))
        .where(for_member(sess, member_id))
    )
    if before is not None:
        same = Notice.pinned == before.pinned
        later = [
            and_(same, Notice.published_at < before.published_at),
            and_(same, Notice.published_at == before.published_at, Notice.id < before.id),
        ]
        if before.pinned:
            later.append(Notice.pinned == False)  # noqa: E712 (SQL, not Python)
        stmt = stmt.where(or_(*later))
    rows: list[tuple[Notice, datetime | None]] = [(notice, read_at) for notice, read_at in sess.execute(stmt.order_by(*MEMBER_ORDER).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, Cursor.of(rows[-1][0]) if more else None


def unread_count(sess: Session, member_id: int) -> int:
    """How many notices for this member they have not read."""
    read = select(NoticeReceipt.id).where(NoticeReceipt.notice_id == Notice.id, NoticeReceipt.member_id == member_id).exists()
    return int(sess.scalar(select(func.count()).select_from(Notice).where(for_member(sess, member_id), ~read)) or 0)


def read_at(sess: Session, member_id: int, notice_id: int, *, latest: bool = False) -> datetime | None:
    stmt = select(NoticeReceipt.read_at).where(NoticeReceipt.notice_id == notice_id, NoticeReceipt.member_id == member_id)
    # A locking read sees rows committed after this transaction's snapshot (MariaDB's repeatable read).
    return sess.scalar(stmt.with_for_update(read=True) if latest else stmt)


def mark_read(sess: Session, member_id: int, notice_id: int) -> tuple[Notice, datetime]:
    """Record that the member read the notice (if it is for them) and return it with the first read's
    time. Idempotent: the first read's receipt stays, and a concurrent first read finds the winner's."""
    notice = visible_notice(sess, member_id, notice_id)
    first = read_at(sess, member_id, notice_id)
    if first is not None:
        return notice, first
    try:
        with sess.begin_nested():
            sess.add(NoticeReceipt(notice_id=notice_id, member_id=member_id, read_at=utcnow()))
    except IntegrityError:
        pass  # a concurrent request of the same member wrote the receipt first
    stored = read_at(sess, member_id, notice_id, latest=True)
    assert stored is not None
    return notice, stored


# -- staff ------------------------------------------------------------------------------------------


def get_notice(sess: Session, notice_id: int, *, for_update: bool = False) -> Notice:
    notice = sess.get(Notice, notice_id, with_for_update=True if for_update else None)
    if notice is None:
        raise NoSuchNoticeError()
    return notice


def notices_query(*, status: NoticeStatus | None = None, audience: NoticeAudience | None = None, q: str | None = None) -> Select[Any]:
    """Notices for staff, filtered; order with ``ADMIN_ORDER``."""
    stmt = select(Notice)
    if status is not None:
        stmt = stmt.where(Notice.status == status)
    if audience is not None:
        stmt = stmt.where(Notice.audience == audience)
    if q:
        stmt = stmt.where(Notice.title.contains(q, autoescape=True))
    return stmt


ADMIN_ORDER = (Notice.id.desc(),)


def _check_audience(values: dict[str, Any]) -> None:
    audience, tier = values["audience"], values["tier"]
    if audience == NoticeAudience.tier and tier not in (1, 2):
        raise ValidationError(data={"errors": [{"field": "tier", "error": "a notice for one tier needs tier 1 or 2"}]})
    if audience != NoticeAudience.tier and tier is not None:
        raise ValidationError(data={"errors": [{"field": "tier", "error": "only a notice for one tier names a tier"}]})


def _values(notice: Notice) -> dict[str, Any]:
    return {"title": notice.title, "audience": notice.audience.value, "tier": notice.tier, "pinned": notice.pinned}


def create_notice(sess: Session, fields: dict[str, Any], *, staff_id: int | None) -> Notice:
    """A draft notice; audited."""
    values = {"audience": NoticeAudience.all, "tier": None, "pinned": False} | {k: v for k, v in fields.items() if k in FIELDS}
    _check_audience(values)
    notice = Notice(status=NoticeStatus.draft, created_by=staff_id, **values)
    sess.add(notice)
    sess.flush()
    record_audit(sess, staff_id, "notice.create", f"notice:{notice.id}", _values(notice))
    return notice


def update_notice(sess: Session, notice_id: int, changes: dict[str, Any], *, staff_id: int | None) -> Notice:
    """Change a draft; a published or withdrawn notice stays as members saw it (NoticeStateError)."""
    notice = get_notice(sess, notice_id, for_update=True)
    if notice.status != NoticeStatus.draft:
        raise NoticeStateError("only a draft notice can be edited", data={"status": notice.status.value})
    changes = {k: v for k, v in changes.items() if k in FIELDS}
    if changes.get("audience") not in (None, NoticeAudience.tier) and "tier" not in changes:
        changes["tier"] = None  # leaving the one-tier audience drops its tier
    values = {"audience": notice.audience, "tier": notice.tier} | changes
    _check_audience(values)
    old = _values(notice)
    for key, value in changes.items():
        setattr(notice, key, value)
    sess.flush()
    record_audit(sess, staff_id, "notice.update", f"notice:{notice.id}", {"old": old, "new": _values(notice)})
    return notice


def publish_notice(sess: Session, notice_id: int, *, staff_id: int | None) -> Notice:
    """Publish a draft to its audience, now; audited."""
    notice = get_notice(sess, notice_id, for_update=True)
    if notice.status != NoticeStatus.draft:
        raise NoticeStateError("only a draft notice can be published", data={"status": notice.status.value})
    notice.status, notice.published_at = NoticeStatus.published, utcnow()
    sess.flush()
    record_audit(sess, staff_id, "notice.publish", f"notice:{notice.id}", _values(notice))
    return notice


def withdraw_notice(sess: Session, notice_id: int, *, staff_id: int | None) -> Notice:
    """Take a published notice back: members no longer see it; its receipts stay. Audited."""
    notice = get_notice(sess, notice_id, for_update=True)
    if notice.status != NoticeStatus.published:
        raise NoticeStateError("only a published notice can be withdrawn", data={"status": notice.status.value})
    notice.status, notice.withdrawn_at = NoticeStatus.withdrawn, utcnow()
    sess.flush()
    record_audit(sess, staff_id, "notice.withdraw", f"notice:{notice.id}", _values(notice))
    return notice


def read_counts(sess: Session, notice_ids: list[int]) -> dict[int, int]:
    """How many members read each notice."""
    if not notice_ids:
        return {}
    rows = sess.execute(
        select(NoticeReceipt.notice_id, func.count()).where(NoticeReceipt.notice_id.in_(notice_ids)).group_by(NoticeReceipt.notice_id)
    )
    return {notice_id: int(count) for notice_id, count in rows}


def audience_sizes(sess: Session) -> dict[tuple[NoticeAudience, int | None], int]:
    """How many members each audience reaches now: active members; approved distributors, in all and by tier."""
    members = int(sess.scalar(select(func.count()).select_from(Member).where(Member.status == MemberStatus.active)) or 0)
    by_tier = {
        int(tier): int(count)
        for tier, count in sess.execute(
            select(Distributor.tier, func.count()).where(Distributor.status == DistributorStatus.approved).group_by(Distributor.tier)
        )
    }
    sizes: dict[tuple[NoticeAudience, int | None], int] = {
        (NoticeAudience.all, None): members,
        (NoticeAudience.distributors, None): sum(by_tier.values()),
    }
    for tier in (1, 2):
        sizes[(NoticeAudience.tier, tier)] = int(by_tier.get(tier, 0))
    return sizes


def receipts_query(notice_id: int) -> Select[NoticeReceipt, Member]:
    """Who read a notice and when, with the member; order with ``RECEIPT_ORDER``."""
    return select(NoticeReceipt, Member).join(Member, Member.id == NoticeReceipt.member_id).where(NoticeReceipt.notice_id == notice_id)


RECEIPT_ORDER = (NoticeReceipt.id.desc(),)
