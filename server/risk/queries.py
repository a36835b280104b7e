"""Read-side views of risk reviews: the queue, one review's evidence, and the report of signals.

Depends only on models and other query modules.
"""
from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.accounts.models import Member
from server.clock import CHINA, local
from server.distribution.models import Distributor
from server.orders.models import Order
from server.points.queries import hold_state
from server.referral.models import Binding, Lead, TouchEvent
from server.risk.models import ReviewState, RiskEvent, RiskIdentity, RiskReview, RiskSignal
from server.security import mask

#: The most touch events one review shows of its member's timeline (the newest).
TIMELINE_LIMIT = 50
#: The longest report: a year and a day.
MAX_REPORT_DAYS = 366


def reviews_query(*, state: ReviewState | None = None, event: RiskEvent | None = None, member_id: int | None = None) -> Any:
    """Reviews, filtered; list them by ``RiskReview.id.desc()`` (``ix_risk_reviews_state``, ``ix_risk_reviews_member``)."""
    stmt = select(RiskReview)
    if state is not None:
        stmt = stmt.where(RiskReview.state == state)
    if event is not None:
        stmt = stmt.where(RiskReview.event == event)
    if member_id is not None:
        stmt = stmt.where(RiskReview.member_id == member_id)
    return stmt


def focus_member(sess: Session, review: RiskReview) -> int | None:
    """Whose timeline and identifiers the review is about: an order's buyer, a lead's person, else the member."""
    if review.subject == "order":
        return sess.scalar(select(Order.member_id).where(Order.id == review.ref_id))
    if review.subject == "lead":
        return sess.scalar(select(Lead.member_id).where(Lead.id == review.ref_id)) or review.member_id
    return review.ref_id


def _address_text(address: Any) -> str:
    if not isinstance(address, dict):
        return ""
    place = "".join(str(address.get(k) or "") for k in ("province", "city", "district"))
    detail = str(address.get("detail") or "")
    return place + (mask(detail, keep_head=2, keep_tail=0) if detail else "")


def _subject_view(sess: Session, review: RiskReview) -> dict[str, Any] | None:
    if review.subject == "order":
        order = sess.get(Order, review.ref_id)
        if order is None:
            return None
        return {
            "order_id": order.id,
            "out_trade_no": order.out_trade_no,
            "status": order.status.value,
            "total_fee": order.total_fee,
            "refunded_fee": order.refunded_fee,
            "buyer_id": order.member_id,
            "inviter_id": order.inviter_id,
            "upline_id": order.upline_id,
            "address": _address_text(order.address),
        }
    if review.subject == "lead":
        lead = sess.get(Lead, review.ref_id)
        if lead is None:
            return None
        return {
            "lead_id": lead.id,
            "status": lead.status.value,
            "sharer_id": lead.sharer_id,
            "member_id": lead.member_id,
            "contact_name": mask(lead.contact_name) if lead.contact_name else "",
            "contact_phone": lead.contact_phone_masked or "",
        }
    return None


def linked_accounts(sess: Session, review: RiskReview, focus_id: int | None) -> list[dict[str, Any]]:
    """The members the review links, each masked as the console shows members, with the kinds of
    identifier each shares with the focus member."""
    ids: set[int] = {m for m in (review.member_id, focus_id) if m is not None}
    for reason in review.reasons:
        ids.update(int(m) for m in reason.get("members", []) if isinstance(m, int))
    subject = _subject_view(sess, review) or {}
    ids.update(int(subject[k]) for k in ("buyer_id", "inviter_id", "upline_id", "member_id", "sharer_id") if isinstance(subject.get(k), int))
    ordered = sorted(ids)[:50]
    members = {m.id: m for m in sess.scalars(select(Member).where(Member.id.in_(ordered)))}
    distributors = {m: st for m, st in sess.execute(select(Distributor.member_id, Distributor.status).where(Distributor.member_id.in_(ordered)))}
    inviters = {m: i for m, i in sess.execute(select(Binding.member_id, Binding.inviter_id).where(Binding.member_id.in_(ordered)))}
    mine = {(k, d) for k, d in sess.execute(select(RiskIdentity.kind, RiskIdentity.digest).where(RiskIdentity.member_id == focus_id))} if focus_id else set()
    shared: dict[int, set[str]] = {}
    if mine:
        for kind, member_id, digest in sess.execute(
            select(RiskIdentity.kind, RiskIdentity.member_id, RiskIdentity.digest).where(RiskIdentity.member_id.in_(ordered), RiskIdentity.member_id != focus_id)
        ):
            if (kind, digest) in mine:
                shared.setdefault(member_id, set()).add(kind)
    rows = []
    for member_id in ordered:
        member = members.get(member_id)
        if member is None:
            continue
        roles = []
        if member_id == focus_id:
            roles.append("focus")
        if member_id == review.member_id:
            roles.append("sharer" if member_id != focus_id else "member")
        rows.append({
            "member_id": member_id,
            "nickname": member.nickname,
            "phone": member.phone_masked or "",
            "unionid": mask(member.unionid, keep_head=3, keep_tail=2) if member.unionid else "",
            "status": member.status.value,
            "distributor": distributors[member_id].value if member_id in distributors else None,
            "inviter_id": inviters.get(member_id),
            "roles": roles,
            "shared": sorted(shared.get(member_id, ())),
        })
    return rows


def timeline_view(sess: Session, member_id: int | None) -> list[dict[str, Any]]:
    """The newest touch events of the member's timeline, oldest first."""
    if member_id is None:
        return []
    rows = sess.scalars(
        select(TouchEvent).where(TouchEvent.member_id == member_id).order_by(TouchEvent.created_at.desc(), TouchEvent.id.desc()).limit(TIMELINE_LIMIT)
    ).all()
    return [
        {"kind": t.kind.value, "channel": t.channel, "scene": t.scene, "content": t.content, "actor": t.actor, "at": t.created_at}
        for t in reversed(rows)
    ]


def evidence(sess: Session, review: RiskReview) -> dict[str, Any]:
    """What staff decide on: the subject, the linked accounts, the hold and the focus member's timeline."""
    focus_id = focus_member(sess, review)
    hold = hold_state(sess, review.subject, review.ref_id) if review.held else None
    return {
        "subject_detail": _subject_view(sess, review),
        "focus_member_id": focus_id,
        "linked_accounts": linked_accounts(sess, review, focus_id),
        "hold": hold.value if hold else None,
        "timeline": timeline_view(sess, focus_id),
    }


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """China-time days ``start`` to ``end`` (both included) as UTC instants."""
    return datetime.combine(start, time(), CHINA), datetime.combine(end + timedelta(days=1), time(), CHINA)


def signal_report(sess: Session, start: date, end: date) -> dict[str, Any]:
    """Signals by type and by their review's outcome, per China-time day, from ``ix_risk_signals_created``."""
    low, high = _bounds(start, end)
    rows = sess.execute(
        select(RiskSignal.created_at, RiskSignal.signal, RiskReview.state)
        .join(RiskReview, RiskReview.id == RiskSignal.review_id)
        .where(RiskSignal.created_at >= low, RiskSignal.created_at < high)
    ).all()
    by_day: Counter[tuple[date, str, str]] = Counter()
    totals: Counter[tuple[str, str]] = Counter()
    for created_at, signal, state in rows:
        by_day[(local(created_at).date(), signal, state.value)] += 1
        totals[(signal, state.value)] += 1
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "days": [{"day": d.isoformat(), "signal": s, "outcome": o, "count": n} for (d, s, o), n in sorted(by_day.items())],
        "totals": [{"signal": s, "outcome": o, "count": n} for (s, o), n in sorted(totals.items())],
    }
