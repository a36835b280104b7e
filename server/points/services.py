"""The points lifecycle: credit on payment, mature on completion, settle, reverse on refund, grant.

Each step is one ledger posting with its own idempotency key, so any step may
be retried (a notification resent, a job rerun) without paying twice.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server import events
from server.db import utcnow
from server.distribution.models import Distributor
from server.distribution.queries import sharer_refusal
from server.jobs import queue as jobs
from server.orders.models import Order, OrderItem, OrderKind, OrderStatus
from server.points import ledger, rules
from server.points.incentives import reverse_stage_bonuses
from server.points.models import Account, AccountKind, HoldState, OrderReward, RewardHold, RewardState, TxKind
from server.points.queries import hold_state, lead_reward_key
from server.referral.services import is_sales_lead
from server.settings.services import get_setting

K = AccountKind


def _issuance(sess: Session) -> Account:
    return ledger.account(sess, None, K.issuance)


def eligible(sess: Session, member_id: int | None) -> bool:
    """Frozen or disabled sharers earn nothing new; ordinary members and distributors do (``sharer_refusal``)."""
    return sharer_refusal(sess, member_id) is None


def _grade_of(sess: Session, member_id: int) -> int | None:
    return sess.scalar(select(Distributor.grade_id).where(Distributor.member_id == member_id))


def reward_base(order: Order) -> int:
    """What an order's reward is a share of: the contract amount, or what was paid, less refunds."""
    return max(order.total_fee - order.refunded_fee, 0)


def credit_order_rewards(sess: Session, order: Order) -> list[OrderReward]:
    """A paid order credits pending points to the inviter and upline stamped on it. Idempotent."""
    if order.paid_at is None:
        return []
    existing = sess.scalars(select(OrderReward).where(OrderReward.order_id == order.id)).all()
    if existing or order.inviter_id is None:
        return list(existing)
    if hold_state(sess, "order", order.id, lock=True) == HoldState.reversed:
        return []  # staff reviewed the order and took its rewards back before they were credited
    product_ids = sorted({i.product_id for i in sess.scalars(select(OrderItem).where(OrderItem.order_id == order.id))})
    rewards = rules.order_rewards(
        sess,
        base_fen=order.total_fee,
        repeat=order.repeat_business,
        product_ids=product_ids,
        grade_id=_grade_of(sess, order.inviter_id),
        has_upline=order.upline_id is not None,
    )
    if not eligible(sess, order.inviter_id):
        # No level 1 means no level 2 either: the upline may never out-earn the inviter (guard 4).
        return []
    payees = []
    for reward in rewards:
        member_id = order.inviter_id if reward.level == 1 else order.upline_id
        if member_id is not None and reward.amount > 0 and (member_id == order.inviter_id or eligible(sess, member_id)):
            payees.append((reward, member_id))
    if not payees:
        return []
    issuance = _issuance(sess)
    # Everything above only reads. The members' accounts are locked last, just before the first posting, so a
    # member whom many orders reward (a popular sharer) is held for the postings and the commit, not the reads.
    lock_order_members(sess, [order])
    created = []
    for reward, member_id in payees:
        posted = ledger.post(
            sess,
            key=f"order:{order.id}:L{reward.level}:reward",
            kind=TxKind.order_reward,
            legs=[(issuance, -reward.amount), (ledger.account(sess, member_id, K.pending), reward.amount)],
            reason=f"Order {order.out_trade_no}: {reward.rule} of ¥{order.total_fee / 100:.2f}",
            member_id=member_id,
            order_id=order.id,
            level=reward.level,
        )
        if posted.new:
            row = OrderReward(order_id=order.id, member_id=member_id, level=reward.level, amount=reward.amount, rule=reward.rule)
            sess.add(row)
            created.append(row)
    sess.flush()
    for row in created:
        events.points_credited.send(sess, reward=row, order=order)
    return created


def ready_to_mature(sess: Session, order: Order) -> bool:
    """Completed (so its after-sales window has passed) and, where required, confirmed by finance."""
    if order.status != OrderStatus.completed:
        return False
    needs_finance = order.kind == OrderKind.contract or get_setting(sess, "require_finance_confirmation")
    return not needs_finance or order.finance_confirmed_at is not None


def mature_order_rewards(sess: Session, order: Order) -> int:
    """Move the order's pending rewards to matured once it is ready; returns how much moved."""
    if not ready_to_mature(sess, order):
        return 0
    if hold_state(sess, "order", order.id, lock=True) in (HoldState.held, HoldState.reversed):
        # Under risk review, the rewards stay pending until staff release them (points.holds); reversed ones
        # are gone (a reward credited late, after the reversal, is never credited at all: above).
        return 0
    lock_order_members(sess, [order])
    moved = 0
    for row in sess.scalars(select(OrderReward).where(OrderReward.order_id == order.id, OrderReward.state == RewardState.pending)):
        amount = row.amount - row.reversed_amount
        if amount > 0:
            ledger.post(
                sess,
                key=f"order:{order.id}:L{row.level}:mature",
                kind=TxKind.mature,
                legs=[(ledger.account(sess, row.member_id, K.pending), -amount), (ledger.account(sess, row.member_id, K.matured), amount)],
                reason=f"Order {order.out_trade_no} finished: level {row.level} reward matured",
                member_id=row.member_id,
                order_id=order.id,
                level=row.level,
            )
            moved += amount
        row.state, row.matured_at = RewardState.matured, utcnow()
    sess.flush()
    return moved


def reverse_order_rewards(sess: Session, order: Order) -> int:
    """After a refund: take back what the refunded part earned, from wherever it now sits.

    A reward already spent leaves a debt that later credits pay first. Idempotent
    per refunded total, so the same refund notification twice reverses once.
    """
    # The members' accounts first (the ledger's lock order), then the rewards: a settlement moving these rewards,
    # which holds the same accounts, cannot slip between reading their state and posting.
    locked = lock_order_members(sess, [order])
    rows = sess.scalars(select(OrderReward).where(OrderReward.order_id == order.id).order_by(OrderReward.level).with_for_update()).all()
    if not rows:
        return 0
    product_ids = sorted({i.product_id for i in sess.scalars(select(OrderItem).where(OrderItem.order_id == order.id))})
    should = {
        r.level: r.amount
        for r in rules.order_rewards(
            sess,
            base_fen=reward_base(order),
            repeat=order.repeat_business,
            product_ids=product_ids,
            grade_id=_grade_of(sess, order.inviter_id) if order.inviter_id else None,
            has_upline=order.upline_id is not None,
        )
    }
    total = 0
    for row in rows:
        keep = min(should.get(row.level, 0), row.amount)
        delta = row.amount - row.reversed_amount - keep
        if delta <= 0:
            continue
        legs = _reversal_legs(sess, locked, row, delta)
        posted = ledger.post(
            sess,
            key=f"order:{order.id}:L{row.level}:reverse:{order.refunded_fee}",
            kind=TxKind.reversal,
            legs=[(_issuance(sess), delta), *legs],
            reason=f"Order {order.out_trade_no} refunded ¥{order.refunded_fee / 100:.2f}: level {row.level} reward reduced",
            member_id=row.member_id,
            order_id=order.id,
            level=row.level,
            detail={"refunded_fee": order.refunded_fee},
        )
        if posted.new:
            row.reversed_amount += delta
            if row.reversed_amount >= row.amount:
                row.state = RewardState.reversed
            total += delta
    sess.flush()
    return total


def _reversal_legs(sess: Session, locked: dict[tuple[int, AccountKind], Account], row: OrderReward, delta: int) -> list[tuple[Any, int]]:
    """Where ``delta`` of the reward is taken from: pending, matured, or available (whatever it holds, under the lock) and the rest as debt."""
    if row.state == RewardState.pending:
        return [(ledger.account(sess, row.member_id, K.pending), -delta)]
    if row.state == RewardState.matured:
        return [(ledger.account(sess, row.member_id, K.matured), -delta)]
    available = locked.get((row.member_id, K.available))
    take = min(available.balance, delta) if available is not None else 0
    legs = [(available, -take)] if available is not None else []
    if delta > take:
        legs.append((ledger.account(sess, row.member_id, K.debt), -(delta - take)))
    return legs


def lock_order_members(sess: Session, orders: list[Order]) -> dict[tuple[int, AccountKind], Account]:
    """Lock the orders' risk holds, if any, then every existing account of their rewarded members (inviter, upline),
    in the ledger's lock order.

    Taken before the first posting by each unit of work over orders' rewards (credit, reversal, maturing, and
    a stage bonus taken back after a refund), which post to several of them in level order, not member order.
    A hold comes first, as when staff release or reverse held rewards.
    """
    order_ids = sorted(order.id for order in orders)
    if order_ids:
        sess.execute(select(RewardHold.id).where(RewardHold.subject == "order", RewardHold.ref_id.in_(order_ids)).order_by(RewardHold.ref_id).with_for_update())
    members = {m for order in orders for m in (order.inviter_id, order.upline_id) if m is not None}
    if order_ids:
        members |= set(sess.scalars(select(OrderReward.member_id).where(OrderReward.order_id.in_(order_ids))))
    return ledger.lock_accounts(sess, members, open_missing=False)


def process_order(sess: Session, order: Order) -> None:
    """Bring the order's rewards in line with the order: credit, reverse (and take back stage bonuses
    the refund undid), mature. Safe to repeat."""
    if order.paid_at is None:
        return
    credit_order_rewards(sess, order)  # each step locks the members' accounts before its first posting
    if order.refunded_fee:
        reverse_order_rewards(sess, order)
        if order.inviter_id is not None:
            # The refund lowered the inviter's own sales in the month it was paid: a bonus may no longer hold.
            reverse_stage_bonuses(sess, order.inviter_id)
    mature_order_rewards(sess, order)


def reward_valid_lead(sess: Session, lead: Any) -> None:
    """A sales lead operations marked valid earns its sharer the merchant's lead points (never a partner's
    lead, never a lead without a contact and a stated need: that would pay for a head, guard 2)."""
    points = int(get_setting(sess, "valid_lead_points"))
    if lead.sharer_id is None or lead.partner_id is not None or points <= 0 or not is_sales_lead(lead) or not eligible(sess, lead.sharer_id):
        return
    state = hold_state(sess, "lead", lead.id, lock=True)
    if state == HoldState.reversed:
        return  # staff reviewed the lead and took its reward back before it was marked valid
    if state == HoldState.held:
        # Under risk review: the points wait in pending until staff release (or reverse) them.
        ledger.post(
            sess,
            key=lead_reward_key(lead.id),
            kind=TxKind.lead_reward,
            legs=[(_issuance(sess), -points), (ledger.account(sess, lead.sharer_id, K.pending), points)],
            reason=f"Lead #{lead.id} marked valid by operations, held for risk review",
            member_id=lead.sharer_id,
            detail={"lead_id": lead.id, "held": True, "points": points},
        )
        return
    ledger.credit_available(
        sess,
        lead.sharer_id,
        points,
        source=K.issuance,
        key=lead_reward_key(lead.id),
        kind=TxKind.lead_reward,
        reason=f"Lead #{lead.id} marked valid by operations",
        detail={"lead_id": lead.id},
    )


#: The job that brings an order's points in line after the order changed (server/jobs), by order id.
ORDER_POINTS_JOB = "order-points"


def process_order_job(sess: Session, ref: str) -> None:
    """``process_order`` as a queued job: the order by its id, in the job's own unit of work."""
    order = sess.get(Order, int(ref))
    if order is not None:
        process_order(sess, order)


def on_lead_marked_valid(sess: Session, *, lead: Any) -> None:
    """Handler of ``events.lead_marked_valid``: the sharer's valid-lead points."""
    reward_valid_lead(sess, lead)


def on_order_status_changed(sess: Session, *, order: Order, status: OrderStatus) -> None:
    """Handler of ``events.order_status_changed``: the order's points follow it (``follow_order``)."""
    follow_order(sess, order, status)


def follow_order(sess: Session, order: Order, status: OrderStatus) -> None:
    """Status listener: queue the order's points job in the change's own transaction (durable exactly when the
    change commits); a drainer brings the points up to date off the request."""
    if status in (OrderStatus.paid, OrderStatus.completed, OrderStatus.refunded) or order.refunded_fee:
        jobs.enqueue(sess, ORDER_POINTS_JOB, order.id)
