"""Risk reviews: an event scored at or above the review threshold, its reasons, and what staff decided.

A review's reasons are also rows of ``risk_signals`` (one per signal that fired), so the report
counts signals by type and outcome over a date range from an index. The hold on the rewards the
review concerns is ``points.models.RewardHold``: points owns it and reads it when rewards mature.
"""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class RiskEvent(str, enum.Enum):
    """What happened when the score was computed."""

    sign_in = "sign_in"
    bind = "bind"
    lead = "lead"
    payment = "payment"
    refund = "refund"
    redemption = "redemption"
    scene = "scene"


class ReviewState(str, enum.Enum):
    open = "open"
    #: The distributor was frozen; the rewards still wait for a release or a reversal.
    frozen = "frozen"
    released = "released"
    reversed = "reversed"
    false_positive = "false_positive"


class RiskReview(Base):
    """One scored event that reached the review threshold. Its state moves by conditional UPDATEs only."""

    __tablename__ = "risk_reviews"
    __table_args__ = (
        # An order's or lead's reviews, and a member's open review of an event.
        Index("ix_risk_reviews_subject", "subject", "ref_id"),
        # The queue: reviews in a state, newest first.
        Index("ix_risk_reviews_state", "state", "id"),
        # The report over a date range, and a member's reviews.
        Index("ix_risk_reviews_created", "created_at"),
        Index("ix_risk_reviews_member", "member_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event: Mapped[RiskEvent] = mapped_column(enum_column(RiskEvent, "risk_event"))
    #: "order" (orders.id), "lead" (leads.id) or "member" (members.id): what the review is about.
    subject: Mapped[str] = mapped_column(String(8))
    ref_id: Mapped[int] = mapped_column(BigId)
    #: The member whose rewards or standing are in question: an order's or lead's sharer, else the member.
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"))
    #: 0-100: the sum of the signals' points, capped at 100.
    score: Mapped[int]
    #: [{"signal", "points", "detail"}]: why, as staff read it (identifiers only as digests' presence).
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: The order's or lead's rewards are held (points.models.RewardHold) pending this review.
    held: Mapped[bool] = mapped_column(default=False)
    state: Mapped[ReviewState] = mapped_column(enum_column(ReviewState, "review_state"), default=ReviewState.open)
    decided_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RiskSignal(Base):
    """One signal that fired in a review: the report's rows."""

    __tablename__ = "risk_signals"
    __table_args__ = (Index("ix_risk_signals_created", "created_at", "signal"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    review_id: Mapped[int] = mapped_column(BigId, ForeignKey("risk_reviews.id"), index=True)
    #: A key of ``server.risk.signals.SIGNALS``.
    signal: Mapped[str] = mapped_column(String(32))
    points: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RiskIdentity(Base):
    """An identifier seen for a member, as a keyed digest only: phone, unionid, delivery address
    (normalised), payer openid or client address. The signals compare members through these rows."""

    __tablename__ = "risk_identities"
    __table_args__ = (
        UniqueConstraint("kind", "digest", "member_id", name="kind_digest_member"),
        Index("ix_risk_identities_member", "member_id", "kind"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: phone, unionid, address, payer or client.
    kind: Mapped[str] = mapped_column(String(8))
    #: ``security.digest`` of the value (addresses after ``normalise``); never the value itself.
    digest: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
