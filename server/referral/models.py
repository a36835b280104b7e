"""Scenes, the two-level chain, the lead timeline, leads and partner channels."""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class Channel(str, enum.Enum):
    """Where a scene is shown, and so where a touch came from."""

    miniprogram_code = "miniprogram_code"
    official_account_qr = "official_account_qr"
    h5_link = "h5_link"
    moments_poster = "moments_poster"
    partner = "partner"
    invite_code = "invite_code"


class Scene(Base):
    """An opaque code that stands for (sharer, channel, content); it carries no user id in the clear."""

    __tablename__ = "scenes"
    __table_args__ = (
        CheckConstraint("(sharer_id IS NULL) <> (partner_id IS NULL)", name="one_owner"),
        Index("ix_scenes_sharer_channel_content", "sharer_id", "channel", "content_type", "content_id"),
    )

    #: At most 32 characters of WeChat's scene charset; random, so it cannot be guessed.
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: The member who shares it; null for a partner channel's scene.
    sharer_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"))
    #: The partner channel that shows it; null for a member's scene.
    partner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partners.id"))
    channel: Mapped[Channel] = mapped_column(enum_column(Channel, "scene_channel", length=24))
    #: What is being shared: "product", "campaign", "material" or "" for the shop itself.
    content_type: Mapped[str] = mapped_column(String(16), default="")
    content_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Binding(Base):
    """A member's place in the chain: inviter (level 1) and upline (level 2), read by primary key."""

    __tablename__ = "referral_bindings"
    __table_args__ = (
        CheckConstraint("inviter_id <> member_id", name="not_self"),
        CheckConstraint("upline_id IS NULL OR upline_id <> member_id", name="upline_not_self"),
        # A member's team, newest binding first, one page at a time: each level reads its index in order.
        Index("ix_referral_bindings_inviter_team", "inviter_id", "bound_at", "member_id"),
        Index("ix_referral_bindings_upline_team", "upline_id", "bound_at", "member_id"),
    )

    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), primary_key=True)
    inviter_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    #: The inviter's inviter at the time of the last change; kept in step when the inviter rebinds.
    upline_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"))
    #: The scene that made this binding.
    scene_code: Mapped[str | None] = mapped_column(String(32), ForeignKey("scenes.code"))
    channel: Mapped[str] = mapped_column(String(24), default="")
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: How many times this member's inviter changed (policy permitting).
    rebind_count: Mapped[int] = mapped_column(default=0)


class TouchKind(str, enum.Enum):
    visit = "visit"
    scan = "scan"
    sign_in = "sign_in"
    bind = "bind"
    bind_refused = "bind_refused"
    lead = "lead"
    lead_reviewed = "lead_reviewed"
    order = "order"
    paid = "paid"
    shipped = "shipped"
    received = "received"
    completed = "completed"
    refunded = "refunded"


class TouchEvent(Base):
    """One event in a person's lead timeline. Append-only."""

    __tablename__ = "touch_events"
    __table_args__ = (
        # A member's timeline; with the channel in the index, the report rollups find a member's latest (or
        # first) scene touch before an event from the index alone.
        Index("ix_touch_events_member_time_channel", "member_id", "created_at", "channel"),
        Index("ix_touch_events_kind_time", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: Null for an anonymous visit that has not signed in yet.
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"))
    kind: Mapped[TouchKind] = mapped_column(enum_column(TouchKind, "touch_kind"))
    #: The scene the person arrived with, as given (it may be unknown or revoked).
    scene: Mapped[str | None] = mapped_column(String(32), index=True)
    #: Where the touch came from: a Channel value, or "miniprogram" / "console" for direct use.
    channel: Mapped[str] = mapped_column(String(32), default="")
    #: Who caused it: "member:<id>", "staff:<id>", "visitor:<digest>" or "system".
    actor: Mapped[str] = mapped_column(String(64), default="system")
    #: What was shared, e.g. "product:12"; empty for the shop itself.
    content: Mapped[str] = mapped_column(String(96), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LeadStatus(str, enum.Enum):
    new = "new"
    valid = "valid"
    invalid = "invalid"


class LeadSource(str, enum.Enum):
    #: A new member arrived through someone's scene.
    arrival = "arrival"
    #: Someone left contact details (a form on an H5 page or in the mini-program).
    contact = "contact"


class LeadFollowUp(str, enum.Enum):
    """Where the staff member working a lead has got with it (``services.FOLLOW_UP_TRANSITIONS`` says how it moves)."""

    new = "new"
    contacted = "contacted"
    converted = "converted"
    lost = "lost"


class Lead(Base):
    """A sales lead in the lead pool (线索池), reviewed by operations and followed up by its assignee."""

    __tablename__ = "leads"
    __table_args__ = (
        Index("ix_leads_status_created", "status", "created_at"),
        # The lead pool's other filters, each with the newest first.
        Index("ix_leads_follow_up_created", "follow_up", "created_at"),
        Index("ix_leads_assignee_created", "assignee_id", "created_at"),
        Index("ix_leads_channel_created", "channel", "created_at"),
        Index("ix_leads_created", "created_at"),
        # The report rollups find the days whose leads were reviewed since their last run.
        Index("ix_leads_reviewed", "reviewed_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[LeadSource] = mapped_column(enum_column(LeadSource, "lead_source"))
    #: The person the lead is about, once they are a member.
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    #: The member id again, for arrival leads only: unique, so a member arrives once (contact leads repeat).
    arrival_member_id: Mapped[int | None] = mapped_column(BigId, unique=True)
    #: The member whose share brought the lead; earns points once it is marked valid.
    sharer_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    #: The partner channel that brought it; earns a contract commission, never points.
    partner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partners.id"), index=True)
    scene_code: Mapped[str | None] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(24), default="")
    content: Mapped[str] = mapped_column(String(96), default="")
    contact_name: Mapped[str] = mapped_column(String(64), default="")
    #: Phone number encrypted like members' phones.
    contact_phone_ciphertext: Mapped[str | None] = mapped_column(String(255))
    contact_phone_masked: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[LeadStatus] = mapped_column(enum_column(LeadStatus, "lead_status"), default=LeadStatus.new)
    reviewed_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    review_note: Mapped[str] = mapped_column(String(255), default="")
    #: The staff member following the lead up; null while nobody is.
    assignee_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))
    follow_up: Mapped[LeadFollowUp] = mapped_column(enum_column(LeadFollowUp, "lead_follow_up"), default=LeadFollowUp.new)
    #: When the follow-up state last changed.
    follow_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LeadNote(Base):
    """One follow-up note on a lead: who wrote it, when, and the state it moved the lead to. Append-only."""

    __tablename__ = "lead_notes"
    __table_args__ = (Index("ix_lead_notes_lead_created", "lead_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(BigId, ForeignKey("leads.id"))
    staff_id: Mapped[int] = mapped_column(BigId, ForeignKey("staff.id"))
    #: The state the note moved the lead to; null for a note that changed nothing.
    follow_up: Mapped[LeadFollowUp | None] = mapped_column(enum_column(LeadFollowUp, "lead_follow_up"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CommissionMode(str, enum.Enum):
    per_lead = "per_lead"
    per_deal = "per_deal"


class Partner(Base):
    """An external channel (another official account, a Zhihu or Weibo account) paid by contract."""

    __tablename__ = "partners"
    __table_args__ = (
        CheckConstraint("per_lead_fen >= 0", name="per_lead_nonneg"),
        CheckConstraint("deal_rate_bp >= 0 AND deal_rate_bp <= 10000", name="deal_rate_range"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    #: e.g. "official_account", "zhihu", "weibo", "toutiao".
    platform: Mapped[str] = mapped_column(String(32), default="")
    contact: Mapped[str] = mapped_column(String(128), default="")
    commission_mode: Mapped[CommissionMode] = mapped_column(enum_column(CommissionMode, "commission_mode"))
    #: Fen paid per valid lead (per_lead mode).
    per_lead_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Basis points of the deal amount (per_deal mode); 100 bp = 1%.
    deal_rate_bp: Mapped[int] = mapped_column(default=0)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PartnerCommission(Base):
    """One line of a partner's commission statement: a valid lead or a deal. Append-only."""

    __tablename__ = "partner_commissions"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="idempotency_key"),
        CheckConstraint("amount_fen >= 0", name="amount_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partners.id"), index=True)
    lead_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("leads.id"))
    #: "lead" or "deal".
    kind: Mapped[str] = mapped_column(String(8))
    #: For a deal: the deal amount the commission is a share of, in fen.
    base_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    #: "lead:<id>" or "deal:<order reference>", so the same event is never recorded twice.
    idempotency_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The payout that paid this line; set once, when finance marks its period paid (the amount never changes).
    payout_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partner_payouts.id"), index=True)


class PartnerPayout(Base):
    """Finance paid a partner the commission lines of one period [period_start, period_end), once."""

    __tablename__ = "partner_payouts"
    __table_args__ = (
        UniqueConstraint("partner_id", "period_start", "period_end", name="partner_period"),
        CheckConstraint("period_start < period_end", name="period_order"),
        CheckConstraint("total_fen >= 0", name="total_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partners.id"))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The lines paid and their sum, in fen, as they were when paid.
    lines: Mapped[int] = mapped_column(default=0)
    total_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The bank transfer or voucher number finance paid with.
    reference: Mapped[str] = mapped_column(String(64), default="")
    paid_by: Mapped[int] = mapped_column(BigId, ForeignKey("staff.id"))
    paid_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OAAttribution(Base):
    """A scene waiting for someone who followed the official account through it before using the mini-program.

    Keyed by unionid, the one id the account and the mini-program share; consumed by that
    person's next sign-in, which binds with it unless it brings a scene of its own.
    """

    __tablename__ = "oa_attributions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    unionid: Mapped[str] = mapped_column(String(64), unique=True)
    scene_code: Mapped[str] = mapped_column(String(32), ForeignKey("scenes.code"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Until then no other scene replaces this one (under last_touch the latest scan always does).
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
