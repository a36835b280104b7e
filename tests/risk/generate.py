"""A merchant with honest traffic and injected fraud of every kind the risk signals look for, each with
its label, built through the same services the app uses (binding, orders and payments, refunds,
leads, redemptions, scenes), so every event is scored as it happens.

Honest activity is spread over the past weeks the way real members' is: right after each step its
timestamps are moved back (a binding days ago, a lead last week), so the next event sees a history
and not a burst. Injected fraud happens now, in the shapes the signals describe.

``build(sess)`` returns the labels; ``measure(sess, merchant)`` gives recall on the injected cases
and the share of honest members flagged. Used by tests/risk/test_quality.py and bench/risk_bench.py.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server import events
from server.accounts import services as accounts
from server.accounts.models import Member
from server.db import utcnow
from server.orders import services as orders
from server.orders.models import Order, OrderEvent, Product, Sku
from server.points import redemption as redemptions
from server.points import services as points
from server.points.models import ItemKind, Redemption
from server.points.settlement import grant_points
from server.referral import services as referral
from server.referral.models import Binding, Channel, Lead, Scene, TouchEvent
from server.risk.models import RiskReview, RiskSignal
from server.settings.services import set_setting

#: The injected kinds of fraud and the signal each must raise.
KINDS: dict[str, str] = {
    "shared_phone": "shared_identity",
    "shared_address": "shared_identity",
    "shared_payer": "shared_identity",
    "address_cluster": "shared_cluster",
    "client_cluster": "client_cluster",
    "bind_burst": "bind_burst",
    "refund_pattern": "refund_pattern",
    "quick_first_order": "quick_first_order",
    "lead_burst": "lead_burst",
    "redemption_velocity": "redemption_velocity",
    "scene_requests": "scene_requests",
}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"
CITIES = ["上海市浦东新区", "北京市朝阳区", "广州市天河区", "深圳市南山区", "杭州市西湖区", "成都市武侯区"]


@dataclass
class Case:
    kind: str
    #: The member the review must name (the sharer, or the member who redeemed or asked for scenes).
    member_id: int

    @property
    def signal(self) -> str:
        return KINDS[self.kind]


@dataclass
class Merchant:
    honest: set[int] = field(default_factory=set)
    cases: list[Case] = field(default_factory=list)
    orders_paid: int = 0


@dataclass(frozen=True)
class Quality:
    recall: float
    false_positive_rate: float
    missed: list[Case]
    flagged_honest: list[int]


class Builder:
    """Members and their activity, through the services."""

    def __init__(self, sess: Session, seed: int, prefix: str = "gen") -> None:
        self.sess = sess
        #: Keeps two builders' openids and keys apart in one database.
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.serial = 0
        product = Product(title="茶具礼盒")
        sess.add(product)
        sess.flush()
        self.sku = Sku(product_id=product.id, price_fen=19_900, stock=1_000_000)
        sess.add(self.sku)
        sess.flush()
        self.item = redemptions.create_item(sess, kind=ItemKind.privilege, title="会员日优先入场", price=100)

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def phone(self, prefix: str | None = None) -> str:
        n = self._next()
        return (prefix or f"13{self.rng.randint(0, 9)}{self.rng.randint(1000, 9999)}") + f"{n:04d}"[-4:]

    def name(self) -> str:
        return self.rng.choice(SURNAMES) + self.rng.choice(GIVEN) + self.rng.choice(GIVEN)

    def address(self) -> dict[str, Any]:
        n = self._next()
        city = self.rng.choice(CITIES)
        return {"name": self.name(), "phone": self.phone(), "province": "", "city": city, "district": "", "detail": f"幸福路{n}号{self.rng.randint(1, 30)}01室"}

    def member(self, *, phone: str | None = None, unionid: str | None = None) -> Member:
        n = self._next()
        member = Member(openid=f"{self.prefix}-openid-{n}", unionid=unionid or f"{self.prefix}-unionid-{n}", nickname=f"会员{n}")
        self.sess.add(member)
        self.sess.flush()
        accounts.bind_phone(self.sess, member, phone or self.phone())
        return member

    def sign_in(self, member: Member, client_address: str) -> None:
        """What ``sign_in_member`` ends with: a token for the client address, and the event."""
        accounts.issue_member_token(self.sess, member, client_address=client_address)
        events.member_signed_in.send(self.sess, member=member, client_address=client_address, created=False)

    def scene(self, sharer: Member, content: str = "") -> Scene:
        return referral.scene_for_share(self.sess, sharer.id, Channel.miniprogram_code, "product" if content else "", content)

    def bind(self, member: Member, sharer: Member, *, days_ago: float | None = None) -> None:
        result = referral.bind_member(self.sess, member, self.scene(sharer).code)
        assert result.bound, result.reason
        if days_ago is not None:
            self.backdate_binding(member, utcnow() - timedelta(days=days_ago))

    def backdate_binding(self, member: Member, when: Any) -> None:
        self.sess.execute(update(Binding).where(Binding.member_id == member.id).values(bound_at=when))
        self.sess.expire_all()

    def order(self, buyer: Member, *, address: dict[str, Any] | None = None, payer: Member | None = None, bound_minutes_before: float | None = None) -> Order:
        order = orders.place_order(self.sess, buyer, [orders.LineRequest(self.sku.id, 1)], address=address or self.address())
        if bound_minutes_before is not None:
            self.backdate_binding(buyer, order.created_at - timedelta(minutes=bound_minutes_before))
            order = self.sess.get(Order, order.id)
            assert order is not None
        orders.apply_payment(
            self.sess, out_trade_no=order.out_trade_no, transaction_id=f"42000{self._next():010d}", amount_fen=order.total_fee, api="v3",
            payer_openid=(payer or buyer).openid,
        )
        points.process_order(self.sess, order)
        return order

    def refund(self, order: Order) -> None:
        refund = orders.request_refund(self.sess, order, None, "不想要了", actor="staff:1", approved=True)
        orders.finish_refund(self.sess, order, refund, succeeded=True, actor="wechat", refund_id=f"50300{self._next():010d}")
        points.process_order(self.sess, order)

    def backdate_order(self, order: Order, days_ago: float) -> None:
        """An honest order placed and paid weeks ago (its paid event with it)."""
        when = utcnow() - timedelta(days=days_ago)
        self.sess.execute(update(Order).where(Order.id == order.id).values(created_at=when, paid_at=when))
        self.sess.execute(update(OrderEvent).where(OrderEvent.order_id == order.id).values(created_at=when))
        self.sess.expire_all()

    def lead(self, sharer: Member, *, name: str | None = None, phone: str | None = None, days_ago: float | None = None) -> Lead:
        lead = referral.leave_contact(self.sess, member=None, scene_code=self.scene(sharer).code, contact_name=name or self.name(), phone=phone or self.phone(), note="想了解团购")
        if days_ago is not None:
            self.sess.execute(update(Lead).where(Lead.id == lead.id).values(created_at=utcnow() - timedelta(days=days_ago)))
            self.sess.execute(update(TouchEvent).where(TouchEvent.kind == "lead", TouchEvent.scene == lead.scene_code).values(created_at=utcnow() - timedelta(days=days_ago)))
            self.sess.expire_all()
        return lead

    def redeem(self, member: Member, *, days_ago: float | None = None) -> None:
        n = self._next()
        grant_points(self.sess, member.id, 100, reason="活动奖励", key=f"{self.prefix}:grant:{n}", actor="cli")
        placed = redemptions.redeem(self.sess, member.id, item_id=self.item.id, quantity=1, idempotency_key=f"{self.prefix}-{n}")
        if days_ago is not None:
            self.sess.execute(update(Redemption).where(Redemption.id == placed.redemption.id).values(created_at=utcnow() - timedelta(days=days_ago)))
            self.sess.expire_all()

    def scenes(self, member: Member, count: int, *, days_ago: float | None = None) -> None:
        for _ in range(count):
            scene = self.scene(member, str(self._next()))
            if days_ago is not None:
                self.sess.execute(update(Scene).where(Scene.code == scene.code).values(created_at=utcnow() - timedelta(days=days_ago)))
        self.sess.expire_all()


def _honest(b: Builder, merchant: Merchant, sharers: int, buyers_per_sharer: int) -> None:
    rng = b.rng
    for s in range(sharers):
        sharer = b.member()
        merchant.honest.add(sharer.id)
        b.sign_in(sharer, f"10.0.{s}.1")
        b.scenes(sharer, rng.randint(1, 4), days_ago=rng.uniform(1, 25))
        for _ in range(buyers_per_sharer):
            buyer = b.member()
            merchant.honest.add(buyer.id)
            b.bind(buyer, sharer, days_ago=rng.uniform(2, 30))
            b.sign_in(buyer, f"10.{rng.randint(1, 250)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
            # A few honest buyers order right after they arrive.
            quick = rng.random() < 0.05
            first = b.order(buyer, bound_minutes_before=rng.uniform(1, 8) if quick else None)
            merchant.orders_paid += 1
            if not quick:
                b.backdate_order(first, rng.uniform(0.5, 2))
            if rng.random() < 0.15:
                b.refund(first)
            if rng.random() < 0.3:
                b.order(buyer)
                merchant.orders_paid += 1
            if rng.random() < 0.2:
                for _ in range(rng.randint(1, 2)):
                    b.redeem(buyer)
        for _ in range(rng.randint(1, 4)):
            b.lead(sharer, days_ago=rng.uniform(0.1, 20))


def inject_case(b: Builder, merchant: Merchant, kind: str) -> None:
    """One labelled case of ``kind``, with a sharer of its own, added to ``merchant.cases``."""
    sharer = b.member()
    b.sign_in(sharer, f"172.16.{b._next() % 250}.9")
    case = Case(kind, sharer.id)
    if kind == "shared_phone":
        phone = b.phone("1880000")
        accounts.bind_phone(b.sess, sharer, phone)
        buyer = b.member(phone=phone)
        b.bind(buyer, sharer, days_ago=3)
        b.order(buyer)
    elif kind == "shared_address":
        own = b.address()
        b.order(sharer, address=own)
        buyer = b.member()
        b.bind(buyer, sharer, days_ago=4)
        # The same place written another way: full-width digits, spaces, another case.
        twisted = dict(own, detail=" " + own["detail"].translate(str.maketrans("0123456789", "０１２３４５６７８９")) + " ", name=b.name(), phone=b.phone())
        b.order(buyer, address=twisted)
    elif kind == "shared_payer":
        buyer = b.member()
        b.bind(buyer, sharer, days_ago=5)
        b.order(buyer, payer=sharer)
    elif kind == "address_cluster":
        drop = b.address()
        for _ in range(3):
            buyer = b.member()
            b.bind(buyer, sharer, days_ago=b.rng.uniform(2, 10))
            b.order(buyer, address=dict(drop, name=b.name(), phone=b.phone()))
    elif kind == "client_cluster":
        farm = f"192.168.{b._next() % 250}.77"
        for _ in range(6):
            fake = b.member()
            b.bind(fake, sharer, days_ago=b.rng.uniform(1, 10))
            b.sign_in(fake, farm)
    elif kind == "bind_burst":
        for _ in range(9):
            b.bind(b.member(), sharer)
    elif kind == "refund_pattern":
        buyer = b.member()
        b.bind(buyer, sharer, days_ago=6)
        for _ in range(3):
            b.refund(b.order(buyer))
    elif kind == "quick_first_order":
        for _ in range(3):
            buyer = b.member()
            b.bind(buyer, sharer)
            b.order(buyer, bound_minutes_before=2)
    elif kind == "lead_burst":
        # The same made-up person again and again: every other lead has the same name, all one number block.
        name = b.name()
        for i in range(4):
            b.lead(sharer, name=name if i % 2 == 0 else None, phone=b.phone("1391234"))
    elif kind == "redemption_velocity":
        for _ in range(5):
            b.redeem(sharer)
    elif kind == "scene_requests":
        b.scenes(sharer, 30, days_ago=12)  # a normal month, and then a sudden hour
        b.scenes(sharer, 12)
    else:
        raise ValueError(kind)
    merchant.cases.append(case)


def build(sess: Session, *, sharers: int = 8, buyers_per_sharer: int = 10, cases_per_kind: int = 2, seed: int = 16) -> Merchant:
    """Honest sharers and buyers, then ``cases_per_kind`` injected cases of every kind, interleaved."""
    set_setting(sess, "scene_daily_limit", 1000, by="test")
    b = Builder(sess, seed)
    merchant = Merchant()
    half = max(sharers // 2, 1)
    _honest(b, merchant, half, buyers_per_sharer)
    for _ in range(cases_per_kind):
        for kind in KINDS:
            inject_case(b, merchant, kind)
    _honest(b, merchant, sharers - half, buyers_per_sharer)
    sess.flush()
    return merchant


def measure(sess: Session, merchant: Merchant) -> Quality:
    """Recall: injected cases whose member has a review with the expected signal. False positives:
    honest members named by any review (as its member, or as the buyer of a reviewed order)."""
    fired = {(m, s) for m, s in sess.execute(select(RiskReview.member_id, RiskSignal.signal).join(RiskSignal, RiskSignal.review_id == RiskReview.id))}
    missed = [c for c in merchant.cases if (c.member_id, c.signal) not in fired]
    named = {m for m in sess.scalars(select(RiskReview.member_id)) if m is not None}
    named |= set(sess.scalars(select(Order.member_id).join(RiskReview, (RiskReview.subject == "order") & (RiskReview.ref_id == Order.id))))
    flagged = sorted(named & merchant.honest)
    cases = len(merchant.cases)
    return Quality(
        recall=(cases - len(missed)) / cases if cases else 1.0,
        false_positive_rate=len(flagged) / len(merchant.honest) if merchant.honest else 0.0,
        missed=missed,
        flagged_honest=flagged,
    )
