"""Incentives beyond order rewards: the daily share reward, stage bonuses on own sales, starter points.

Each is one ledger posting under its own idempotency key, credited to the
member's available balance through ``credit_available`` (so a debt is paid
first), and each stays inside the compliance guards of DESIGN §5:

* Share reward (guard 6): off by default. When the merchant turns it on, a
  sharer earns it at most once per China-time day, and only when another
  active, signed-in member opens their share in the mini-program. Anonymous H5
  visits (``/s/<code>``) never reach this module.
* Stage bonuses (guard 2): judged only on the distributor's own attributed
  sales in calendar months. No input from team size, bindings or registrations
  exists here.
* Starter points (guard 3): credited once when a distributor is approved. They
  never depend on a purchase, and approval never requires one. Starter
  *materials* need no code: promotion materials with audience 2 ("every
  approved distributor") become visible to a distributor the moment they are
  approved, so a merchant hands out a starter kit by publishing materials for
  that audience.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.accounts.models import Member, MemberStatus
from server.accounts.services import record_audit
from server.clock import CHINA, local
from server.db import utcnow
from server.distribution.models import Distributor, DistributorStatus
from server.distribution.queries import sharer_refusal
from server.errors import NotFoundError, ValidationError
from server.orders.models import Order
from server.points import ledger
from server.points.models import (
    Account,
    AccountKind,
    Entry,
    LedgerTransaction,
    ShareOpen,
    StageBonusRule,
    TxKind,
)
from server.referral.models import Channel, Scene
from server.referral.services import scene_state
from server.settings.services import SettingSpec, get_setting, register

K = AccountKind

#: Most one share reward may be: 10 points. The seed pays 1 point; anything far above that would
#: turn sharing itself into the product, which WeChat's rules forbid.
MAX_SHARE_REWARD = 1_000
#: Most starter points one distributor may receive: 1,000 points.
MAX_STARTER_POINTS = 100_000
#: A stage rule looks back at most a year; longer streaks are better expressed as several rules.
MAX_CONSECUTIVE_MONTHS = 12
#: Most one stage bonus may pay: 100,000 points, a typo guard like settlement's MAX_GRANT.
MAX_STAGE_BONUS = 10_000_000
MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")

register(
    SettingSpec(
        "share_reward_enabled",
        bool,
        False,
        "Pay the daily share reward (seed: 1 point for the first share a day). Off by default: WeChat's "
        "external-link rules forbid rewarding shares. When on, it is credited only when another signed-in "
        "member opens the share, at most once per sharer per day.",
    ),
    SettingSpec(
        "share_reward_points",
        int,
        100,
        f"The daily share reward, in hundredths of a point (100 = 1 point; at most {MAX_SHARE_REWARD}).",
        minimum=1,
        maximum=MAX_SHARE_REWARD,
    ),
    SettingSpec(
        "starter_points",
        int,
        0,
        f"Points a distributor receives once when approved, in hundredths of a point; 0 = none (at most {MAX_STARTER_POINTS}). "
        "Never tied to a purchase.",
        minimum=0,
        maximum=MAX_STARTER_POINTS,
    ),
)


def china_day(now: datetime) -> str:
    """The China-time calendar day of ``now``, e.g. ``"2026-11-23"``."""
    return f"{local(now):%Y-%m-%d}"


# -- the share reward --------------------------------------------------------------------------


def _signed_in_member(member: Member) -> bool:
    """A real member: active, and signed in through WeChat at least once (so not an H5 visitor)."""
    return member.status == MemberStatus.active and member.last_login_at is not None


def record_share_open(sess: Session, opener: Member, scene_code: str, *, now: datetime | None = None) -> bool:
    """Another member opened a member's share: credit the sharer's daily share reward if it is due.

    Credits only while ``share_reward_enabled`` is on, for a live member scene
    (never a partner's or an invite code), when the opener is an active,
    signed-in member other than the sharer, and the sharer may earn; at most once
    per sharer per China-time day. Returns whether this call credited.
    """
    if not get_setting(sess, "share_reward_enabled"):
        return False
    scene = sess.get(Scene, scene_code)
    if scene is None or scene_state(scene) is not None or scene.sharer_id is None or scene.channel == Channel.invite_code:
        return False
    sharer_id = scene.sharer_id
    if sharer_id == opener.id or not _signed_in_member(opener) or sharer_refusal(sess, sharer_id) is not None:
        return False
    day = china_day(now or utcnow())
    if sess.scalar(select(ShareOpen.id).where(ShareOpen.sharer_id == sharer_id, ShareOpen.day == day)) is not None:
        return False
    try:
        with sess.begin_nested():
            share_open = ShareOpen(sharer_id=sharer_id, opener_id=opener.id, scene_code=scene.code, day=day)
            sess.add(share_open)
    except IntegrityError:
        return False  # a concurrent open of the same sharer's share won the day
    points = int(get_setting(sess, "share_reward_points"))
    ledger.credit_available(
        sess,
        sharer_id,
        points,
        source=K.issuance,
        key=f"share:{sharer_id}:{day}",
        kind=TxKind.share_reward,
        reason=f"Share reward for {day}: another member opened your share",
        actor=f"member:{opener.id}",
        # What the compliance report checks the posting against: the switch was on, and who opened what.
        detail={"share_open_id": share_open.id, "opener_id": opener.id, "scene": scene.code, "day": day, "share_reward_enabled": True},
    )
    return True


# -- stage bonuses -----------------------------------------------------------------------------


def _rule_problems(name: str, min_monthly_sales_fen: int, consecutive_months: int, bonus: int) -> list[dict[str, str]]:
    problems = []
    if not 1 <= len(name) <= 64:
        problems.append({"field": "name", "error": "1 to 64 characters"})
    if min_monthly_sales_fen <= 0:
        problems.append({"field": "min_monthly_sales_fen", "error": "must be at least 1"})
    if not 1 <= consecutive_months <= MAX_CONSECUTIVE_MONTHS:
        problems.append({"field": "consecutive_months", "error": f"must be between 1 and {MAX_CONSECUTIVE_MONTHS}"})
    if not 1 <= bonus <= MAX_STAGE_BONUS:
        problems.append({"field": "bonus", "error": f"must be between 1 and {MAX_STAGE_BONUS}"})
    return problems


def _rule_values(rule: StageBonusRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "min_monthly_sales_fen": rule.min_monthly_sales_fen,
        "consecutive_months": rule.consecutive_months,
        "bonus": rule.bonus,
        "active": rule.active,
    }


def create_stage_rule(
    sess: Session, *, name: str, min_monthly_sales_fen: int, bonus: int, consecutive_months: int = 1, active: bool = True, staff_id: int | None = None, audit: bool = False
) -> StageBonusRule:
    """A stage bonus: ``bonus`` hundredths of a point for own monthly sales of at least the threshold, N months running.

    Thresholds are own sales only: there is no field that could count people (guard 2). With
    ``audit``, the creation is recorded for ``staff_id`` (None: the command line).
    """
    name = name.strip()
    problems = _rule_problems(name, min_monthly_sales_fen, consecutive_months, bonus)
    if problems:
        raise ValidationError(data={"errors": problems})
    rule = StageBonusRule(name=name, min_monthly_sales_fen=min_monthly_sales_fen, consecutive_months=consecutive_months, bonus=bonus, active=active)
    sess.add(rule)
    sess.flush()
    if audit:
        record_audit(sess, staff_id, "stage_rule.create", f"stage_rule:{rule.id}", _rule_values(rule))
    return rule


def get_stage_rule(sess: Session, rule_id: int, *, for_update: bool = False) -> StageBonusRule:
    rule = sess.get(StageBonusRule, rule_id, with_for_update=True if for_update else None)
    if rule is None:
        raise NotFoundError("no such stage bonus rule")
    return rule


def update_stage_rule(sess: Session, rule_id: int, changes: dict[str, Any], *, staff_id: int | None) -> StageBonusRule:
    """Change a rule (name, threshold, months, bonus) or switch it on or off; audited.

    A change applies to months judged from now on; bonuses already paid keep the threshold they
    were judged on, and a refund takes one back against that threshold.
    """
    rule = get_stage_rule(sess, rule_id, for_update=True)
    old = _rule_values(rule)
    new = old | {k: v for k, v in changes.items() if k in old and v is not None}
    new["name"] = new["name"].strip()
    if problems := _rule_problems(new["name"], new["min_monthly_sales_fen"], new["consecutive_months"], new["bonus"]):
        raise ValidationError(data={"errors": problems})
    for key, value in new.items():
        setattr(rule, key, value)
    sess.flush()
    record_audit(sess, staff_id, "stage_rule.update", f"stage_rule:{rule.id}", {"old": old, "new": new})
    return rule


def list_stage_rules(sess: Session, *, active: bool | None = None) -> list[StageBonusRule]:
    stmt = select(StageBonusRule).order_by(StageBonusRule.id)
    if active is not None:
        stmt = stmt.where(StageBonusRule.active.is_(active))
    return list(sess.scalars(stmt))


def set_stage_rule_active(sess: Session, rule_id: int, active: bool) -> StageBonusRule:
    """Switch a rule on or off; rules are never deleted, because postings name them in their keys."""
    rule = get_stage_rule(sess, rule_id)
    rule.active = active
    sess.flush()
    return rule


def parse_month(month: str) -> tuple[int, int]:
    """``"2026-11"`` as (2026, 11); ValueError for anything else."""
    match = MONTH_RE.match(month)
    if match is None:
        raise ValueError(f"expected a month as YYYY-MM, got {month!r}")
    return int(match.group(1)), int(match.group(2))


def _shift(year: int, month: int, by: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + by
    return index // 12, index % 12 + 1


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """The China-time calendar month as a half-open UTC interval [start, end)."""
    next_year, next_month = _shift(year, month, 1)
    start = datetime(year, month, 1, tzinfo=CHINA).astimezone(timezone.utc)
    end = datetime(next_year, next_month, 1, tzinfo=CHINA).astimezone(timezone.utc)
    return start, end


def own_monthly_sales(sess: Session, year: int, month: int) -> dict[int, int]:
    """Each approved distributor's own attributed sales in one month, in fen.

    Orders stamped with them as the level-1 inviter and paid in the month, net of
    refunds known now. Level-2 orders, invitees and team size play no part.
    """
    start, end = month_bounds(year, month)
    rows = sess.execute(
        select(Order.inviter_id, func.coalesce(func.sum(Order.paid_fee - Order.refunded_fee), 0))
        .join(Distributor, Distributor.member_id == Order.inviter_id)
        .where(Distributor.status == DistributorStatus.approved, Order.paid_at >= start, Order.paid_at < end)
        .group_by(Order.inviter_id)
    ).all()
    return {member_id: int(total) for member_id, total in rows if member_id is not None}


@dataclass(frozen=True)
class StageAward:
    rule_id: int
    member_id: int
    month: str
    amount: int
    #: Own sales, in fen, of each month the rule looked at, oldest first.
    sales_fen: tuple[int, ...]


def award_stage_bonuses(sess: Session, month: str) -> list[StageAward]:
    """Award every active stage rule that each approved distributor's own sales satisfy for ``month``.

    A rule of N consecutive months needs the threshold in each of the N months
    ending with ``month``. Each (rule, distributor, month) is paid at most once,
    so the same month may be judged again safely; returns only the new awards.
    Refunds after this runs take a bonus back (``reverse_stage_bonuses``) when they bring a
    month of its window below the threshold.
    """
    year, mon = parse_month(month)
    rules = list_stage_rules(sess, active=True)
    if not rules:
        return []
    longest = max(rule.consecutive_months for rule in rules)
    # Oldest month first: index -1 is ``month`` itself.
    sales = [own_monthly_sales(sess, *_shift(year, mon, back)) for back in range(-(longest - 1), 1)]
    awards = []
    # Member by member in member-id order, each credit locking that member's available and debt accounts:
    # the ledger's lock order (``ledger``).
    for member_id in sorted(sales[-1]):
        if sharer_refusal(sess, member_id) is not None:
            continue
        for rule in rules:
            window = tuple(by_member.get(member_id, 0) for by_member in sales[-rule.consecutive_months :])
            if any(amount < rule.min_monthly_sales_fen for amount in window):
                continue
            key = f"stage:{rule.id}:{member_id}:{month}"
            if ledger.find(sess, key) is not None:
                continue
            streak = f"{rule.consecutive_months} months running" if rule.consecutive_months > 1 else "in the month"
            ledger.credit_available(
                sess,
                member_id,
                rule.bonus,
                source=K.issuance,
                key=key,
                kind=TxKind.stage_bonus,
                reason=f"Stage bonus “{rule.name}” for {month}: own sales of at least ¥{rule.min_monthly_sales_fen / 100:,.2f} {streak}",
                detail={"rule_id": rule.id, "month": month, "sales_fen": list(window), "min_monthly_sales_fen": rule.min_monthly_sales_fen},
            )
            awards.append(StageAward(rule.id, member_id, month, rule.bonus, window))
    sess.flush()
    return awards


def member_month_sales(sess: Session, member_id: int, year: int, month: int) -> int:
    """One member's own attributed sales in one month, net of refunds known now, whatever their status today."""
    start, end = month_bounds(year, month)
    return int(
        sess.scalar(
            select(func.coalesce(func.sum(Order.paid_fee - Order.refunded_fee), 0)).where(
                Order.inviter_id == member_id, Order.paid_at >= start, Order.paid_at < end
            )
        )
        or 0
    )


def stage_reversal_key(award_key: str) -> str:
    """The idempotency key of taking back the stage bonus posted under ``award_key``."""
    return f"{award_key}:reverse"


def reverse_stage_bonuses(sess: Session, member_id: int) -> list[str]:
    """Take back each stage bonus of this member that refunds have since left short of its threshold.

    Each award is judged again on what it was judged on: its month and the months before it
    (as many as its window had) against the threshold recorded with it, on own sales net of
    the refunds known now. A bonus that no longer qualifies is reversed in full, once (its own
    key, ``<award key>:reverse``), from the available balance, and what was already spent
    becomes a debt that later credits pay first. Returns the award keys reversed now.
    """
    awards = sess.scalars(
        select(LedgerTransaction)
        .where(LedgerTransaction.kind == TxKind.stage_bonus, LedgerTransaction.member_id == member_id, LedgerTransaction.idempotency_key.like("stage:%"))
        .order_by(LedgerTransaction.id)
    ).all()
    reversed_now = []
    for award in awards:
        key = stage_reversal_key(award.idempotency_key)
        detail = award.detail or {}
        if ledger.find(sess, key) is not None or "month" not in detail:
            continue
        year, mon = parse_month(detail["month"])
        months = max(len(detail.get("sales_fen") or [None]), 1)
        threshold = int(detail["min_monthly_sales_fen"])
        window = [member_month_sales(sess, member_id, *_shift(year, mon, back)) for back in range(-(months - 1), 1)]
        if all(amount >= threshold for amount in window):
            continue
        amount = sum(entry.amount for entry in award_credits(sess, award))
        if amount <= 0:
            continue
        # Available, then debt: the ledger's lock order (ledger.lock_accounts).
        locked = ledger.lock_accounts(sess, [member_id], (K.available, K.debt))
        available, debt = locked[(member_id, K.available)], locked[(member_id, K.debt)]
        take = min(available.balance, amount)
        legs = [(ledger.account(sess, None, K.issuance), amount)]
        if take:
            legs.append((available, -take))
        if amount > take:
            legs.append((debt, -(amount - take)))
        ledger.post(
            sess,
            key=key,
            kind=TxKind.reversal,
            legs=legs,
            reason=f"Stage bonus for {detail['month']} taken back: refunds left own sales below ¥{threshold / 100:,.2f}",
            member_id=member_id,
            reverses_id=award.id,
            detail={"rule_id": detail.get("rule_id"), "month": detail["month"], "sales_fen": window, "min_monthly_sales_fen": threshold, "debt": amount - take},
        )
        reversed_now.append(award.idempotency_key)
    sess.flush()
    return reversed_now


def award_credits(sess: Session, award: LedgerTransaction) -> list[Entry]:
    """The entries of an award that the member received (available and debt repaid): the bonus itself."""
    member_accounts = select(Account.id).where(Account.member_id == award.member_id)
    return list(sess.scalars(select(Entry).where(Entry.transaction_id == award.id, Entry.account_id.in_(member_accounts), Entry.amount > 0)))


def previous_month(now: datetime) -> str:
    """The China-time calendar month before the one ``now`` falls in, as ``YYYY-MM``."""
    at = local(now)
    year, month = _shift(at.year, at.month, -1)
    return f"{year:04d}-{month:02d}"


# -- starter points --------------------------------------------------------------------------


def on_distributor_approved(sess: Session, *, distributor: Distributor) -> None:
    """Handler of ``events.distributor_approved``: starter points for the new distributor (never tied to a purchase)."""
    grant_starter(sess, distributor)


def grant_starter(sess: Session, distributor: Distributor) -> bool:
    """Credit ``starter_points`` once to a distributor who has just been approved; returns whether it did.

    Called from the approval itself (staff approval, automatic approval, appointment).
    Nothing here looks at orders or payments: the points are a welcome, never the
    price or the reward of a purchase (guard 3).
    """
    points = int(get_setting(sess, "starter_points"))
    if points <= 0 or distributor.status != DistributorStatus.approved or sharer_refusal(sess, distributor.member_id) is not None:
        return False
    key = f"starter:{distributor.member_id}"
    if ledger.find(sess, key) is not None:
        return False
    ledger.credit_available(
        sess,
        distributor.member_id,
        points,
        source=K.issuance,
        key=key,
        kind=TxKind.starter,
        reason="Starter points: welcome aboard as a distributor",
        detail={"distributor_id": distributor.id},
    )
    return True
