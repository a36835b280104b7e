"""What the console's points and redemption pages read: overrides with their targets' names, redemptions and invite codes.

Read-side only, like ``queries``: models and ``server.db``, never a service; nothing is changed.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.accounts.models import Member
from server.distribution.models import Grade
from server.orders.models import Product
from server.points.models import (
    InviteCode,
    ItemKind,
    Redemption,
    RedemptionItem,
    RedemptionStatus,
    RewardOverride,
)
from server.referral.models import Scene


def override_for(sess: Session, scope: str, ref_id: int) -> RewardOverride | None:
    return sess.scalar(select(RewardOverride).where(RewardOverride.scope == scope, RewardOverride.ref_id == ref_id))


def override_targets(sess: Session, rows: list[RewardOverride]) -> dict[tuple[str, int], str]:
    """The product title or grade name of each override's target."""
    products = {r.ref_id for r in rows if r.scope == "product"}
    grades = {r.ref_id for r in rows if r.scope == "grade"}
    names: dict[tuple[str, int], str] = {}
    if products:
        names.update({("product", pid): title for pid, title in sess.execute(select(Product.id, Product.title).where(Product.id.in_(products)))})
    if grades:
        names.update({("grade", gid): name for gid, name in sess.execute(select(Grade.id, Grade.name).where(Grade.id.in_(grades)))})
    return names


def grades(sess: Session) -> list[Grade]:
    return list(sess.scalars(select(Grade).order_by(Grade.min_sales_fen)))


def redemptions_query(*, status: RedemptionStatus | None, kind: ItemKind | None, member_id: int | None) -> Any:
    """Redemptions with their items, filtered (status and member each have an index leading with them)."""
    stmt = select(Redemption, RedemptionItem).join(RedemptionItem, RedemptionItem.id == Redemption.item_id)
    if status is not None:
        stmt = stmt.where(Redemption.status == status)
    if kind is not None:
        stmt = stmt.where(RedemptionItem.kind == kind)
    if member_id is not None:
        stmt = stmt.where(Redemption.member_id == member_id)
    return stmt


def members_by_id(sess: Session, ids: set[int]) -> dict[int, Member]:
    return {m.id: m for m in sess.scalars(select(Member).where(Member.id.in_(ids)))} if ids else {}


def invite_codes_query(*, used: bool | None, owner_id: int | None) -> Any:
    """Invite codes with their scenes (for the revocation time); ``used`` None lists both."""
    stmt = select(InviteCode, Scene.revoked_at).join(Scene, Scene.code == InviteCode.scene_code)
    if used is not None:
        stmt = stmt.where(InviteCode.used_by.is_not(None) if used else InviteCode.used_by.is_(None))
    if owner_id is not None:
        stmt = stmt.where(InviteCode.owner_id == owner_id)
    return stmt
