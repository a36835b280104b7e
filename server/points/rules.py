"""Reward rules: the merchant's rates, overrides, and the compliance guards no setting can lift.

Rates are basis points (1/100 of a percent) of the paid amount in fen; a
reward in hundredths of a point is ``fen * bp // 10_000`` (1 point = ¥1, so
1 hundredth = 1 fen of value). Every rounding is a floor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.accounts.services import record_audit
from server.distribution.models import Grade
from server.errors import NotFoundError, ValidationError
from server.orders.models import Product
from server.points.errors import ComplianceError, RewardOverrideExistsError
from server.points.models import RewardOverride
from server.settings.services import SettingSpec, get_setting, register

#: Guard 1: rewards reach two levels; there is no setting for a third.
MAX_LEVELS = 2
#: Guard 4: whatever the merchant sets, no order pays out more than this share of its amount in points.
HARD_CAP_BP = 2_000
#: A level-2 reward is a share of the level-1 reward, so it can never exceed it (guard 4).
MAX_LEVEL2_SHARE_BP = 10_000


def _level2_not_above_level1(_sess: Session, value: int) -> None:
    if value > MAX_LEVEL2_SHARE_BP:
        raise ValueError("level 2 may never earn more than level 1")


def _cap_within_ceiling(_sess: Session, value: int) -> None:
    if value > HARD_CAP_BP:
        raise ValueError(f"the cap cannot exceed the hard ceiling of {HARD_CAP_BP} bp")


register(
    SettingSpec("reward_level1_first_bp", int, 50, "Level-1 reward on a first order or contract, in basis points of the paid amount (50 = 0.5%).", minimum=0, maximum=HARD_CAP_BP),
    SettingSpec("reward_level1_repeat_bp", int, 100, "Level-1 reward on repeat business (phase 2+ contracts, repeat orders), in basis points (100 = 1%).", minimum=0, maximum=HARD_CAP_BP),
    SettingSpec(
        "reward_level2_share_bp",
        int,
        1_000,
        "Level-2 reward as a share of the level-1 reward on the same order, in basis points (1000 = 10%); at most 10000.",
        minimum=0,
        maximum=MAX_LEVEL2_SHARE_BP,
        extra_checks=(_level2_not_above_level1,),
    ),
    SettingSpec("reward_direct_only", bool, False, "Direct only: no level-2 rewards at all."),
    SettingSpec(
        "reward_order_cap_bp",
        int,
        300,
        f"Most points one order may pay out in total, in basis points of its amount (hard ceiling {HARD_CAP_BP}).",
        minimum=0,
        maximum=HARD_CAP_BP,
        extra_checks=(_cap_within_ceiling,),
    ),
    SettingSpec("valid_lead_points", int, 1_000, "Hundredths of a point for a lead operations marks valid (1000 = 10 points).", minimum=0, maximum=100_000),
    SettingSpec("require_finance_confirmation", bool, False, "Points of online orders mature only after finance confirms the payment (contracts always need it)."),
)


@dataclass(frozen=True)
class Reward:
    level: int
    amount: int
    rule: str


def level1_rate(sess: Session, *, repeat: bool, product_ids: list[int], grade_id: int | None) -> tuple[int, str]:
    """The level-1 rate for an order: a product override, else a grade override, else the merchant's default."""
    column = "level1_repeat_bp" if repeat else "level1_first_bp"
    label = "repeat" if repeat else "first order"
    overrides = sess.scalars(select(RewardOverride)).all() if product_ids or grade_id else []
    for scope, ref in [("product", pid) for pid in product_ids] + ([("grade", grade_id)] if grade_id else []):
        for row in overrides:
            if row.scope == scope and row.ref_id == ref and getattr(row, column) is not None:
                return int(getattr(row, column)), f"level 1, {label}, {scope} {ref} override"
    key = "reward_level1_repeat_bp" if repeat else "reward_level1_first_bp"
    return int(get_setting(sess, key)), f"level 1, {label}"


def order_rewards(sess: Session, *, base_fen: int, repeat: bool, product_ids: list[int], grade_id: int | None, has_upline: bool) -> list[Reward]:
    """The two rewards an order of ``base_fen`` pays (level 2 omitted when direct-only or absent), at the
    merchant's rates and overrides: ``split_rewards`` with the settings read."""
    if base_fen <= 0:
        return []
    rate, label = level1_rate(sess, repeat=repeat, product_ids=product_ids, grade_id=grade_id)
    return split_rewards(
        base_fen,
        level1_bp=rate,
        label=label,
        level2_share_bp=int(get_setting(sess, "reward_level2_share_bp")),
        direct_only=bool(get_setting(sess, "reward_direct_only")),
        has_upline=has_upline,
        cap_bp=int(get_setting(sess, "reward_order_cap_bp")),
    )


def split_rewards(
    base_fen: int, *, level1_bp: int, label: str, level2_share_bp: int, direct_only: bool, has_upline: bool, cap_bp: int
) -> list[Reward]:
    """The rewards of ``base_fen`` paid at ``level1_bp`` (a pure function: no database, no settings).

    Applies every guard whatever the arguments: two levels at most, level 2 ≤ level 1, the total
    within ``cap_bp`` and the hard ceiling. Every rounding is a floor.
    """
    if base_fen <= 0:
        return []
    rate = min(level1_bp, HARD_CAP_BP)
    level1 = base_fen * rate // 10_000
    share = min(level2_share_bp, MAX_LEVEL2_SHARE_BP)
    level2 = level1 * share // 10_000 if has_upline and not direct_only else 0
    cap = base_fen * min(cap_bp, HARD_CAP_BP) // 10_000
    if level1 + level2 > cap:
        # Level 1 is paid first and level 2 gets what is left of the cap, so level 2 stays ≤ level 1.
        level1 = min(level1, cap)
        level2 = min(level2, cap - level1)
    rewards = [Reward(1, level1, f"{label} {rate}bp")]
    if level2:
        rewards.append(Reward(2, level2, f"level 2, {share}bp of level 1"))
    check(rewards, base_fen)
    return rewards


def check(rewards: list[Reward], base_fen: int) -> None:
    """The guards, asserted on every computed payout: a bug here must fail loudly, not pay."""
    levels = [r.level for r in rewards]
    if any(level > MAX_LEVELS or level < 1 for level in levels) or len(set(levels)) != len(levels):
        raise ComplianceError("rewards may only go to level 1 and level 2")
    by_level = {r.level: r.amount for r in rewards}
    if by_level.get(2, 0) > by_level.get(1, 0):
        raise ComplianceError("level 2 may never earn more than level 1")
    if sum(by_level.values()) > base_fen * HARD_CAP_BP // 10_000:
        raise ComplianceError("an order may not pay out more than the hard ceiling")


# -- per-product and per-grade overrides, managed by the owner -------------------------------------------

OVERRIDE_SCOPES = ("product", "grade")


def _override_values(row: Any) -> dict[str, Any]:
    return {"scope": row.scope, "ref_id": row.ref_id, "level1_first_bp": row.level1_first_bp, "level1_repeat_bp": row.level1_repeat_bp}


def _override_problems(sess: Session, values: dict[str, Any]) -> list[dict[str, str]]:
    """What keeps an override from being stored: an unknown target, no rate, or a rate past the guards."""
    problems = []
    if values["scope"] not in OVERRIDE_SCOPES:
        problems.append({"field": "scope", "error": "product or grade"})
    elif sess.get(Product if values["scope"] == "product" else Grade, values["ref_id"]) is None:
        problems.append({"field": "ref_id", "error": f"no such {values['scope']}"})
    if values["level1_first_bp"] is None and values["level1_repeat_bp"] is None:
        problems.append({"field": "level1_first_bp", "error": "set at least one rate (remove the override to fall back to the defaults)"})
    cap = min(int(get_setting(sess, "reward_order_cap_bp")), HARD_CAP_BP)
    for field in ("level1_first_bp", "level1_repeat_bp"):
        rate = values[field]
        if rate is not None and not 0 <= rate <= cap:
            # Guard 4: the order cap would cut any higher rate, so such an override would only mislead.
            problems.append({"field": field, "error": f"must be between 0 and the order cap of {cap} bp (reward_order_cap_bp, hard ceiling {HARD_CAP_BP})"})
    return problems


def list_overrides(sess: Session, *, scope: str | None = None) -> list[Any]:
    stmt = select(RewardOverride).order_by(RewardOverride.scope, RewardOverride.ref_id)
    if scope is not None:
        stmt = stmt.where(RewardOverride.scope == scope)
    return list(sess.scalars(stmt))


def get_override(sess: Session, override_id: int, *, for_update: bool = False) -> Any:
    row = sess.get(RewardOverride, override_id, with_for_update=True if for_update else None)
    if row is None:
        raise NotFoundError("no such reward override")
    return row


def create_override(sess: Session, *, scope: str, ref_id: int, level1_first_bp: int | None, level1_repeat_bp: int | None, staff_id: int | None) -> Any:
    """A level-1 rate for one product or grade instead of the merchant's default; audited."""
    values = {"scope": scope, "ref_id": ref_id, "level1_first_bp": level1_first_bp, "level1_repeat_bp": level1_repeat_bp}
    if problems := _override_problems(sess, values):
        raise ValidationError(data={"errors": problems})
    if sess.scalar(select(RewardOverride.id).where(RewardOverride.scope == scope, RewardOverride.ref_id == ref_id)) is not None:
        raise RewardOverrideExistsError()
    row = RewardOverride(**values)
    try:
        with sess.begin_nested():
            sess.add(row)
    except IntegrityError:
        raise RewardOverrideExistsError() from None
    record_audit(sess, staff_id, "reward_override.create", f"reward_override:{row.id}", values)
    return row


def update_override(sess: Session, override_id: int, changes: dict[str, Any], *, staff_id: int | None) -> Any:
    """Change an override's rates (a rate set to null falls back to the default for that case); audited."""
    row = get_override(sess, override_id, for_update=True)
    old = _override_values(row)
    new = old | {k: v for k, v in changes.items() if k in ("level1_first_bp", "level1_repeat_bp")}
    if problems := _override_problems(sess, new):
        raise ValidationError(data={"errors": problems})
    row.level1_first_bp, row.level1_repeat_bp = new["level1_first_bp"], new["level1_repeat_bp"]
    sess.flush()
    record_audit(sess, staff_id, "reward_override.update", f"reward_override:{row.id}", {"old": old, "new": new})
    return row


def delete_override(sess: Session, override_id: int, *, staff_id: int | None) -> None:
    """Switch an override off: the product or grade earns the default rates again. Postings keep the rule they used."""
    row = get_override(sess, override_id, for_update=True)
    record_audit(sess, staff_id, "reward_override.delete", f"reward_override:{row.id}", _override_values(row))
    sess.delete(row)
    sess.flush()
