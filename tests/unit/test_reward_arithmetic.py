"""The reward arithmetic as a pure function: no database, no app, so it runs in milliseconds."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.points.errors import ComplianceError
from server.points.rules import HARD_CAP_BP, MAX_LEVEL2_SHARE_BP, Reward, check, split_rewards

DEFAULTS = {"level1_bp": 50, "label": "level 1, first order", "level2_share_bp": 1_000, "direct_only": False, "has_upline": True, "cap_bp": 300}


def amounts(rewards: list[Reward]) -> dict[int, int]:
    return {r.level: r.amount for r in rewards}


def test_the_seed_defaults() -> None:
    """0.5% of a 10,000-fen order to the inviter (50 hundredths), 10% of that to the upline."""
    assert amounts(split_rewards(10_000, **DEFAULTS)) == {1: 50, 2: 5}
    assert amounts(split_rewards(10_000, **DEFAULTS | {"level1_bp": 100})) == {1: 100, 2: 10}


def test_every_rounding_is_a_floor() -> None:
    assert amounts(split_rewards(199, **DEFAULTS)) == {1: 0}  # 0.995 hundredths; level 2 of nothing is nothing
    assert amounts(split_rewards(10_199, **DEFAULTS)) == {1: 50, 2: 5}


def test_direct_only_and_no_upline_pay_level_one_alone() -> None:
    assert amounts(split_rewards(10_000, **DEFAULTS | {"direct_only": True})) == {1: 50}
    assert amounts(split_rewards(10_000, **DEFAULTS | {"has_upline": False})) == {1: 50}


def test_the_cap_takes_from_level_two_first() -> None:
    # 2% to level 1 and all of it again to level 2 would be 4%; the 3% cap leaves level 2 with 1%.
    assert amounts(split_rewards(10_000, **DEFAULTS | {"level1_bp": 200, "level2_share_bp": 10_000})) == {1: 200, 2: 100}


def test_no_argument_lifts_the_hard_ceiling() -> None:
    rewards = split_rewards(10_000, **DEFAULTS | {"level1_bp": 50_000, "level2_share_bp": 90_000, "cap_bp": 90_000})
    assert amounts(rewards) == {1: HARD_CAP_BP}


def test_nothing_for_nothing() -> None:
    assert split_rewards(0, **DEFAULTS) == [] and split_rewards(-5, **DEFAULTS) == []


@given(
    base=st.integers(1, 10**12),
    level1_bp=st.integers(0, 50_000),
    share=st.integers(0, 50_000),
    cap=st.integers(0, 50_000),
    direct_only=st.booleans(),
    has_upline=st.booleans(),
)
def test_the_guards_hold_for_any_rates(base: int, level1_bp: int, share: int, cap: int, direct_only: bool, has_upline: bool) -> None:
    rewards = split_rewards(base, level1_bp=level1_bp, label="x", level2_share_bp=share, direct_only=direct_only, has_upline=has_upline, cap_bp=cap)
    paid = amounts(rewards)
    assert set(paid) <= {1, 2}  # two levels, never a third
    assert paid.get(2, 0) <= paid[1]  # level 2 never above level 1
    assert sum(paid.values()) <= base * min(cap, HARD_CAP_BP) // 10_000  # within the merchant's cap and the ceiling
    assert paid[1] == min(base * min(level1_bp, HARD_CAP_BP) // 10_000, base * min(cap, HARD_CAP_BP) // 10_000)
    if direct_only or not has_upline:
        assert 2 not in paid
    assert paid.get(2, 0) <= paid[1] * min(share, MAX_LEVEL2_SHARE_BP) // 10_000


@pytest.mark.parametrize(
    "rewards",
    [
        [Reward(1, 10, "a"), Reward(3, 1, "c")],
        [Reward(1, 10, "a"), Reward(1, 10, "b")],
        [Reward(1, 5, "a"), Reward(2, 6, "b")],
        [Reward(1, 10_000, "a")],
    ],
)
def test_the_final_check_refuses_what_breaks_a_guard(rewards: list[Reward]) -> None:
    with pytest.raises(ComplianceError):
        check(rewards, 10_000)
