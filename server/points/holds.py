"""Holds on rewards under review: an order's or a lead's points stay pending until staff decide.

The hold is a ``RewardHold`` row that points owns; the risk package writes it when it scores an
event and decides it through the functions here, so points never imports risk. Every move is one
conditional UPDATE from the state it needs (two staff deciding at once: one moves it, the other gets
HoldStateError). The crediting and maturing steps read the hold under its row lock
(``points.queries.hold_state``), so a reward cannot mature between a hold being read and being
reversed, nor be credited after a reversal. Money moves only through ledger postings with their own
idempotency keys; nothing is edited.
"""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db import rowcount, utcnow
from server.orders.models import Order
from server.points import ledger
from server.points.errors import HoldStateError
from server.points.models import HOLD_TRANSITIONS, AccountKind, HoldState, OrderReward, RewardHold, RewardState, TxKind
from server.points.queries import hold_state, lead_reward_key
from server.points.services import lock_order_members, mature_order_rewards

K = AccountKind
SUBJECTS = ("order", "lead")


def hold_rewards(sess: Session, subject: str, ref_id: int, *, reason: str) -> RewardHold:
    """Hold the rewards of an order or a lead (they stay pending); a second hold of the same one is the first."""
    if subject not in SUBJECTS:
        raise ValueError(f"unknown hold subject {subject!r}")
    stmt = select(RewardHold).where(RewardHold.subject == subject, RewardHold.ref_id == ref_id)
    found = sess.scalar(stmt)
    if found is not None:
        return found
    try:
        with sess.begin_nested():
            found = RewardHold(subject=subject, ref_id=ref_id, reason=reason[:255], state=HoldState.held)
            sess.add(found)
    except IntegrityError:
        found = sess.scalars(stmt).one()
    return found


def _move(sess: Session, subject: str, ref_id: int, source: HoldState, target: HoldState) -> None:
    assert (source, target) in HOLD_TRANSITIONS
    result = sess.execute(
        update(RewardHold)
        .where(RewardHold.subject == subject, RewardHold.ref_id == ref_id, RewardHold.state == source)
        .values(state=target, decided_at=utcnow())
    )
    if rowcount(result) != 1:
        raise HoldStateError(data={"subject": subject, "ref_id": ref_id, "state": (s.value if (s := hold_state(sess, subject, ref_id)) else None)})


def release_hold(sess: Session, subject: str, ref_id: int, *, actor: str) -> int:
    """Let held rewards go their normal way: an order's mature now if the order is ready, a lead's
    pending points become available. Returns the points that moved now; HoldStateError unless held."""
    _move(sess, subject, ref_id, HoldState.held, HoldState.released)
    if subject == "order":
        order = sess.get(Order, ref_id)
        return mature_order_rewards(sess, order) if order is not None else 0
    posting = ledger.find(sess, lead_reward_key(ref_id))
    if posting is None or not posting.detail.get("held") or posting.member_id is None:
        return 0  # not marked valid yet: its points will go straight to available
    amount = int(posting.detail["points"])
    ledger.credit_available(
        sess,
        posting.member_id,
        amount,
        source=K.pending,
        key=f"lead:{ref_id}:release",
        kind=TxKind.lead_reward,
        reason=f"Lead #{ref_id}: held points released after review",
        actor=actor,
        detail={"lead_id": ref_id},
    )
    return amount


def reverse_held(sess: Session, subject: str, ref_id: int, *, actor: str) -> int:
    """Take held rewards back with reversal postings (pending back to issuance); nothing is edited.
    Idempotent through the postings' keys. Returns the points reversed; HoldStateError unless held."""
    _move(sess, subject, ref_id, HoldState.held, HoldState.reversed)
    issuance = ledger.account(sess, None, K.issuance)
    total = 0
    if subject == "order":
        order = sess.get(Order, ref_id)
        if order is not None:
            lock_order_members(sess, [order])  # the ledger's lock order: all their accounts before the first posting
        rows = sess.scalars(select(OrderReward).where(OrderReward.order_id == ref_id).order_by(OrderReward.level).with_for_update()).all()
        for row in rows:
            delta = row.amount - row.reversed_amount
            if row.state != RewardState.pending or delta <= 0:
                continue
            posted = ledger.post(
                sess,
                key=f"order:{ref_id}:L{row.level}:reverse:review",
                kind=TxKind.reversal,
                legs=[(issuance, delta), (ledger.account(sess, row.member_id, K.pending), -delta)],
                reason=f"Order {ref_id}: level {row.level} reward reversed after risk review",
                member_id=row.member_id,
                order_id=ref_id,
                level=row.level,
                actor=actor,
                detail={"review": True},
            )
            if posted.new:
                row.reversed_amount += delta
                row.state = RewardState.reversed
                total += delta
        sess.flush()
        return total
    posting = ledger.find(sess, lead_reward_key(ref_id))
    if posting is None or not posting.detail.get("held") or posting.member_id is None:
        return 0  # never marked valid: it will earn nothing (reward_valid_lead reads the hold)
    amount = int(posting.detail["points"])
    ledger.post(
        sess,
        key=f"lead:{ref_id}:reverse",
        kind=TxKind.reversal,
        legs=[(issuance, amount), (ledger.account(sess, posting.member_id, K.pending), -amount)],
        reason=f"Lead #{ref_id}: held points reversed after risk review",
        member_id=posting.member_id,
        reverses_id=posting.id,
        actor=actor,
        detail={"lead_id": ref_id},
    )
    return amount


def reopen_hold(sess: Session, subject: str, ref_id: int) -> None:
    """Hold released rewards again, while none of them has matured yet (an order's only: a released
    lead's points are already available). HoldStateError otherwise; nothing changes then."""
    if subject != "order":
        raise HoldStateError(data={"subject": subject, "ref_id": ref_id, "state": "released", "why": "a lead's released points are already available"})
    with sess.begin_nested():
        _move(sess, subject, ref_id, HoldState.released, HoldState.held)
        moved = sess.scalar(select(OrderReward.id).where(OrderReward.order_id == ref_id, OrderReward.state != RewardState.pending).limit(1))
        if moved is not None:
            raise HoldStateError(data={"subject": subject, "ref_id": ref_id, "state": "released", "why": "its rewards have matured"})
