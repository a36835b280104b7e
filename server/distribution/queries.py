"""Read-side rules and figures about distributors that other packages use: who may share, a buyer's
tier discount, a distributor's record.

Depends only on the models (and the other packages' query modules), so referral, orders and points
read it without importing the distribution services.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.accounts.models import Member, MemberStatus
from server.distribution.models import Distributor, DistributorStatus, DistributorTier
from server.errors import NotFoundError
from server.orders import queries as order_queries
from server.points import queries as point_queries
from server.referral.models import Binding, Lead, Scene, TouchEvent, TouchKind

Status = DistributorStatus

#: Recruits that hold one of a recruiter's places; rejected and disabled ones give it back.
LIVE_STATUSES = (Status.pending, Status.approved, Status.frozen)
TIERS = (1, 2)
MAX_DISCOUNT_BP = 5000
#: What the migration seeds; also what a tier reads as if its row is missing.
TIER_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {"discount_bp": 500, "can_recruit": True, "max_recruits": 50},
    2: {"discount_bp": 200, "can_recruit": False, "max_recruits": 0},
}


def sharer_refusal(sess: Session, member_id: int | None) -> str | None:
    """Why this member may not bring anyone in or earn from it: the one rule binding, rewards and
    incentives share. ``sharer_disabled`` for a missing or disabled member or a disabled distributor,
    ``sharer_frozen`` for a frozen distributor, None for an active member or distributor."""
    if member_id is None:
        return "sharer_disabled"
    found = sess.execute(
        select(Member.status, Distributor.status).outerjoin(Distributor, Distributor.member_id == Member.id).where(Member.id == member_id)
    ).first()
    if found is None or found[0] != MemberStatus.active:
        return "sharer_disabled"
    status = found[1]
    if status == Status.frozen:
        return "sharer_frozen"
    if status == Status.disabled:
        return "sharer_disabled"
    return None


def get_tier(sess: Session, tier: int) -> DistributorTier:
    """A tier's permissions; its seeded defaults (not saved) if the row is missing."""
    if tier not in TIERS:
        raise NotFoundError("no such tier")
    row = sess.get(DistributorTier, tier)
    return row if row is not None else DistributorTier(tier=tier, **TIER_DEFAULTS[tier])


def member_discount_bp(sess: Session, member_id: int) -> int:
    """The discount on a member's own purchases: their tier's while an approved distributor, else 0."""
    tier = sess.scalar(select(Distributor.tier).where(Distributor.member_id == member_id, Distributor.status == Status.approved))
    return get_tier(sess, tier).discount_bp if tier is not None else 0


def live_recruits(sess: Session, recruiter_id: int) -> int:
    """How many of the recruiter's places are taken (pending, approved or frozen recruits)."""
    return sess.scalar(
        select(func.count())
        .select_from(Distributor)
        .where(Distributor.recruited_by_id == recruiter_id, Distributor.status.in_(LIVE_STATUSES))
    ) or 0


def distributor_stats(sess: Session, distributor: Distributor) -> dict[str, Any]:
    """The distributor's record: visits and leads their shares brought, team size, recruits.

    Team size is for display; nothing rewards or grades by it.
    """
    member_id = distributor.member_id
    visits = sess.scalar(
        select(func.count())
        .select_from(TouchEvent)
        .join(Scene, Scene.code == TouchEvent.scene)
        .where(Scene.sharer_id == member_id, TouchEvent.kind.in_((TouchKind.visit, TouchKind.scan)))
    )
    leads = sess.scalar(select(func.count()).select_from(Lead).where(Lead.sharer_id == member_id))
    direct = sess.scalar(select(func.count()).select_from(Binding).where(Binding.inviter_id == member_id))
    indirect = sess.scalar(select(func.count()).select_from(Binding).where(Binding.upline_id == member_id))
    return {
        "visits": visits or 0,
        "leads": leads or 0,
        "team_direct": direct or 0,
        "team_indirect": indirect or 0,
        "recruits": live_recruits(sess, member_id),
        "orders": order_queries.orders_brought_by(sess, member_id),
        "order_amount_fen": order_queries.sales_brought_by(sess, member_id),
        "points": asdict(point_queries.member_balances(sess, member_id)),
    }


def recruits_page(sess: Session, recruiter_id: int, offset: int, limit: int) -> tuple[list[tuple[Distributor, Member]], int]:
    """The tier-2 distributors ``recruiter_id`` recruited, newest application first, with their members."""
    where = Distributor.recruited_by_id == recruiter_id
    total = sess.scalar(select(func.count()).select_from(Distributor).where(where)) or 0
    rows = sess.execute(
        select(Distributor, Member)
        .join(Member, Member.id == Distributor.member_id)
        .where(where)
        .order_by(Distributor.applied_at.desc(), Distributor.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [(d, m) for d, m in rows], total


def recruiting_limit(sess: Session, distributor: Distributor) -> dict[str, Any]:
    """Whether the distributor may recruit, how many places their tier gives (0 = no limit) and how many are taken."""
    tier = get_tier(sess, distributor.tier)
    can_recruit = bool(tier.can_recruit) and distributor.status == Status.approved
    taken = live_recruits(sess, distributor.member_id)
    limit = tier.max_recruits if tier.can_recruit else 0
    return {
        "can_recruit": can_recruit,
        "max_recruits": limit,
        "live_recruits": taken,
        # None when the tier sets no limit.
        "remaining": (max(0, limit - taken) if limit else None) if tier.can_recruit else 0,
    }
