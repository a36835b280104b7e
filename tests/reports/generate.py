"""Random raw rows for the report tests: members, distributors, scenes' touches, leads, orders with items,
partial and full refunds, and ledger postings through the real ledger, spread over the last weeks."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from server.accounts.models import Member
from server.db import utcnow
from server.distribution.models import Distributor, DistributorStatus, Grade
from server.orders.models import Order, OrderItem, OrderKind, OrderStatus, Product, Sku
from server.points import ledger
from server.points.models import AccountKind, Entry, LedgerTransaction, TxKind
from server.referral.models import Channel, Lead, LeadSource, LeadStatus, TouchEvent, TouchKind

PLACES = [("广东省", "深圳市"), ("广东省", "广州市"), ("浙江省", "杭州市"), ("北京市", "北京市"), ("=1+1", "@city")]
CONTENTS = ["", "product:1", "product:2", "campaign:spring"]
OTHER_CHANNELS = ["order", "miniprogram", "console", ""]


@dataclass
class Generated:
    start: datetime
    now: datetime
    members: list[int] = field(default_factory=list)
    unpaid: list[int] = field(default_factory=list)
    paid: list[int] = field(default_factory=list)


def _at(rng: random.Random, start: datetime, now: datetime) -> datetime:
    seconds = int((now - start).total_seconds())
    return start + timedelta(seconds=rng.randrange(seconds))


def generate(sess: Session, seed: int = 7, days: int = 40, members: int = 30, orders: int = 150, touches: int = 500) -> Generated:
    rng = random.Random(seed)
    now = utcnow() - timedelta(minutes=5)
    start = now - timedelta(days=days)
    out = Generated(start, now)
    at = lambda: _at(rng, start, now)  # noqa: E731

    for n in range(members):
        member = Member(openid=f"gen-{seed}-{n}", nickname=f"member {n}", created_at=at())
        sess.add(member)
        sess.flush()
        out.members.append(member.id)
    grade = Grade(name="silver", min_sales_fen=1)
    sess.add(grade)
    sess.flush()
    for member_id in out.members[: members // 2]:
        sess.add(Distributor(
            member_id=member_id, tier=1, status=rng.choice(list(DistributorStatus)), real_name=f"d{member_id}",
            phone_ciphertext="x", phone_digest=f"d{member_id}", phone_masked="138****0000",
            grade_id=grade.id if rng.random() < 0.5 else None, applied_at=at(),
        ))
    products = []
    for n in range(3):
        product = Product(title=f"product {n}")
        sess.add(product)
        sess.flush()
        for m in range(2):
            sku = Sku(product_id=product.id, name=f"sku {m}", price_fen=rng.randrange(100, 50_000), stock=100)
            sess.add(sku)
            sess.flush()
            products.append((product, sku))

    kinds = [TouchKind.visit, TouchKind.scan, TouchKind.sign_in, TouchKind.bind, TouchKind.lead, TouchKind.order, TouchKind.paid,
             TouchKind.completed, TouchKind.shipped, TouchKind.refunded]
    for _ in range(touches):
        anonymous = rng.random() < 0.15
        channel = rng.choice([c.value for c in Channel] + OTHER_CHANNELS)
        sess.add(TouchEvent(
            member_id=None if anonymous else rng.choice(out.members[:12]),  # a few members with many touches
            kind=rng.choice(kinds), channel=channel, content=rng.choice(CONTENTS), created_at=at(),
        ))
    for _ in range(60):
        created = at()
        status = rng.choice(list(LeadStatus))
        sess.add(Lead(
            source=rng.choice(list(LeadSource)), sharer_id=rng.choice(out.members + [None]), status=status, created_at=created,
            reviewed_at=None if status == LeadStatus.new else created + timedelta(hours=1),
        ))

    for n in range(orders):
        buyer = rng.choice(out.members)
        inviter = rng.choice(out.members[:members // 2] + [None, None])
        lines = rng.sample(products, rng.randint(1, 3))
        quantities = [rng.randint(1, 3) for _ in lines]
        total = sum(sku.price_fen * q for (_, sku), q in zip(lines, quantities))
        created = at()
        paid = rng.random() < 0.8
        paid_at = min(created + timedelta(minutes=rng.randrange(1, 3000)), now) if paid else None
        refunded = 0
        if paid and rng.random() < 0.3:
            refunded = total if rng.random() < 0.4 else rng.randrange(1, total)
        kind = OrderKind.contract if rng.random() < 0.15 else OrderKind.online
        place = rng.choice(PLACES + [None])
        order = Order(
            out_trade_no=f"G{seed}N{n}", kind=kind, member_id=buyer, total_fee=total, paid_fee=total if paid else 0, refunded_fee=refunded,
            status=(OrderStatus.refunded if refunded == total else OrderStatus.paid) if paid else OrderStatus.created,
            inviter_id=inviter, repeat_business=rng.random() < 0.3, created_at=created, paid_at=paid_at,
            address=None if place is None else {"province": place[0], "city": place[1], "detail": "x"},
        )
        sess.add(order)
        sess.flush()
        (out.paid if paid else out.unpaid).append(order.id)
        for (product, sku), quantity in zip(lines, quantities):
            sess.add(OrderItem(order_id=order.id, product_id=product.id, sku_id=sku.id, title=product.title, sku_name=sku.name,
                               price_fen=sku.price_fen, list_price_fen=sku.price_fen, quantity=quantity))
    sess.flush()
    post_points(sess, rng, out.members[:10], lambda: at(), f"gen{seed}")
    return out


def post_points(sess: Session, rng: random.Random, members: list[int], when, prefix: str) -> None:  # type: ignore[no-untyped-def]
    """Rewards, maturing, settling, redemptions and their cancellation, expiry and reversals into debt, through the
    real ledger, each transaction back-dated to ``when()``."""
    issuance = ledger.account(sess, None, AccountKind.issuance)
    redemption = ledger.account(sess, None, AccountKind.redemption)
    expiry = ledger.account(sess, None, AccountKind.expiry)
    serial = 0

    def post(kind: TxKind, member_id: int, legs: list) -> None:  # type: ignore[type-arg]
        nonlocal serial
        serial += 1
        posted = ledger.post(sess, key=f"{prefix}:{serial}", kind=kind, legs=legs, reason="generated", member_id=member_id)
        stamp = when()
        sess.execute(update(LedgerTransaction).where(LedgerTransaction.id == posted.transaction.id).values(created_at=stamp))
        sess.execute(update(Entry).where(Entry.transaction_id == posted.transaction.id).values(created_at=stamp))

    for member_id in members:
        pending = ledger.account(sess, member_id, AccountKind.pending)
        matured = ledger.account(sess, member_id, AccountKind.matured)
        available = ledger.account(sess, member_id, AccountKind.available)
        debt = ledger.account(sess, member_id, AccountKind.debt)
        amount = rng.randrange(1_000, 100_000)
        post(TxKind.order_reward, member_id, [(issuance, -amount), (pending, amount)])
        reversed_part = rng.randrange(0, amount // 3)
        post(TxKind.reversal, member_id, [(pending, -reversed_part), (issuance, reversed_part)])
        held = amount - reversed_part
        post(TxKind.mature, member_id, [(pending, -held), (matured, held)])
        post(TxKind.settle, member_id, [(matured, -held), (available, held)])
        spent = rng.randrange(1, held)
        post(TxKind.redeem, member_id, [(available, -spent), (redemption, spent)])
        if rng.random() < 0.5:
            post(TxKind.redeem_cancel, member_id, [(redemption, -spent), (available, spent)])
            spent = 0
        left = held - spent
        if left and rng.random() < 0.5:
            post(TxKind.expire, member_id, [(available, -left), (expiry, left)])
        owed = rng.randrange(1, 5_000)
        post(TxKind.reversal, member_id, [(debt, -owed), (issuance, owed)])
        bonus = rng.randrange(100, 10_000)
        post(TxKind.lead_reward, member_id, [(issuance, -bonus), (pending, bonus)])
