"""Messages to members: their subscribe-message allowances, the outbox of messages, the official account's followers."""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class NotifyEvent(str, enum.Enum):
    """What a member is told about; each is switched on and mapped to a template in settings."""

    points_pending = "points_pending"
    points_available = "points_available"
    order_shipped = "order_shipped"
    refund_result = "refund_result"
    distributor_decided = "distributor_decided"
    lead_valid = "lead_valid"
    redemption_fulfilled = "redemption_fulfilled"


class OutboxState(str, enum.Enum):
    #: Waiting to be sent (again, after ``next_attempt_at``).
    queued = "queued"
    #: Claimed by a sender until ``lease_until``; a lease that runs out puts it back in reach.
    sending = "sending"
    sent = "sent"
    #: Will never be sent: no allowance, or WeChat refused it for good (``reason``).
    dropped = "dropped"
    #: WeChat could not take it within the attempts allowed.
    failed = "failed"


class MessageChannel(str, enum.Enum):
    #: A mini-program subscribe message, using one of the member's allowances.
    subscribe = "subscribe"
    #: The official account's template message, to a member who follows it.
    template = "template"


class SubscriptionAllowance(Base):
    """How many more subscribe messages of one template a member may receive: one per acceptance
    of the one-time template in ``wx.requestSubscribeMessage``, used up one per message sent."""

    __tablename__ = "subscription_allowances"
    __table_args__ = (
        UniqueConstraint("member_id", "template_id", name="member_template"),
        CheckConstraint("remaining >= 0", name="remaining_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    template_id: Mapped[str] = mapped_column(String(64))
    remaining: Mapped[int] = mapped_column(default=0)
    #: Acceptances ever reported, for the console.
    accepted: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OutboxMessage(Base):
    """One message to a member, written in the unit of work of the event it tells about and sent after its commit."""

    __tablename__ = "notification_outbox"
    __table_args__ = (
        Index("ix_notification_outbox_state_next_attempt", "state", "next_attempt_at"),
        Index("ix_notification_outbox_member_created", "member_id", "created_at"),
        Index("ix_notification_outbox_event_created", "event", "created_at"),
        CheckConstraint("attempts >= 0", name="attempts_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The event and its subject (``points_pending:reward:12``): one message per event, however often it is announced.
    key: Mapped[str] = mapped_column(String(96), unique=True)
    event: Mapped[NotifyEvent] = mapped_column(enum_column(NotifyEvent, "notify_event", 24))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    #: The merchant's subscribe-message template and the values of its keywords, already fitted to their types.
    template_id: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The mini-program page the message opens ("" for none).
    page: Mapped[str] = mapped_column(String(255), default="")
    #: The official account's template message sent instead when no allowance is left
    #: (``{"template_id", "data", "page"}``), if the merchant set one for this event.
    fallback: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    state: Mapped[OutboxState] = mapped_column(enum_column(OutboxState, "outbox_state"), default=OutboxState.queued)
    #: How it went out, or is going out; None before the first claim.
    channel: Mapped[MessageChannel | None] = mapped_column(enum_column(MessageChannel, "message_channel"))
    #: Sends tried (claims), including the one under way.
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: While ``sending``: when the claim lapses and another sender may take the row.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: WeChat's errcode of the last refusal, if any.
    errcode: Mapped[int | None]
    #: Why it was dropped or is being retried, for the console; "" when nothing went wrong.
    reason: Mapped[str] = mapped_column(String(255), default="")
    msgid: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OAFollower(Base):
    """A user of the official account as its callback saw them: whether they follow it, and the unionid
    that finds the member behind them (a template message needs the account's own openid)."""

    __tablename__ = "oa_followers"

    oa_openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    following: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
