"""Notices and their read receipts."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class NoticeStatus(str, enum.Enum):
    draft = "draft"
    published = "published"
    withdrawn = "withdrawn"


class NoticeAudience(str, enum.Enum):
    #: Every member.
    all = "all"
    #: Every approved distributor, of either tier.
    distributors = "distributors"
    #: Approved distributors of one tier (``Notice.tier``).
    tier = "tier"


class Notice(Base):
    """An announcement: a draft staff edit, published to its audience, perhaps withdrawn later."""

    __tablename__ = "notices"
    __table_args__ = (
        CheckConstraint("(audience = 'tier' AND tier IN (1, 2)) OR (audience <> 'tier' AND tier IS NULL)", name="tier_for_tier_audience"),
        CheckConstraint("status = 'draft' OR published_at IS NOT NULL", name="published_has_time"),
        # Members' lists: published notices, pinned first, newest first.
        Index("ix_notices_listing", "status", "pinned", "published_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    title: Mapped[str] = mapped_column(String(64))
    #: Plain text; shown escaped, line breaks kept.
    body: Mapped[str] = mapped_column(Text)
    audience: Mapped[NoticeAudience] = mapped_column(enum_column(NoticeAudience, "notice_audience"), default=NoticeAudience.all)
    #: The distributor tier a ``tier`` notice is for; null for the other audiences.
    tier: Mapped[int | None]
    status: Mapped[NoticeStatus] = mapped_column(enum_column(NoticeStatus, "notice_status"), default=NoticeStatus.draft)
    #: Pinned notices come first in members' lists.
    pinned: Mapped[bool] = mapped_column(default=False)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class NoticeReceipt(Base):
    """A member read a notice: one row per member and notice, written the first time only."""

    __tablename__ = "notice_receipts"
    __table_args__ = (
        UniqueConstraint("notice_id", "member_id", name="notice_member"),
        Index("ix_notice_receipts_member", "member_id", "notice_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    notice_id: Mapped[int] = mapped_column(BigId, ForeignKey("notices.id"))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    read_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
