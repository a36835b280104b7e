"""The domain events the risk package scores, each in the sender's session and unit of work.

A handler never makes its event fail: an error in the scoring is logged while the sign-in, payment or
redemption goes on. The exception is an error that ended the transaction itself (a deadlock, on which
MariaDB rolls the whole transaction back, or a lost connection): it is raised, and the event fails and
rolls back whole, where going on would have committed only what came after it.

The signals are read in the event's transaction; a review (with its hold) is written in a savepoint of
its own (``services.score``), so it is stored whole or not at all. The identifiers recorded before a
failure stay: each is a fact about the member, recorded once. Most events score below the review
threshold and so cost no savepoint.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server import security
from server.accounts.models import Member
from server.db import dooms_transaction, utcnow
from server.orders.models import Order, OrderStatus, Refund, RefundStatus
from server.points.models import OrderReward, Redemption
from server.referral.models import Binding, Lead, Scene
from server.risk import signals
from server.risk.models import RiskEvent
from server.risk.services import score
from server.risk.signals import Reason

log = logging.getLogger(__name__)


def _guarded(sess: Session, what: str, scoring: Callable[[dict[str, Any]], None]) -> None:
    try:
        limits = signals.thresholds(sess)
        if limits["risk_enabled"]:
            scoring(limits)
    except Exception as error:  # noqa: BLE001 - scoring must never make the event fail …
        if dooms_transaction(error):
            raise  # … unless the database already has: the event's own rows were rolled back with it
        log.exception("risk scoring of %s failed; the event goes on unscored", what)


def _chain(sess: Session, member_id: int) -> tuple[int | None, int | None]:
    binding = sess.get(Binding, member_id)
    return (binding.inviter_id, binding.upline_id) if binding is not None else (None, None)


def _found(*reasons: Reason | None) -> list[Reason]:
    return [r for r in reasons if r is not None]


def score_sign_in(sess: Session, member: Member, client_address: str, limits: dict[str, Any]) -> None:
    identities = signals.member_identities(member)
    if client_address:
        identities.add(("client", security.digest(client_address, "client")))
    signals.record_identities(sess, member.id, identities)
    inviter_id, _ = _chain(sess, member.id)
    if inviter_id is None:
        return
    client = {(kind, digest) for kind, digest in identities if kind == "client"}
    reasons = _found(signals.shared_cluster(signals.holders(sess, member.id, client, inviter_id, None), inviter_id, limits, client=True))
    score(sess, event=RiskEvent.sign_in, subject="member", ref_id=inviter_id, member_id=inviter_id, reasons=reasons, limits=limits)


def score_bind(sess: Session, member: Member, inviter_id: int, limits: dict[str, Any]) -> None:
    identities = signals.member_identities(member)
    signals.record_identities(sess, member.id, identities)
    _, upline_id = _chain(sess, member.id)
    signals.record_chain(sess, inviter_id, upline_id)
    found = signals.holders(sess, member.id, identities, inviter_id, upline_id)
    reasons = _found(
        signals.shared_identity(found, inviter_id, upline_id),
        signals.shared_cluster(found, inviter_id, limits),
        signals.bind_burst(sess, inviter_id, limits, utcnow()),
    )
    score(sess, event=RiskEvent.bind, subject="member", ref_id=inviter_id, member_id=inviter_id, reasons=reasons, limits=limits)


def score_payment(sess: Session, order: Order, limits: dict[str, Any]) -> None:
    buyer = sess.get(Member, order.member_id)
    if buyer is None:
        return
    identities = signals.member_identities(buyer) | signals.order_identities(sess, order)
    signals.record_identities(sess, buyer.id, identities)
    if order.inviter_id is None:
        return  # nobody earns from it
    found = signals.holders(sess, buyer.id, identities, order.inviter_id, order.upline_id)
    reasons = _found(
        signals.shared_identity(found, order.inviter_id, order.upline_id),
        signals.shared_cluster(found, order.inviter_id, limits),
        signals.refund_pattern(sess, order, limits, utcnow()),
        signals.quick_first_order(sess, order, limits),
    )
    score(sess, event=RiskEvent.payment, subject="order", ref_id=order.id, member_id=order.inviter_id, reasons=reasons, limits=limits)


def score_refund(sess: Session, order: Order, limits: dict[str, Any]) -> None:
    if order.inviter_id is None:
        return
    if sess.scalar(select(OrderReward.id).where(OrderReward.order_id == order.id).limit(1)) is None:
        return  # refunded before any reward was credited: nothing was gamed
    reasons = _found(signals.refund_pattern(sess, order, limits, utcnow(), including=True))
    score(sess, event=RiskEvent.refund, subject="member", ref_id=order.inviter_id, member_id=order.inviter_id, reasons=reasons, limits=limits)


def score_lead(sess: Session, lead: Lead, limits: dict[str, Any]) -> None:
    if lead.sharer_id is None or lead.partner_id is not None:
        return
    reasons = _found(signals.lead_burst(sess, lead, limits, utcnow()))
    score(sess, event=RiskEvent.lead, subject="lead", ref_id=lead.id, member_id=lead.sharer_id, reasons=reasons, limits=limits)


def score_redemption(sess: Session, redemption: Redemption, limits: dict[str, Any]) -> None:
    reasons = _found(signals.redemption_velocity(sess, redemption.member_id, limits, utcnow()))
    score(sess, event=RiskEvent.redemption, subject="member", ref_id=redemption.member_id, member_id=redemption.member_id, reasons=reasons, limits=limits)


def score_scene(sess: Session, scene: Scene, limits: dict[str, Any], issued_since: tuple[datetime, int] | None = None) -> None:
    if scene.sharer_id is None:
        return
    reasons = _found(signals.scene_requests(sess, scene.sharer_id, limits, utcnow(), issued_since=issued_since))
    score(sess, event=RiskEvent.scene, subject="member", ref_id=scene.sharer_id, member_id=scene.sharer_id, reasons=reasons, limits=limits)


# -- the handlers ---------------------------------------------------------------------------------


def on_member_signed_in(sess: Session, *, member: Member, client_address: str, created: bool) -> None:
    """Handler of ``events.member_signed_in``: many sign-ins from one client address under one sharer."""
    _guarded(sess, f"sign-in of member {member.id}", lambda limits: score_sign_in(sess, member, client_address, limits))


def on_member_bound(sess: Session, *, member: Member, inviter_id: int, channel: Any, scene_code: str) -> None:
    """Handler of ``events.member_bound``: identifiers shared with the inviter, clusters and bursts."""
    _guarded(sess, f"binding of member {member.id}", lambda limits: score_bind(sess, member, inviter_id, limits))


def on_order_status_changed(sess: Session, *, order: Order, status: OrderStatus) -> None:
    """Handler of ``events.order_status_changed``: a paid order is scored (and held) before its points are credited."""
    if status == OrderStatus.paid and order.refunded_fee == 0 and order.status == OrderStatus.paid:
        _guarded(sess, f"payment of order {order.id}", lambda limits: score_payment(sess, order, limits))


def on_refund_ended(sess: Session, *, refund: Refund, order: Order) -> None:
    """Handler of ``events.refund_ended``: refunds after rewards were credited, again and again."""
    if refund.status == RefundStatus.succeeded:
        _guarded(sess, f"refund {refund.id}", lambda limits: score_refund(sess, order, limits))


def on_lead_opened(sess: Session, *, lead: Lead) -> None:
    """Handler of ``events.lead_opened``: bursts of leads with similar contacts (held before they can be marked valid)."""
    _guarded(sess, f"lead {lead.id}", lambda limits: score_lead(sess, lead, limits))


def on_redemption_placed(sess: Session, *, redemption: Redemption) -> None:
    """Handler of ``events.redemption_placed``: redemption velocity."""
    _guarded(sess, f"redemption {redemption.id}", lambda limits: score_redemption(sess, redemption, limits))


def on_scene_issued(sess: Session, *, scene: Scene, issued_since: tuple[datetime, int] | None = None) -> None:
    """Handler of ``events.scene_issued``: scene requests far above the member's normal use."""
    _guarded(sess, f"scene {scene.code}", lambda limits: score_scene(sess, scene, limits, issued_since))
