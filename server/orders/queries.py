"""Read-side figures about orders that other packages show: sales a member brought, orders members placed,
the sales leaderboard.

Depends only on the models, so any package may read it without importing the order services.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from server.accounts.models import Member, MemberStatus
from server.orders.models import Order


def attributed_sales(sess: Session, member_ids: list[int]) -> dict[int, tuple[int, int]]:
    """For the team list: each member's paid orders and amount (net of refunds), in fen."""
    rows = sess.execute(
        select(Order.member_id, func.count(), func.coalesce(func.sum(Order.paid_fee - Order.refunded_fee), 0))
        .where(Order.member_id.in_(member_ids), Order.paid_at.is_not(None))
        .group_by(Order.member_id)
    ).all()
    return {member_id: (int(count), int(amount)) for member_id, count, amount in rows}


def orders_brought_by(sess: Session, inviter_id: int) -> int:
    """How many paid orders are stamped with this member as level-1 inviter."""
    return int(sess.scalar(select(func.count()).select_from(Order).where(Order.inviter_id == inviter_id, Order.paid_at.is_not(None))) or 0)


def sales_brought_by(sess: Session, inviter_id: int) -> int:
    """A distributor's own attributed sales: paid, net of refunds, on orders stamped with them as inviter."""
    return int(
        sess.scalar(
            select(func.coalesce(func.sum(Order.paid_fee - Order.refunded_fee), 0)).where(Order.inviter_id == inviter_id, Order.paid_at.is_not(None))
        )
        or 0
    )


def sales_by_inviters(sess: Session, inviter_ids: list[int]) -> dict[int, int]:
    """``sales_brought_by`` for many distributors in one query: member id → own attributed sales in fen."""
    if not inviter_ids:
        return {}
    rows = sess.execute(
        select(Order.inviter_id, func.coalesce(func.sum(Order.paid_fee - Order.refunded_fee), 0))
        .where(Order.inviter_id.in_(inviter_ids), Order.paid_at.is_not(None))
        .group_by(Order.inviter_id)
    ).all()
    return {inviter_id: int(total) for inviter_id, total in rows if inviter_id is not None}



def _sales_in(start: datetime | None, end: datetime | None) -> tuple[Any, list[Any]]:
    """Own attributed sales per inviter (paid in the period, net of refunds) and the period's conditions."""
    amount = func.sum(Order.paid_fee - Order.refunded_fee)
    where: list[ColumnElement[bool]] = [Order.inviter_id.is_not(None), Order.paid_at.is_not(None)]
    if end is not None:
        where.append(Order.paid_at < end)
    if start is not None:
        where.append(Order.paid_at >= start)
    return amount, where


def sales_ranking(sess: Session, start: datetime | None, end: datetime | None, limit: int) -> list[tuple[int, int]]:
    """Active members by own attributed sales of orders paid in ``start`` ≤ t < ``end`` (either open
    when None), highest first, ties by member id: (member id, sales in fen), only those above 0."""
    amount, where = _sales_in(start, end)
    rows = sess.execute(
        select(Order.inviter_id, amount)
        .join(Member, Member.id == Order.inviter_id)
        .where(*where, Member.status == MemberStatus.active)
        .group_by(Order.inviter_id)
        .having(amount > 0)
        .order_by(amount.desc(), Order.inviter_id)
        .limit(limit)
    ).all()
    return [(int(member_id), int(total)) for member_id, total in rows]


def sales_rank(sess: Session, member_id: int, start: datetime | None, end: datetime | None) -> tuple[int | None, int]:
    """The member's place among active members by own sales in the period (1 + how many sold more;
    None without sales) and their sales in fen."""
    amount, where = _sales_in(start, end)
    own = int(sess.scalar(select(func.coalesce(amount, 0)).where(*where, Order.inviter_id == member_id)) or 0)
    if own <= 0:
        return None, 0
    better = (
        select(Order.inviter_id)
        .join(Member, Member.id == Order.inviter_id)
        .where(*where, Member.status == MemberStatus.active)
        .group_by(Order.inviter_id)
        .having(amount > own)
        .subquery()
    )
    return 1 + int(sess.scalar(select(func.count()).select_from(better)) or 0), own
