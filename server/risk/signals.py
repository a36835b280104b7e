"""The risk signals: each reads what the database already knows about an event and says why it looks
like fraud, with points towards the event's score.

Every signal is a few indexed queries in the event's own session and transaction: no network, no
commit. Identifiers are compared as keyed digests (``RiskIdentity``): phones as the digest members
already carry, unionids, payer openids and client addresses digested here, and delivery addresses
after ``normalise`` (full-width to half-width, case and whitespace folded).
"""
from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, tuple_
from sqlalchemy.orm import Session

from server import security
from server.accounts.models import Member
from server.db import utcnow
from server.orders.models import Order, OrderEvent
from server.points.models import OrderReward, Redemption
from server.referral.models import Binding, Lead, Scene
from server.risk.models import RiskIdentity
from server.settings.services import SettingSpec, get_setting, register

#: Each signal's points towards a score (0-100), and what it means. A score is their sum, capped at 100.
SIGNALS: dict[str, tuple[int, str]] = {
    "shared_identity": (80, "买家与邀请人或上级共用手机号、unionid、收货地址或付款人"),
    "shared_cluster": (40, "同一分享者名下多名会员共用同一手机号、unionid、收货地址或付款人"),
    "client_cluster": (40, "同一分享者名下多名会员从同一客户端地址登录或绑定"),
    "bind_burst": (30, "短时间内大量会员绑定到同一分享者"),
    "refund_pattern": (60, "奖励入账后付款订单被退款，同一买家或同一分享者名下反复发生"),
    "quick_first_order": (40, "绑定后几分钟内下首单，同一分享者名下反复发生"),
    "lead_burst": (60, "短时间内同一分享者的线索联系方式相似"),
    "redemption_velocity": (40, "短时间内兑换次数过多"),
    "scene_requests": (40, "推广码申请次数远超该会员的平常用量"),
}

def _hold_not_below_review(sess: Session, value: int) -> None:
    if value < int(get_setting(sess, "risk_review_score")):
        raise ValueError("the hold score cannot be below the review score: every hold is reviewed")


def _review_not_above_hold(sess: Session, value: int) -> None:
    if value > int(get_setting(sess, "risk_hold_score")):
        raise ValueError("the review score cannot be above the hold score: every hold is reviewed")


register(
    SettingSpec("risk_enabled", bool, True, "Score sign-ins, bindings, leads, payments, refunds, redemptions and scene requests for fraud."),
    SettingSpec(
        "risk_review_score", int, 30, "An event scoring at least this (0-100) opens a risk review in the queue.", minimum=1, maximum=100,
        extra_checks=(_review_not_above_hold,),
    ),
    SettingSpec(
        "risk_hold_score", int, 60, "An order or lead scoring at least this (0-100, not below risk_review_score) has its rewards held pending until staff review them.",
        minimum=1, maximum=100, extra_checks=(_hold_not_below_review,),
    ),
    SettingSpec("risk_cluster_members", int, 3, "Members bound to one sharer sharing one phone, unionid, address or payer before it is a signal.", minimum=2, maximum=1000),
    SettingSpec("risk_client_members", int, 5, "Members bound to one sharer signing in from one client address before it is a signal.", minimum=2, maximum=10_000),
    SettingSpec("risk_burst_minutes", int, 10, "The short window of a burst of bindings or leads, in minutes.", minimum=1, maximum=1440),
    SettingSpec("risk_burst_bindings", int, 8, "Bindings to one sharer within the burst window before it is a signal.", minimum=2, maximum=10_000),
    SettingSpec("risk_refund_orders", int, 2, "Earlier orders refunded after their rewards were credited, by the same buyer, before it is a signal (three times that under one sharer in 30 days).", minimum=1, maximum=1000),
    SettingSpec("risk_quick_order_minutes", int, 10, "A first order placed within this many minutes of binding counts as quick.", minimum=1, maximum=1440),
    SettingSpec("risk_quick_order_buyers", int, 3, "Buyers of one sharer whose first order was quick before it is a signal.", minimum=2, maximum=1000),
    SettingSpec("risk_lead_burst", int, 4, "Leads for one sharer with similar contacts (same name or first 7 digits of the phone) within the burst window before it is a signal.", minimum=2, maximum=1000),
    SettingSpec("risk_redemptions_per_day", int, 5, "Redemptions by one member within 24 hours before it is a signal.", minimum=1, maximum=10_000),
    SettingSpec("risk_scene_factor", int, 10, "Scenes a member requests in an hour, as a multiple of their hourly average over 30 days, before it is a signal (and at least risk_scene_minimum).", minimum=2, maximum=1000),
    SettingSpec("risk_scene_minimum", int, 10, "Fewest scenes in an hour that can be a signal.", minimum=1, maximum=10_000),
)

KEYS = (
    "risk_enabled", "risk_review_score", "risk_hold_score", "risk_cluster_members", "risk_client_members", "risk_burst_minutes",
    "risk_burst_bindings", "risk_refund_orders", "risk_quick_order_minutes", "risk_quick_order_buyers", "risk_lead_burst",
    "risk_redemptions_per_day", "risk_scene_factor", "risk_scene_minimum",
)


# The statements every payment runs, built once: scoring is on the payment notification's path.
_PAID_EVENT = (
    select(OrderEvent.detail).where(OrderEvent.order_id == bindparam("order_id"), OrderEvent.event == "paid").order_by(OrderEvent.id.desc()).limit(1)
)
_KNOWN = select(RiskIdentity.kind, RiskIdentity.digest).where(RiskIdentity.member_id == bindparam("member_id"))
# An identifier a concurrent event recorded first is skipped (the kind_digest_member key), not an error.
_RECORD = insert(RiskIdentity).prefix_with("OR IGNORE", dialect="sqlite").prefix_with("IGNORE", dialect="mysql")


def thresholds(sess: Session) -> dict[str, Any]:
    """The risk settings (defaults for those never set), from the transaction's one read of the settings
    (``get_setting``): the event being scored has mostly read some of them already."""
    return {key: get_setting(sess, key) for key in KEYS}


@dataclass
class Reason:
    signal: str
    detail: dict[str, Any] = field(default_factory=dict)
    #: Other members the signal links the event to.
    members: list[int] = field(default_factory=list)

    @property
    def points(self) -> int:
        return SIGNALS[self.signal][0]

    def as_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "points": self.points, "detail": self.detail, "members": sorted(set(self.members))}


# -- identifiers ------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """An address as people write it many ways: full-width to half-width (NFKC), lower case, no whitespace."""
    return "".join(unicodedata.normalize("NFKC", text).lower().split())


def address_digest(address: dict[str, Any] | None) -> str | None:
    if not isinstance(address, dict):
        return None
    text = normalise("".join(str(address.get(k) or "") for k in ("province", "city", "district", "detail")))
    return security.digest(text, "address") if text else None


def member_identities(member: Member) -> set[tuple[str, str]]:
    """The digests a member's own row gives: phone, unionid, and their openid as a payer."""
    found = {("payer", security.digest(member.openid, "openid"))}
    if member.phone_digest:
        found.add(("phone", member.phone_digest))
    if member.unionid:
        found.add(("unionid", security.digest(member.unionid, "unionid")))
    return found


def order_identities(sess: Session, order: Order) -> set[tuple[str, str]]:
    """What a paid order adds: its delivery address and the phone on it, and who paid (from the paid event)."""
    found = set()
    if (digest := address_digest(order.address)) is not None:
        found.add(("address", digest))
    phone = order.address.get("phone") if isinstance(order.address, dict) else None
    if isinstance(phone, str) and phone:
        found.add(("phone", security.digest(phone, "phone")))
    paid = sess.scalar(_PAID_EVENT, {"order_id": order.id})
    if isinstance(paid, dict) and isinstance(paid.get("payer"), str):
        found.add(("payer", paid["payer"]))
    return found


def record_identities(sess: Session, member_id: int, identities: Iterable[tuple[str, str]]) -> None:
    """Remember each digest for the member, once: what is new is written with one INSERT that skips a row
    a concurrent event wrote first (the ``kind_digest_member`` key), so that race is no error."""
    wanted = set(identities)
    if not wanted:
        return
    known = {(kind, digest) for kind, digest in sess.execute(_KNOWN, {"member_id": member_id})}
    rows = [{"kind": kind, "digest": digest, "member_id": member_id, "created_at": utcnow()} for kind, digest in sorted(wanted - known)]
    if rows:
        sess.execute(_RECORD, rows)


_HOLDERS = (
    select(RiskIdentity.kind, RiskIdentity.member_id, Binding.inviter_id)
    .outerjoin(Binding, Binding.member_id == RiskIdentity.member_id)
    .where(
        tuple_(RiskIdentity.kind, RiskIdentity.digest).in_(bindparam("pairs", expanding=True)),
        RiskIdentity.member_id != bindparam("member"),
        RiskIdentity.member_id.in_(bindparam("chain", expanding=True)) | (Binding.inviter_id == bindparam("inviter")),
    )
    .limit(1000)
)


def holders(sess: Session, member_id: int, identities: set[tuple[str, str]], inviter_id: int | None, upline_id: int | None) -> list[tuple[str, int, int | None]]:
    """Who else holds one of the member's identifiers among their inviter, their upline and the others
    bound to their inviter: (kind, member, that member's inviter), in one query on the identifiers' key."""
    if not identities or inviter_id is None:
        return []
    chain = [m for m in (inviter_id, upline_id) if m is not None]
    params = {"pairs": sorted(identities), "member": member_id, "chain": chain, "inviter": inviter_id}
    return [(kind, other, other_inviter) for kind, other, other_inviter in sess.execute(_HOLDERS, params)]


def record_chain(sess: Session, inviter_id: int | None, upline_id: int | None) -> None:
    """Record the inviter's and upline's own identifiers (at binding: for members who have not signed in
    since risk scoring began; a payment relies on what their sign-ins, binding and orders recorded)."""
    for other_id in (inviter_id, upline_id):
        other = sess.get(Member, other_id) if other_id is not None else None
        if other is not None:
            record_identities(sess, other.id, member_identities(other))


def shared_identity(found: list[tuple[str, int, int | None]], inviter_id: int | None, upline_id: int | None) -> Reason | None:
    """The member shares a phone, unionid, address or payer with their inviter or upline (``found`` from ``holders``)."""
    shared: dict[int, set[str]] = {}
    for kind, other, _ in found:
        if other in (inviter_id, upline_id) and kind != "client":
            shared.setdefault(other, set()).add(kind)
    if not shared:
        return None
    kinds = sorted(set().union(*shared.values()))
    return Reason("shared_identity", {"kinds": kinds, "with": ["inviter" if m == inviter_id else "upline" for m in sorted(shared)]}, list(shared))


def shared_cluster(found: list[tuple[str, int, int | None]], inviter_id: int | None, limits: dict[str, Any], *, client: bool = False) -> Reason | None:
    """Several members bound to one sharer carry the same identifier (``client``: sign in from one client address)."""
    if inviter_id is None:
        return None
    signal, need = ("client_cluster", int(limits["risk_client_members"])) if client else ("shared_cluster", int(limits["risk_cluster_members"]))
    others: dict[str, list[int]] = {}
    for kind, other, other_inviter in found:
        if other_inviter == inviter_id and (kind == "client") == client:
            others.setdefault(kind, []).append(other)
    for kind, members in sorted(others.items()):
        if len(members) + 1 >= need:
            return Reason(signal, {"kind": kind, "members": len(members) + 1, "sharer_id": inviter_id}, members[:20])
    return None


# -- bursts, patterns and velocities --------------------------------------------------------------


def bind_burst(sess: Session, inviter_id: int, limits: dict[str, Any], now: datetime) -> Reason | None:
    minutes = int(limits["risk_burst_minutes"])
    count = sess.scalar(select(func.count()).select_from(Binding).where(Binding.inviter_id == inviter_id, Binding.bound_at >= now - timedelta(minutes=minutes))) or 0
    if count >= int(limits["risk_burst_bindings"]):
        return Reason("bind_burst", {"bindings": int(count), "minutes": minutes, "sharer_id": inviter_id})
    return None


# One query over the buyer's orders (ix_orders_member_created) and the sharer's (orders.inviter_id); a
# credited order has exactly one level-1 reward row, so the join counts each order once.
_REFUNDED = (
    select(
        func.coalesce(func.sum(case((Order.member_id == bindparam("buyer"), 1), else_=0)), 0),
        func.coalesce(func.sum(case(((Order.inviter_id == bindparam("sharer")) & (Order.paid_at >= bindparam("recent")), 1), else_=0)), 0),
    )
    .join(OrderReward, (OrderReward.order_id == Order.id) & (OrderReward.level == 1))
    .where((Order.member_id == bindparam("buyer")) | (Order.inviter_id == bindparam("sharer")), Order.refunded_fee > 0, Order.id != bindparam("exclude"))
)


def refund_pattern(sess: Session, order: Order, limits: dict[str, Any], now: datetime, *, including: bool = False) -> Reason | None:
    """Orders paid and refunded after their rewards were credited, again and again, by this buyer or under
    this sharer (within 30 days). ``including`` counts ``order`` itself (scored at its refund)."""
    need = int(limits["risk_refund_orders"])
    sharer_id = order.inviter_id if order.inviter_id is not None else -1
    recent = now - timedelta(days=30)
    params = {"buyer": order.member_id, "sharer": sharer_id, "recent": recent, "exclude": -1 if including else order.id}
    by_buyer, by_sharer = sess.execute(_REFUNDED, params).one()
    if by_buyer >= need:
        return Reason("refund_pattern", {"by": "buyer", "orders": int(by_buyer)}, [order.member_id])
    if order.inviter_id is not None and by_sharer >= need * 3:
        return Reason("refund_pattern", {"by": "sharer", "orders": int(by_sharer), "sharer_id": order.inviter_id})
    return None


def quick_first_order(sess: Session, order: Order, limits: dict[str, Any]) -> Reason | None:
    """This buyer's first order came within minutes of binding, and so did other buyers' of the same sharer."""
    if order.inviter_id is None:
        return None
    quick = timedelta(minutes=int(limits["risk_quick_order_minutes"]))
    binding = sess.get(Binding, order.member_id)
    if binding is None or binding.inviter_id != order.inviter_id or not timedelta(0) <= order.created_at - binding.bound_at <= quick:
        return None
    earlier = sess.scalar(select(Order.id).where(Order.member_id == order.member_id, Order.id < order.id, Order.paid_at.is_not(None)).limit(1))
    if earlier is not None:
        return None
    rows = sess.execute(
        select(Order.member_id, func.min(Order.created_at), Binding.bound_at)
        .join(Binding, Binding.member_id == Order.member_id)
        .where(Order.inviter_id == order.inviter_id, Binding.inviter_id == order.inviter_id, Order.paid_at.is_not(None), Order.member_id != order.member_id)
        .group_by(Order.member_id, Binding.bound_at)
        .limit(500)
    ).all()
    buyers = [member_id for member_id, first, bound in rows if first is not None and timedelta(0) <= first - bound <= quick]
    if len(buyers) + 1 >= int(limits["risk_quick_order_buyers"]):
        return Reason("quick_first_order", {"buyers": len(buyers) + 1, "minutes": int(quick.total_seconds() // 60), "sharer_id": order.inviter_id}, buyers[:20])
    return None


def _contact_key(lead: Lead) -> tuple[str, str]:
    phone = ""
    if lead.contact_phone_ciphertext:
        try:
            phone = security.decrypt(lead.contact_phone_ciphertext, "phone")
        except Exception:  # noqa: BLE001 - an unreadable phone is simply not compared
            phone = ""
    return normalise(lead.contact_name), phone.lstrip("+")[:7]


def lead_burst(sess: Session, lead: Lead, limits: dict[str, Any], now: datetime) -> Reason | None:
    """Many leads for one sharer in a short window whose contacts look alike (same name or phone prefix)."""
    if lead.sharer_id is None or not (lead.contact_name or lead.contact_phone_ciphertext):
        return None
    minutes = int(limits["risk_burst_minutes"])
    recent = sess.scalars(
        select(Lead).where(Lead.sharer_id == lead.sharer_id, Lead.id != lead.id, Lead.created_at >= now - timedelta(minutes=minutes)).order_by(Lead.id.desc()).limit(100)
    ).all()
    name, prefix = _contact_key(lead)
    similar = []
    for other in recent:
        other_name, other_prefix = _contact_key(other)
        if (name and other_name == name) or (len(prefix) == 7 and other_prefix == prefix):
            similar.append(other)
    if len(similar) + 1 >= int(limits["risk_lead_burst"]):
        members = [o.member_id for o in similar if o.member_id is not None]
        return Reason("lead_burst", {"leads": len(similar) + 1, "minutes": minutes, "sharer_id": lead.sharer_id}, members)
    return None


def redemption_velocity(sess: Session, member_id: int, limits: dict[str, Any], now: datetime) -> Reason | None:
    count = sess.scalar(select(func.count()).select_from(Redemption).where(Redemption.member_id == member_id, Redemption.created_at >= now - timedelta(hours=24))) or 0
    if count >= int(limits["risk_redemptions_per_day"]):
        return Reason("redemption_velocity", {"redemptions": int(count), "hours": 24})
    return None


def scene_requests(
    sess: Session, sharer_id: int, limits: dict[str, Any], now: datetime, *, issued_since: tuple[datetime, int] | None = None
) -> Reason | None:
    """Scenes requested in the last hour, far above the member's hourly average over 30 days.

    ``issued_since`` (``events.scene_issued``) bounds the count: when its moment is an hour ago or earlier,
    the last hour's scenes are among its ``n``, and fewer than ``risk_scene_minimum`` of them need no count.
    (The bound holds while the sender keeps the member's row locked: see ``referral.services.create_scene``.)
    """
    if issued_since is not None:
        since, issued = issued_since
        if since <= now - timedelta(hours=1) and issued < int(limits["risk_scene_minimum"]):
            return None
    last_hour = sess.scalar(select(func.count()).select_from(Scene).where(Scene.sharer_id == sharer_id, Scene.created_at >= now - timedelta(hours=1))) or 0
    if last_hour < int(limits["risk_scene_minimum"]):
        return None
    month = sess.scalar(select(func.count()).select_from(Scene).where(Scene.sharer_id == sharer_id, Scene.created_at >= now - timedelta(days=30))) or 0
    # The average of the hours before this one; a member with no history is measured against one scene an hour.
    average = max((month - last_hour) / (30 * 24 - 1), 1.0)
    if last_hour >= average * int(limits["risk_scene_factor"]):
        return Reason("scene_requests", {"last_hour": int(last_hour), "hourly_average_30d": round(average, 2)})
    return None
