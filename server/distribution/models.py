"""Distributors (推广员), their two tiers, sales grades and the promotion materials they share."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class DistributorStatus(str, enum.Enum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    frozen = "frozen"
    disabled = "disabled"


class DistributorTier(Base):
    """What one tier may do. Exactly two rows, tier 1 and tier 2; the owner edits them.

    Which materials a tier sees is not stored: it follows from the tier number
    (a tier sees every audience from its own number up to 3).
    """

    __tablename__ = "distributor_tiers"
    __table_args__ = (
        CheckConstraint("tier IN (1, 2)", name="tier_range"),
        CheckConstraint("discount_bp >= 0 AND discount_bp <= 5000", name="discount_range"),
        CheckConstraint("max_recruits >= 0", name="max_recruits_nonneg"),
        # A tier-2 distributor's recruit would sit a third tier down; the chain has two.
        CheckConstraint("tier = 1 OR can_recruit = 0", name="only_tier1_recruits"),
    )

    tier: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    #: Discount on the distributor's own purchases, in basis points (500 = 5%).
    discount_bp: Mapped[int] = mapped_column(default=0)
    #: Whether members this tier brings in become tier-2 distributors when they apply.
    can_recruit: Mapped[bool] = mapped_column(default=False)
    #: Live recruits (pending, approved or frozen) one distributor of this tier may have; 0 = no limit.
    max_recruits: Mapped[int] = mapped_column(default=0)
    #: Null while the row still holds the values the migration seeded.
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))


class Grade(Base):
    """A sales grade: reached by the distributor's own attributed sales, and by nothing else."""

    __tablename__ = "grades"
    __table_args__ = (CheckConstraint("min_sales_fen >= 0", name="min_sales_nonneg"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    #: Own attributed sales, in fen, from which this grade applies.
    min_sales_fen: Mapped[int] = mapped_column(BigInteger, unique=True)
    #: What the grade brings, as shown to distributors.
    perks: Mapped[str] = mapped_column(Text, default="")
    #: Display order in the console and the mini-program, ascending.
    sort: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Distributor(Base):
    """A member's application to be a distributor, and once approved, their distributor record.

    Becoming one never costs anything: there is deliberately no fee or purchase column.
    """

    __tablename__ = "distributors"
    __table_args__ = (
        CheckConstraint("tier IN (1, 2)", name="tier_range"),
        CheckConstraint("recruited_by_id IS NULL OR tier = 2", name="recruiter_only_tier2"),
        CheckConstraint("recruited_by_id IS NULL OR recruited_by_id <> member_id", name="not_own_recruit"),
        Index("ix_distributors_status_tier", "status", "tier"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), unique=True)
    tier: Mapped[int]
    status: Mapped[DistributorStatus] = mapped_column(
        enum_column(DistributorStatus, "distributor_status"), default=DistributorStatus.pending
    )
    real_name: Mapped[str] = mapped_column(String(32))
    #: Contact phone, encrypted like members' phones.
    phone_ciphertext: Mapped[str] = mapped_column(String(255))
    #: Keyed digest of the phone, so staff can search by a full number without decrypting.
    phone_digest: Mapped[str] = mapped_column(String(64), index=True)
    phone_masked: Mapped[str] = mapped_column(String(32))
    wechat_id: Mapped[str] = mapped_column(String(64), default="")
    intro: Mapped[str] = mapped_column(String(500), default="")
    #: For tier 2: the member id of the tier-1 distributor who recruited them.
    recruited_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    grade_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("grades.id"))
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When the latest status change was decided; null while pending.
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The staff member behind the latest decision; null for an automatic approval.
    decided_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))
    #: Why the current status was given (rejection, freeze, disable); shown to the distributor.
    status_reason: Mapped[str] = mapped_column(String(255), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class MaterialKind(str, enum.Enum):
    image_text = "image_text"
    video = "video"
    poster = "poster"


class Material(Base):
    """Promotion material the merchant prepares for sharing: an article, a video, or a poster design."""

    __tablename__ = "materials"
    __table_args__ = (
        CheckConstraint("audience IN (1, 2, 3)", name="audience_range"),
        CheckConstraint(
            "(kind = 'poster' AND poster_template_id IS NOT NULL) OR (kind <> 'poster' AND poster_template_id IS NULL)",
            name="poster_has_template",
        ),
        Index("ix_materials_listing", "active", "audience", "sort"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[MaterialKind] = mapped_column(enum_column(MaterialKind, "material_kind"))
    title: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(String(255), default="")
    #: The article of an image_text material (plain text or the mini-program's rich-text markup).
    body: Mapped[str] = mapped_column(Text, default="")
    #: The video link of a video, or an image for image_text.
    url: Mapped[str] = mapped_column(String(512), default="")
    cover_url: Mapped[str] = mapped_column(String(512), default="")
    #: The poster design a poster material renders with; set exactly when kind is poster.
    poster_template_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("poster_templates.id"))
    #: 1: only tier-1 distributors see it; 2: every approved distributor; 3: every member.
    audience: Mapped[int] = mapped_column(default=3)
    active: Mapped[bool] = mapped_column(default=True)
    #: Display order, ascending; ties go to the newest.
    sort: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RulesStatus(str, enum.Enum):
    draft = "draft"
    published = "published"


class ProgrammeRules(Base):
    """One version of the distributor programme rules (分销规则与协议).

    A draft is edited freely; publishing gives it the next version number and makes it the current
    one, after which it never changes (an edit starts a new draft). The body may hold placeholders
    for the live settings (``{{reward_level1_first_bp}}``), filled in whenever the rules are shown.
    """

    __tablename__ = "programme_rules"
    __table_args__ = (
        CheckConstraint(
            "(status = 'published' AND number IS NOT NULL) OR (status <> 'published' AND number IS NULL)",
            name="published_has_number",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The version number, 1, 2, …: given when published; the highest published one is current.
    number: Mapped[int | None] = mapped_column(unique=True)
    status: Mapped[RulesStatus] = mapped_column(enum_column(RulesStatus, "rules_status"), default=RulesStatus.draft)
    title: Mapped[str] = mapped_column(String(64))
    #: Plain text with ``{{placeholder}}`` for live values and a very small markup (see programme.render).
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))


class RulesAcceptance(Base):
    """A member accepted one version of the programme rules, when applying to be a distributor."""

    __tablename__ = "programme_rules_acceptances"
    __table_args__ = (Index("ix_programme_rules_acceptances_member", "member_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    rules_id: Mapped[int] = mapped_column(BigId, ForeignKey("programme_rules.id"), index=True)
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The address the acceptance came from, as the app saw it (X-Forwarded-For only through trusted proxies).
    client_address: Mapped[str] = mapped_column(String(64), default="")
