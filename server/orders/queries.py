"""Read-side figures about orders that other packages show: sales a member brought, orders members placed,
the sales leaderboard, and the console's order and refund lists.

Depends only on the models, so any package may read it without importing the order services.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from server import db
from server.accounts.models import Member, MemberStatus
from server.orders.models import (
    Order,
    OrderEvent,
    OrderItem,
    OrderKind,
    OrderStatus,
    PaymentNotice,
    Product,
    Refund,
    RefundStatus,
)


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
# -- the console's order and refund pages ------------------------------------------------------


def staff_orders(
    *,
    status: OrderStatus | None = None,
    kind: OrderKind | None = None,
    inviter_id: int | None = None,
    product_id: int | None = None,
    member_id: int | None = None,
    number: str | None = None,
    order_or_member_id: int | None = None,
    openid: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Any:
    """Orders matching the console's filters, each on an indexed column; ``start`` ≤ created < ``end``.

    The search matches any of: ``number``, the start of an order number; ``order_or_member_id``, an order's
    id or its buyer's member id; ``openid``, the buyer's openid. Unordered."""
    stmt = select(Order)
    for column, value in ((Order.status, status), (Order.kind, kind), (Order.inviter_id, inviter_id), (Order.member_id, member_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    if product_id is not None:
        stmt = stmt.where(Order.id.in_(select(OrderItem.order_id).where(OrderItem.product_id == product_id)))
    buyer: list[ColumnElement[bool]] = []
    if number:
        buyer.append(Order.out_trade_no.startswith(number, autoescape=True))
    if order_or_member_id is not None:
        buyer.extend([Order.id == order_or_member_id, Order.member_id == order_or_member_id])
    if openid:
        buyer.append(Order.member_id.in_(select(Member.id).where(Member.openid == openid)))
    if buyer:
        stmt = stmt.where(or_(*buyer))
    if start is not None:
        stmt = stmt.where(Order.created_at >= start)
    if end is not None:
        stmt = stmt.where(Order.created_at < end)
    others = (kind, inviter_id, product_id, member_id, number, order_or_member_id, openid, start, end)
    if status is not None and all(value is None or value == "" for value in others):
        # Status alone, newest first: MariaDB would walk the primary key back past every recent order of
        # another status (the newest are rarely completed); the (status, id) index has the page in order.
        stmt = stmt.with_hint(Order, "FORCE INDEX (ix_orders_status_id)", "mysql").with_hint(Order, "FORCE INDEX (ix_orders_status_id)", "mariadb")
    return stmt


def members_by_id(sess: Session, member_ids: set[int | None]) -> dict[int, Member]:
    """The members a page names (buyers, inviters, uplines), in one query."""
    wanted = {i for i in member_ids if i is not None}
    if not wanted:
        return {}
    return {m.id: m for m in sess.scalars(select(Member).where(Member.id.in_(wanted)))}


@dataclass(frozen=True)
class OrderRecord:
    """Everything the order page shows besides the order itself."""

    items: list[OrderItem]
    events: list[OrderEvent]
    refunds: list[Refund]
    #: The verified payment notifications of the order (WeChat's own record that money came in).
    payments: list[PaymentNotice]
    #: The buyer, inviter and upline by id.
    members: dict[int, Member]


def order_record(sess: Session, order: Order) -> OrderRecord:
    return OrderRecord(
        items=list(sess.scalars(select(OrderItem).where(OrderItem.order_id == order.id).order_by(OrderItem.id))),
        events=list(sess.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id))),
        refunds=list(sess.scalars(select(Refund).where(Refund.order_id == order.id).order_by(Refund.id))),
        payments=list(
            sess.scalars(
                select(PaymentNotice).where(PaymentNotice.out_trade_no == order.out_trade_no, PaymentNotice.kind == "pay").order_by(PaymentNotice.id)
            )
        ),
        members=members_by_id(sess, {order.member_id, order.inviter_id, order.upline_id}),
    )


def staff_refunds(status: RefundStatus | None) -> Any:
    """Refunds (with their order) in one status, or all; unordered."""
    stmt = select(Refund, Order).join(Order, Order.id == Refund.order_id)
    if status is not None:
        stmt = stmt.where(Refund.status == status)
    return stmt


def product_choices(sess: Session, limit: int = 200) -> list[tuple[int, str]]:
    """Products for a filter's drop-down: (id, title), the merchant's order."""
    rows = sess.execute(select(Product.id, Product.title).order_by(Product.sort.desc(), Product.id.desc()).limit(limit)).all()
    return [(pid, title) for pid, title in rows]


def referral_orders(
    sess: Session, member_id: int, status: OrderStatus | None, offset: int, limit: int
) -> tuple[list[Order], int, dict[int, Member]]:
    """Orders the member brought, as level 1 (inviter) or level 2 (upline), newest first, with their buyers."""
    stmt = select(Order).where((Order.inviter_id == member_id) | (Order.upline_id == member_id))
    if status is not None:
        stmt = stmt.where(Order.status == status)
    rows, total = db.paginate(sess, stmt, offset=offset, limit=limit, order_by=(Order.id.desc(),))
    buyers = {m.id: m for m in sess.scalars(select(Member).where(Member.id.in_({o.member_id for o in rows})))} if rows else {}
    return list(rows), total, buyers
