"""Orders: stock reservation, the state machine, payment and refund application, timeouts.

Every status change goes through ``transition``: one table of legal moves, a
conditional UPDATE (``WHERE status = <from>``) so two workers can never both
make the same move, and one timeline event per move.
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from server import events, security
from server.accounts.models import Member
from server.accounts.services import record_audit
from server.db import fit, rowcount, utcnow
from server.distribution.queries import member_discount_bp
from server.orders.errors import (
    AmountMismatchError,
    IllegalTransitionError,
    InsufficientStockError,
    OrderNotFoundError,
    RefundNotFoundError,
    RefundTooLargeError,
    SkuUnavailableError,
)
from server.orders.models import (
    Order,
    OrderEvent,
    OrderItem,
    OrderKind,
    OrderStatus,
    PaymentNotice,
    Product,
    ProductStatus,
    Refund,
    RefundStatus,
    Sku,
)
from server.referral import services as referral
from server.referral.models import TouchEvent, TouchKind
from server.settings.services import SettingSpec, get_setting, register

register(
    SettingSpec("order_pay_timeout_minutes", int, 30, "Minutes an unpaid order keeps its stock before it closes.", minimum=5, maximum=1440),
    SettingSpec("auto_receive_days", int, 10, "Days after shipping when an order counts as received if the buyer did not confirm.", minimum=1, maximum=60),
    SettingSpec(
        "after_sales_days",
        int,
        7,
        "Days after receipt during which the buyer may ask for a refund; the order completes when they pass.",
        minimum=0,
        maximum=90,
    ),
)

logger = logging.getLogger(__name__)

S = OrderStatus
#: Every legal move. Refunding returns to the status it interrupted (partial or rejected refund).
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.created: frozenset({S.paid, S.closed}),
    S.closed: frozenset({S.paid}),  # WeChat took the money after we gave up waiting: honour it
    S.paid: frozenset({S.shipped, S.completed, S.refunding}),
    S.shipped: frozenset({S.received, S.refunding}),
    S.received: frozenset({S.completed, S.refunding}),
    S.completed: frozenset({S.refunding}),
    S.refunding: frozenset({S.refunded, S.paid, S.shipped, S.received, S.completed}),
    S.refunded: frozenset(),
}
#: Timestamp column set by each move.
_STAMPS = {S.paid: "paid_at", S.shipped: "shipped_at", S.received: "received_at", S.completed: "completed_at", S.closed: "closed_at"}
#: Lead-timeline kinds mirrored from order events, so a lead's story runs from scan to completion.
_TIMELINE = {S.paid: TouchKind.paid, S.shipped: TouchKind.shipped, S.received: TouchKind.received, S.completed: TouchKind.completed, S.refunded: TouchKind.refunded}


#: The most any discount may take off (the tiers' own ceiling): 50%.
MAX_DISCOUNT_BP = 5_000


def buyer_discount_bp(sess: Session, member_id: int | None) -> int:
    """The discount on this member's own purchases, in basis points (their distributor tier's); 0 for the anonymous and non-distributors."""
    if member_id is None:
        return 0
    return min(max(member_discount_bp(sess, member_id), 0), MAX_DISCOUNT_BP)


def discounted_price(list_price_fen: int, discount_bp: int) -> int:
    """A unit price after a discount of ``discount_bp``: floored to the fen (the rounding is the buyer's), never below 1 fen."""
    return max(list_price_fen * (10_000 - discount_bp) // 10_000, 1)


def new_out_trade_no(prefix: str = "R") -> str:
    """``R`` + UTC time to the second + 12 random digits: 27 characters, sortable, unguessable."""
    return prefix + utcnow().strftime("%Y%m%d%H%M%S") + "".join(secrets.choice("0123456789") for _ in range(12))


def add_event(sess: Session, order: Order, event: str, actor: str, *, from_status: OrderStatus | None = None, to_status: OrderStatus | None = None, **detail: Any) -> OrderEvent:
    row = OrderEvent(
        order_id=order.id,
        event=event,
        actor=actor,
        from_status=from_status.value if from_status else None,
        to_status=to_status.value if to_status else None,
        detail=detail,
    )
    sess.add(row)
    return row


def transition(
    sess: Session,
    order: Order,
    to: OrderStatus,
    *,
    actor: str,
    event: str | None = None,
    expected: OrderStatus | None = None,
    columns: Mapping[str, Any] | None = None,
    **detail: Any,
) -> bool:
    """Move ``order`` to ``to`` if that is legal and nobody moved it first; records the event.

    ``columns`` are written by the same conditional UPDATE (a payment's amount and transaction), so the
    event's handlers see them. Returns False when a concurrent unit of work already moved it from
    ``expected`` (the caller decides whether that is an error); raises for an illegal move.
    """
    current = expected or order.status
    if to not in TRANSITIONS[current]:
        raise IllegalTransitionError(f"an order cannot go from {current.value} to {to.value}", data={"from": current.value, "to": to.value})
    values: dict[str, Any] = {**(columns or {}), "status": to, "updated_at": utcnow()}
    if to in _STAMPS and current != S.refunding:
        # Coming back from a partial or rejected refund is not paying (or shipping) again.
        values[_STAMPS[to]] = utcnow()
    if to == S.refunding:
        values["status_before_refund"] = current
    result = sess.execute(
        update(Order).where(Order.id == order.id, Order.status == current).values(**values).execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        sess.refresh(order)
        return False
    for key, value in values.items():
        # What the UPDATE wrote, without reading the row back: it is this unit of work's until the commit.
        set_committed_value(order, key, value)
    add_event(sess, order, event or to.value, actor, from_status=current, to_status=to, **detail)
    if to in _TIMELINE:
        sess.add(TouchEvent(member_id=order.member_id, kind=_TIMELINE[to], channel="order", actor=actor, content=f"order:{order.id}", detail={"out_trade_no": order.out_trade_no}))
    events.order_status_changed.send(sess, order=order, status=to)
    return True


def move(sess: Session, order: Order, to: OrderStatus, *, actor: str, event: str | None = None, **detail: Any) -> Order:
    """``transition`` for moves a person asked for: losing the race is a conflict error."""
    if not transition(sess, order, to, actor=actor, event=event, **detail):
        raise IllegalTransitionError(f"the order is now {order.status.value}", data={"status": order.status.value})
    return order


# -- placing orders ---------------------------------------------------------------------


@dataclass(frozen=True)
class LineRequest:
    sku_id: int
    quantity: int


def _reserve(sess: Session, sku_id: int, quantity: int) -> bool:
    """Take ``quantity`` units of stock in one conditional UPDATE: never oversells, under any concurrency."""
    result = sess.execute(
        update(Sku).where(Sku.id == sku_id, Sku.active.is_(True), Sku.stock >= quantity).values(stock=Sku.stock - quantity)
    )
    return rowcount(result) == 1


def _release(sess: Session, order: Order) -> None:
    for item in sess.scalars(select(OrderItem).where(OrderItem.order_id == order.id)):
        sess.execute(update(Sku).where(Sku.id == item.sku_id).values(stock=Sku.stock + item.quantity))


def stamp_referrers(sess: Session, member_id: int) -> tuple[int | None, int | None]:
    """The inviter and upline to stamp on a new order: fixed from now on, whatever rebinding happens."""
    return referral.inviter_and_upline(sess, member_id)


def place_order(
    sess: Session,
    member: Member,
    lines: list[LineRequest],
    *,
    address: dict[str, Any] | None = None,
    remark: str = "",
    scene: str | None = None,
) -> Order:
    """Create an online order: reserve stock for every line, stamp the referrers, start the pay timer.

    An approved distributor pays their tier's discount off every line: each unit price is the
    catalog price less the discount, floored to the fen; the total is what those prices add up to,
    and the order keeps the discount, the fen it saved and each item's catalog price.
    """
    merged: dict[int, int] = {}
    for line in lines:
        merged[line.sku_id] = merged.get(line.sku_id, 0) + line.quantity
    if scene:
        # A scene on the order is a touch like any other: it may bind an unbound buyer first.
        referral.record_scan(sess, member, scene)
        referral.bind_member(sess, member, scene)
    skus = {sku.id: sku for sku in sess.scalars(select(Sku).where(Sku.id.in_(merged)))}
    products = {p.id: p for p in sess.scalars(select(Product).where(Product.id.in_({s.product_id for s in skus.values()})))}
    items: list[OrderItem] = []
    total = list_total = 0
    # Fixed now, like the referrers: a later tier change never reprices an order already placed.
    discount_bp = buyer_discount_bp(sess, member.id)
    for sku_id in sorted(merged):  # one lock order for every order, so two orders never deadlock
        sku = skus.get(sku_id)
        product = products.get(sku.product_id) if sku else None
        if sku is None or product is None or not sku.active or product.status != ProductStatus.on_sale:
            raise SkuUnavailableError(data={"sku_id": sku_id})
        quantity = merged[sku_id]
        if not _reserve(sess, sku_id, quantity):
            raise InsufficientStockError(data={"sku_id": sku_id})
        price = discounted_price(sku.price_fen, discount_bp)
        items.append(
            OrderItem(product_id=product.id, sku_id=sku.id, title=product.title, sku_name=sku.name, price_fen=price, list_price_fen=sku.price_fen, quantity=quantity)
        )
        total += price * quantity
        list_total += sku.price_fen * quantity
    inviter_id, upline_id = stamp_referrers(sess, member.id)
    previous = sess.scalar(select(func.count()).select_from(Order).where(Order.member_id == member.id, Order.paid_at.is_not(None)))
    order = Order(
        out_trade_no=new_out_trade_no(),
        kind=OrderKind.online,
        member_id=member.id,
        total_fee=total,
        discount_bp=discount_bp,
        discount_fen=list_total - total,
        inviter_id=inviter_id,
        upline_id=upline_id,
        scene_code=scene,
        repeat_business=bool(previous),
        title=items[0].title if len(items) == 1 else fit(Order.title, items[0].title, f" 等 {len(items)} 件"),
        address=address,
        remark=remark,
        expires_at=utcnow() + timedelta(minutes=get_setting(sess, "order_pay_timeout_minutes")),
    )
    sess.add(order)
    sess.flush()
    for item in items:
        item.order_id = order.id
        sess.add(item)
    add_event(
        sess, order, "created", f"member:{member.id}", to_status=S.created, total_fee=total, discount_bp=discount_bp, discount_fen=list_total - total, inviter_id=inviter_id, upline_id=upline_id
    )
    sess.add(TouchEvent(member_id=member.id, kind=TouchKind.order, scene=scene, channel="order", actor=f"member:{member.id}", content=f"order:{order.id}", detail={"out_trade_no": order.out_trade_no, "total_fee": total}))
    sess.flush()
    return order


def close_unpaid(sess: Session, order: Order, *, actor: str, reason: str) -> bool:
    """Close an unpaid order and give its stock back; False if it was paid or closed meanwhile."""
    if not transition(sess, order, S.closed, actor=actor, expected=S.created, reason=reason):
        return False
    _release(sess, order)
    return True


def get_member_order(sess: Session, member: Member, order_id: int) -> Order:
    order = sess.get(Order, order_id)
    if order is None or order.member_id != member.id:
        raise OrderNotFoundError()
    return order


# -- payments and refunds ------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentResult:
    order: Order
    #: False when this notification was already applied (WeChat resends until answered).
    applied: bool


def _record_notice(sess: Session, notice: PaymentNotice) -> bool:
    """Store a notice once; False if this very notice (kind + WeChat id) was seen before."""
    try:
        with sess.begin_nested():
            sess.add(notice)
    except IntegrityError:
        return False
    return True


#: Built once: every payment notification runs it.
_ORDER_AND_PAY_NOTICE = (
    select(Order, PaymentNotice.id)
    .outerjoin(
        PaymentNotice,
        and_(PaymentNotice.out_trade_no == Order.out_trade_no, PaymentNotice.kind == "pay", PaymentNotice.reference == bindparam("reference")),
    )
    .where(Order.out_trade_no == bindparam("out_trade_no"))
    .execution_options(populate_existing=True)
)


def apply_payment(
    sess: Session, *, out_trade_no: str, transaction_id: str, amount_fen: int, api: str, actor: str = "wechat", payer_openid: str | None = None
) -> PaymentResult:
    """A verified payment notification (or order query): pay the order exactly once.

    ``payer_openid`` (the notification's payer) is kept on the paid event only as a keyed digest
    (``payer``), for the risk checks to compare with the inviter's.

    Identical notifications racing each other all reach the unique notice row;
    one inserts it, the rest see it and answer success without doing anything. A notification
    already recorded is answered after one read, its order's.
    """
    # The order, and whether this very notice (its unique key) was recorded for it, in one read: a repeat
    # (WeChat resends until answered) is answered without trying the insert below.
    row = sess.execute(_ORDER_AND_PAY_NOTICE, {"out_trade_no": out_trade_no, "reference": transaction_id}).first()
    if row is None:
        raise OrderNotFoundError()
    order, seen = row
    if amount_fen != order.total_fee:
        raise AmountMismatchError(data={"expected": order.total_fee, "got": amount_fen})
    if seen is not None:
        return PaymentResult(order, False)
    if not _record_notice(sess, PaymentNotice(kind="pay", reference=transaction_id, out_trade_no=out_trade_no, amount_fen=amount_fen, api=api, applied=True)):
        sess.refresh(order)
        return PaymentResult(order, False)
    # No second read of the order: this transaction's first read saw it (and reads again would see the same),
    # and the conditional UPDATE below is what refuses a payment another path made first.
    if order.status not in (S.created, S.closed):
        # Paid through another path already (an order query, the other API version).
        return PaymentResult(order, False)
    expected = order.status
    if expected == S.closed:
        _rereserve_after_late_payment(sess, order)
    payer = {"payer": security.digest(payer_openid, "openid")} if payer_openid else {}
    paid = {"paid_fee": amount_fen, "transaction_id": transaction_id, "pay_api": api}
    if not transition(sess, order, S.paid, actor=actor, expected=expected, columns=paid, transaction_id=transaction_id, amount_fen=amount_fen, api=api, **payer):
        return PaymentResult(order, False)
    _apply_waiting_refunds(sess, order)
    return PaymentResult(order, True)


def _rereserve_after_late_payment(sess: Session, order: Order) -> None:
    short = [item.sku_id for item in sess.scalars(select(OrderItem).where(OrderItem.order_id == order.id)) if not _reserve(sess, item.sku_id, item.quantity)]
    add_event(sess, order, "paid_after_close", "system", short_skus=short)


def lock_order(sess: Session, order: Order) -> Order:
    """Take ``order``'s row lock for the rest of the unit of work and reload it: every decision about
    its refunds is made under this lock, so concurrent requests queue instead of each seeing the
    same money still refundable."""
    locked = sess.scalar(select(Order).where(Order.id == order.id).with_for_update().execution_options(populate_existing=True))
    assert locked is order  # the identity map hands back the same object, now refreshed
    return order


def refundable(sess: Session, order: Order) -> int:
    """Fen that can still be refunded: paid, less refunded, less refunds under way."""
    return max(order.paid_fee - order.refunded_fee - _open_refund_total(sess, order.id), 0)


def request_refund(
    sess: Session, order: Order, amount_fen: int | None, reason: str, *, actor: str, approved: bool, staff_id: int | None = None
) -> Refund:
    """Open a refund (for all that is refundable when ``amount_fen`` is None) and move the order to
    refunding; staff refunds start approved, members' wait for staff. Audited when ``staff_id`` (the
    staff member who started it) is given.

    The order's row is locked before anything is counted, so the refunds requested, approved,
    under way and done never add up to more than was paid, whatever runs at the same time.
    """
    if order.kind == OrderKind.contract:
        # Contract money came in offline; WeChat Pay cannot give it back.
        raise IllegalTransitionError("contract payments are refunded offline, not through WeChat Pay")
    lock_order(sess, order)
    available = refundable(sess, order)
    if amount_fen is None:
        amount_fen = available
    if amount_fen <= 0 or amount_fen > available:
        raise RefundTooLargeError(
            data={"errors": [{"field": "amount_fen", "error": f"at most {available} fen can be refunded"}], "refundable_fen": available}
        )
    if order.status != S.refunding:
        move(sess, order, S.refunding, actor=actor, event="refund_requested", amount_fen=amount_fen, reason=reason)
    else:
        add_event(sess, order, "refund_requested", actor, amount_fen=amount_fen, reason=reason)
    refund = Refund(
        order_id=order.id,
        out_refund_no=new_out_trade_no("F"),
        amount_fen=amount_fen,
        reason=reason,
        requested_by=actor,
        status=RefundStatus.approved if approved else RefundStatus.requested,
        next_attempt_at=utcnow() + REFUND_FIRST_RETRY if approved else None,
    )
    sess.add(refund)
    sess.flush()
    if staff_id is not None:
        record_audit(sess, staff_id, "refund.create", f"order:{order.id}", {"amount_fen": refund.amount_fen, "reason": reason})
    return refund


#: Statuses from which a member may ask for their money back (after completion only staff may refund).
MEMBER_REFUNDABLE = frozenset({S.paid, S.shipped, S.received, S.refunding})
#: An approved refund is sent after its commit; the retry job sends it only once this has passed.
REFUND_FIRST_RETRY = timedelta(minutes=1)


def request_member_refund(sess: Session, order: Order, amount_fen: int | None, reason: str, *, actor: str) -> Refund:
    """The buyer's after-sales request, for all that is refundable unless they name an amount."""
    lock_order(sess, order)
    # While a refund is open the order is refunding; what counts is the status that refund interrupted.
    status = order.status_before_refund if order.status == S.refunding else order.status
    if order.status not in MEMBER_REFUNDABLE or status not in MEMBER_REFUNDABLE:
        raise IllegalTransitionError(f"a {order.status.value} order cannot be refunded by the buyer", data={"status": order.status.value})
    return request_refund(sess, order, amount_fen, reason, actor=actor, approved=False)


def _refund_for_update(sess: Session, refund_id: int) -> tuple[Refund, Order]:
    """The refund and its order, both locked, order first (the order in which every refund path locks)."""
    order_id = sess.scalar(select(Refund.order_id).where(Refund.id == refund_id))
    order = sess.get(Order, order_id) if order_id is not None else None
    if order is None:
        raise RefundNotFoundError()
    lock_order(sess, order)
    refund = sess.scalar(select(Refund).where(Refund.id == refund_id).with_for_update().execution_options(populate_existing=True))
    assert refund is not None
    return refund, order


def approve_refund(sess: Session, refund_id: int, *, actor: str, staff_id: int | None = None) -> Refund:
    """Staff accept a member's request; the refund API is called after the commit. Audited when ``staff_id`` is given."""
    refund, order = _refund_for_update(sess, refund_id)
    if refund.status != RefundStatus.requested:
        raise IllegalTransitionError(f"this refund is {refund.status.value}", data={"status": refund.status.value})
    refund.status = RefundStatus.approved
    # The submit after this commit sends it; the retry job only if that submit got nowhere.
    refund.next_attempt_at = utcnow() + REFUND_FIRST_RETRY
    add_event(sess, order, "refund_approved", actor, refund_id=refund.id, amount_fen=refund.amount_fen)
    sess.flush()
    if staff_id is not None:
        record_audit(sess, staff_id, "refund.approve", f"refund:{refund.id}")
    return refund


def reject_refund(sess: Session, refund_id: int, *, reason: str, actor: str, staff_id: int | None = None) -> Refund:
    """Staff turn a member's request down; the order returns to where it was. Audited when ``staff_id`` is given."""
    refund, order = _refund_for_update(sess, refund_id)
    if refund.status != RefundStatus.requested:
        raise IllegalTransitionError(f"this refund is {refund.status.value}", data={"status": refund.status.value})
    refund.reason = f"{refund.reason} | rejected: {reason}"[:255]
    finish_refund(sess, order, refund, succeeded=False, actor=actor)
    if staff_id is not None:
        record_audit(sess, staff_id, "refund.reject", f"refund:{refund.id}", {"reason": reason})
    return refund


def cancel_unpaid(sess: Session, order: Order, *, actor: str) -> Order:
    """The buyer cancels before paying: closed, stock released."""
    if order.status != S.created or not close_unpaid(sess, order, actor=actor, reason="cancelled"):
        raise IllegalTransitionError(f"a {order.status.value} order cannot be cancelled", data={"status": order.status.value})
    return order


#: Refunds whose money is spoken for: asked, approved, at WeChat, or stuck at WeChat until staff resolve it.
OPEN_REFUND_STATUSES = (RefundStatus.requested, RefundStatus.approved, RefundStatus.processing, RefundStatus.abnormal)


def _open_refund_total(sess: Session, order_id: int) -> int:
    return int(
        sess.scalar(
            select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
                Refund.order_id == order_id, Refund.status.in_(OPEN_REFUND_STATUSES)
            )
        )
        or 0
    )


def finish_refund(
    sess: Session,
    order: Order,
    refund: Refund,
    *,
    succeeded: bool,
    actor: str,
    refund_id: str | None = None,
    ending: RefundStatus | None = None,
    reason: str = "",
    only_from: RefundStatus | None = None,
) -> Order:
    """A refund ended (notification, query, rejection or a refusal for good): settle the amounts and the
    order's status. Unsuccessful endings are ``failed`` once WeChat knew the refund, ``rejected`` before,
    unless ``ending`` says which; ``reason`` is kept as ``failure_reason``. With ``only_from``, nothing
    happens unless the refund, read under the order's lock, is still in that status."""
    lock_order(sess, order)
    sess.refresh(refund)
    if only_from is not None and refund.status != only_from:
        return order
    if succeeded and refund.status == RefundStatus.failed:
        # WeChat paid a refund the books have as failed: the money is gone, so the books follow.
        if order.refunded_fee + refund.amount_fen > order.paid_fee:
            logger.error("WeChat Pay paid refund %s, recorded as failed, but the order has no room for it: left for a person", refund.id)
            return order
        logger.error("WeChat Pay paid refund %s, which was recorded as failed; recording it as paid", refund.id)
        if order.status != S.refunding and S.refunding in TRANSITIONS[order.status]:
            transition(sess, order, S.refunding, actor=actor, event="refund_reopened", expected=order.status, refund_id=refund.id)
    elif refund.status in (RefundStatus.succeeded, RefundStatus.rejected, RefundStatus.failed):
        return order
    if succeeded:
        refund.status = RefundStatus.succeeded
    else:
        refund.status = ending or (RefundStatus.failed if refund.refund_id or refund_id else RefundStatus.rejected)
        refund.failure_reason = reason[:255]
    refund.finished_at = utcnow()
    refund.next_attempt_at = None
    if refund_id:
        refund.refund_id = refund_id
    if succeeded:
        sess.execute(update(Order).where(Order.id == order.id).values(refunded_fee=Order.refunded_fee + refund.amount_fen))
        sess.refresh(order)
    add_event(sess, order, "refund_succeeded" if succeeded else "refund_ended", actor, refund_id=refund.id, amount_fen=refund.amount_fen, status=refund.status.value)
    if _open_refund_total(sess, order.id) == 0 and order.status == S.refunding:
        if order.refunded_fee >= order.paid_fee:
            transition(sess, order, S.refunded, actor=actor, expected=S.refunding)
        else:
            back = order.status_before_refund or S.paid
            transition(sess, order, back, actor=actor, event="refund_closed", expected=S.refunding)
    sess.flush()
    events.refund_ended.send(sess, refund=refund, order=order)
    return order


def mark_refund_abnormal(sess: Session, order: Order, refund: Refund, *, actor: str, refund_id: str | None = None, reason: str) -> Order:
    """WeChat took the refund but could not pay it into the buyer's account: the money stays at WeChat,
    the refund stays open (nothing more can be refunded in its place) and waits for staff."""
    lock_order(sess, order)
    sess.refresh(refund)
    if refund.status not in (RefundStatus.approved, RefundStatus.processing):
        return order
    refund.status = RefundStatus.abnormal
    refund.failure_reason = reason[:255]
    refund.next_attempt_at = None
    if refund_id:
        refund.refund_id = refund_id
    add_event(sess, order, "refund_abnormal", actor, refund_id=refund.id, amount_fen=refund.amount_fen, reason=reason)
    sess.flush()
    return order


def settle_abnormal_refund_offline(sess: Session, refund_id: int, *, note: str, actor: str, staff_id: int | None = None) -> Refund:
    """Staff paid the buyer another way (and recovered the money WeChat held, e.g. in the merchant
    platform): the abnormal refund counts as paid out, with the staff member's note on the timeline.
    Audited when ``staff_id`` is given."""
    refund, order = _refund_for_update(sess, refund_id)
    if refund.status != RefundStatus.abnormal:
        raise IllegalTransitionError(f"only an abnormal refund can be settled offline; this one is {refund.status.value}", data={"status": refund.status.value})
    add_event(sess, order, "refund_settled_offline", actor, refund_id=refund.id, amount_fen=refund.amount_fen, note=note)
    finish_refund(sess, order, refund, succeeded=True, actor=actor)
    if staff_id is not None:
        record_audit(sess, staff_id, "refund.settle_offline", f"refund:{refund.id}", {"note": note})
    return refund


def abnormal_refund_for_retry(sess: Session, refund_id: int) -> tuple[Refund, Order]:
    """The abnormal refund staff want WeChat Pay to pay elsewhere, checked and locked; the call itself is the caller's."""
    refund, order = _refund_for_update(sess, refund_id)
    if refund.status != RefundStatus.abnormal:
        raise IllegalTransitionError(f"only an abnormal refund can be sent to another account; this one is {refund.status.value}", data={"status": refund.status.value})
    if not refund.refund_id:
        raise IllegalTransitionError("WeChat Pay never gave this refund an id; settle it offline")
    return refund, order


def mark_refund_resent(sess: Session, order: Order, refund: Refund, *, target: str, actor: str, next_query_at: datetime) -> None:
    """Claim an abnormal refund (from ``abnormal_refund_for_retry``, still locked) for a resend: it is
    ``processing`` before WeChat is asked, so nobody settles it offline meanwhile; asked about at ``next_query_at``."""
    refund.status = RefundStatus.processing
    refund.failure_reason = ""
    refund.next_attempt_at = next_query_at
    add_event(sess, order, "refund_resent", actor, refund_id=refund.id, amount_fen=refund.amount_fen, target=target)
    sess.flush()


def abnormal_refund_refused(sess: Session, refund_id: int, *, reason: str, actor: str) -> None:
    """WeChat refused to send an abnormal refund elsewhere: it is ``abnormal`` again, with WeChat's words."""
    refund, order = _refund_for_update(sess, refund_id)
    if refund.status != RefundStatus.processing:
        return
    refund.status = RefundStatus.abnormal
    refund.failure_reason = reason[:255]
    refund.next_attempt_at = None
    add_event(sess, order, "refund_resend_refused", actor, refund_id=refund.id, reason=reason)
    sess.flush()


#: How a refund notification ended the refund, after the two APIs' words are mapped onto one set.
REFUND_SUCCESS, REFUND_ABNORMAL, REFUND_CLOSED = "SUCCESS", "ABNORMAL", "CLOSED"
#: The suffix a non-successful refund notice's reference carries, so each ending is its own notice.
_NOTICE_SUFFIX = {REFUND_SUCCESS: "", REFUND_ABNORMAL: ":abnormal", REFUND_CLOSED: ":failed"}


def _notice_ending(notice: PaymentNotice) -> str:
    for ending, suffix in _NOTICE_SUFFIX.items():
        if suffix and notice.reference.endswith(suffix):
            return ending
    return REFUND_SUCCESS


def apply_refund_notice(sess: Session, *, out_trade_no: str, out_refund_no: str, refund_id: str, amount_fen: int, ending: str, api: str) -> bool:
    """A verified refund notification (``ending``: SUCCESS, ABNORMAL or CLOSED). Kept, not dropped, when it
    beats the payment notification.

    Returns False for a repeat of a notice already recorded. A repeat that does not report money paid
    out is still applied when its refund is under way again: a refund sent again after it went
    abnormal can go abnormal (or be closed) a second time, under the same WeChat refund id.
    """
    reference = refund_id + _NOTICE_SUFFIX[ending]
    notice = PaymentNotice(kind="refund", reference=reference, out_trade_no=out_trade_no, out_refund_no=out_refund_no, amount_fen=amount_fen, api=api, applied=False)
    if not _record_notice(sess, notice):
        if ending != REFUND_SUCCESS:
            _reapply_ending(sess, out_trade_no, out_refund_no, amount_fen, ending, refund_id)
        return False
    order = sess.scalar(select(Order).where(Order.out_trade_no == out_trade_no))
    if order is None or order.paid_at is None:
        return True  # applied by apply_payment when the payment arrives
    _apply_refund(sess, order, notice)
    return True


def _reapply_ending(sess: Session, out_trade_no: str, out_refund_no: str, amount_fen: int, ending: str, refund_id: str) -> None:
    order = sess.scalar(select(Order).where(Order.out_trade_no == out_trade_no))
    refund = sess.scalar(select(Refund).where(Refund.out_refund_no == out_refund_no))
    if order is None or refund is None or refund.order_id != order.id or refund.amount_fen != amount_fen:
        return
    if refund.status == RefundStatus.processing:
        end_refund(sess, order, refund, ending, refund_id=refund_id, actor="wechat")


def _apply_refund(sess: Session, order: Order, notice: PaymentNotice) -> None:
    refund = sess.scalar(select(Refund).where(Refund.out_refund_no == notice.out_refund_no))
    if refund is None:
        # Started outside this system (the merchant platform): record it so the books agree.
        if order.status != S.refunding and S.refunding in TRANSITIONS[order.status]:
            transition(sess, order, S.refunding, actor="wechat", event="refund_requested", amount_fen=notice.amount_fen)
        refund = Refund(order_id=order.id, out_refund_no=notice.out_refund_no or notice.reference, amount_fen=notice.amount_fen, requested_by="wechat", status=RefundStatus.processing)
        sess.add(refund)
        sess.flush()
    if refund.amount_fen != notice.amount_fen:
        raise AmountMismatchError(data={"expected": refund.amount_fen, "got": notice.amount_fen})
    notice.applied = True
    end_refund(sess, order, refund, _notice_ending(notice), refund_id=notice.reference.split(":")[0], actor="wechat")


def end_refund(sess: Session, order: Order, refund: Refund, ending: str, *, refund_id: str | None, actor: str) -> None:
    """Apply how WeChat says a refund ended (SUCCESS, ABNORMAL or CLOSED, from a notification or a query)."""
    if ending == REFUND_ABNORMAL:
        mark_refund_abnormal(sess, order, refund, actor=actor, refund_id=refund_id, reason="WeChat Pay could not pay the refund into the buyer's account (ABNORMAL)")
    elif ending == REFUND_CLOSED:
        finish_refund(sess, order, refund, succeeded=False, actor=actor, refund_id=refund_id, ending=RefundStatus.failed, reason="WeChat Pay closed the refund (CLOSED)")
    else:
        finish_refund(sess, order, refund, succeeded=True, actor=actor, refund_id=refund_id)


def _apply_waiting_refunds(sess: Session, order: Order) -> None:
    waiting = sess.scalars(
        select(PaymentNotice).where(PaymentNotice.out_trade_no == order.out_trade_no, PaymentNotice.kind == "refund", PaymentNotice.applied.is_(False)).order_by(PaymentNotice.id)
    ).all()
    for notice in waiting:
        _apply_refund(sess, order, notice)


# -- the buyer's and the merchant's moves ---------------------------------------------------------


def ship(sess: Session, order: Order, *, carrier: str, tracking_no: str, actor: str) -> Order:
    order.carrier, order.tracking_no = carrier, tracking_no
    return move(sess, order, S.shipped, actor=actor, carrier=carrier, tracking_no=tracking_no)


def receive(sess: Session, order: Order, *, actor: str) -> Order:
    return move(sess, order, S.received, actor=actor)


def due_for_auto_receive(sess: Session, now: datetime) -> list[Order]:
    days = get_setting(sess, "auto_receive_days")
    return list(sess.scalars(select(Order).where(Order.status == S.shipped, Order.shipped_at <= now - timedelta(days=days)).limit(500)))


def due_for_completion(sess: Session, now: datetime) -> list[Order]:
    days = get_setting(sess, "after_sales_days")
    return list(sess.scalars(select(Order).where(Order.status == S.received, Order.received_at <= now - timedelta(days=days)).limit(500)))


def due_for_close(sess: Session, now: datetime) -> list[Order]:
    return list(sess.scalars(select(Order).where(Order.status == S.created, Order.kind == OrderKind.online, Order.expires_at <= now).limit(500)))
