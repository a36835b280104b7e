"""Members' feedback and reports about distributors, and the staff's internal notes on them."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class FeedbackKind(str, enum.Enum):
    feedback = "feedback"
    report = "report"


class FeedbackCategory(str, enum.Enum):
    # feedback
    suggestion = "suggestion"
    product = "product"
    service = "service"
    # reports about a distributor
    false_advertising = "false_advertising"
    harassment = "harassment"
    # either
    other = "other"


class FeedbackState(str, enum.Enum):
    new = "new"
    in_progress = "in_progress"
    resolved = "resolved"
    dismissed = "dismissed"


class FeedbackItem(Base):
    """A member's feedback, or their report about a distributor, and how staff handled it."""

    __tablename__ = "feedback_items"
    __table_args__ = (
        CheckConstraint("(kind = 'report') = (reported_member_id IS NOT NULL)", name="report_names_member"),
        Index("ix_feedback_items_state_id", "state", "id"),
        Index("ix_feedback_items_kind_state_id", "kind", "state", "id"),
        Index("ix_feedback_items_member_id", "member_id", "id"),
        Index("ix_feedback_items_reported_id", "reported_member_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    kind: Mapped[FeedbackKind] = mapped_column(enum_column(FeedbackKind, "feedback_kind"))
    category: Mapped[FeedbackCategory] = mapped_column(enum_column(FeedbackCategory, "feedback_category", length=24))
    body: Mapped[str] = mapped_column(Text)
    #: How the member may be reached, as they typed it (optional).
    contact: Mapped[str] = mapped_column(String(64), default="")
    #: A report's distributor, by member id; null for feedback.
    reported_member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"))
    #: The scene code the member named the distributor by, if that is how they did.
    scene_code: Mapped[str] = mapped_column(String(32), default="")
    state: Mapped[FeedbackState] = mapped_column(enum_column(FeedbackState, "feedback_state"), default=FeedbackState.new)
    assignee_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))
    #: The staff's answer, shown to the member.
    reply: Mapped[str] = mapped_column(Text, default="")
    replied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When it reached resolved or dismissed.
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class FeedbackNote(Base):
    """An internal note staff keep on an item; never shown to the member."""

    __tablename__ = "feedback_notes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("feedback_items.id"), index=True)
    staff_id: Mapped[int] = mapped_column(BigId, ForeignKey("staff.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
