"""Reward rules: the merchant's rates, overrides, and the compliance guards no setting can lift.

Rates are basis points (1/100 of a percent) of the paid amount in fen; a
reward in hundredths of a point is ``fen * bp // 10_000`` (1 point = ¥1, so
1 hundredth = 1 fen of value). Every rounding is a floor.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.points.errors import ComplianceError
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
    from server.points.models import RewardOverride

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
    """The two rewards an order of ``base_fen`` pays (level 2 omitted when direct-only or absent).

    Applies every guard: two levels at most, level 2 ≤ level 1, the total within
    the merchant's cap and the hard ceiling.
    """
    if base_fen <= 0:
        return []
    rate, label = level1_rate(sess, repeat=repeat, product_ids=product_ids, grade_id=grade_id)
    rate = min(rate, HARD_CAP_BP)
    level1 = base_fen * rate // 10_000
    share = min(int(get_setting(sess, "reward_level2_share_bp")), MAX_LEVEL2_SHARE_BP)
    level2 = level1 * share // 10_000 if has_upline and not get_setting(sess, "reward_direct_only") else 0
    cap_bp = min(int(get_setting(sess, "reward_order_cap_bp")), HARD_CAP_BP)
    cap = base_fen * cap_bp // 10_000
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
