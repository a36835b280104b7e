"""Read-side figures about orders that other packages show: sales a member brought, orders members placed.

Depends only on the models, so any package may read it without importing the order services.
"""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

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

