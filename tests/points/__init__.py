"""Helpers for the points tests: members, bindings, orders and matured points, built through the real services."""
from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from server.accounts.models import Member
from server.orders import services as orders
from server.orders.models import Order, OrderStatus, Product, Sku
from server.points import ledger
from server.points.models import AccountKind, TxKind
from server.points.services import process_order
from server.referral.models import Binding


def make_member(sess: Session, name: str, *, inviter: Member | None = None, upline: Member | None = None) -> Member:
    member = Member(openid=f"openid-{name}-{uuid.uuid4().hex[:12]}", nickname=name)
    sess.add(member)
    sess.flush()
    if inviter is not None:
        sess.add(Binding(member_id=member.id, inviter_id=inviter.id, upline_id=upline.id if upline else None, channel="test"))
        sess.flush()
    return member


def make_sku(sess: Session, *, price_fen: int = 100_000, stock: int = 100) -> Sku:
    product = Product(title="有机茶叶礼盒")
    sess.add(product)
    sess.flush()
    sku = Sku(product_id=product.id, name="500g", price_fen=price_fen, stock=stock)
    sess.add(sku)
    sess.flush()
    return sku


def place(sess: Session, buyer: Member, sku: Sku, quantity: int = 1) -> Order:
    return orders.place_order(sess, buyer, [orders.LineRequest(sku.id, quantity)])


def pay(sess: Session, order: Order) -> Order:
    result = orders.apply_payment(sess, out_trade_no=order.out_trade_no, transaction_id=f"wx{uuid.uuid4().hex[:24]}", amount_fen=order.total_fee, api="v3")
    assert result.applied
    return result.order


def ship(sess: Session, order: Order) -> Order:
    return orders.ship(sess, order, carrier="SF", tracking_no="SF1234567890", actor="staff:1")


def completed_order(sess: Session, buyer: Member, sku: Sku) -> Order:
    """An order paid, shipped, received and completed, with its rewards credited and matured."""
    order = pay(sess, place(sess, buyer, sku))
    process_order(sess, order)
    ship(sess, order)
    orders.receive(sess, order, actor=f"member:{buyer.id}")
    assert orders.transition(sess, order, OrderStatus.completed, actor="system")
    process_order(sess, order)
    return order


def post_to(sess: Session, member: Member, kind: AccountKind, amount: int, *, tx_kind: TxKind = TxKind.adjust, key: str | None = None) -> int:
    """Move ``amount`` from the merchant's issuance straight into one of the member's accounts; returns the transaction id."""
    posted = ledger.post(
        sess,
        key=key or f"test:{uuid.uuid4().hex}",
        kind=tx_kind,
        legs=[(ledger.account(sess, None, AccountKind.issuance), -amount), (ledger.account(sess, member.id, kind), amount)],
        reason=f"test: {amount} into {kind.value}",
        member_id=member.id,
    )
    return posted.transaction.id
