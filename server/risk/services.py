"""Scoring events into risk reviews, holding the rewards of risky orders and leads, and staff decisions.

``score`` turns an event's reasons into a review (at ``risk_review_score``) and, for an order or a
lead at ``risk_hold_score``, a hold on its rewards (``points.holds``): they stay pending until staff
decide. Below the thresholds nothing is written and nothing changes for the member.

A review moves through ``TRANSITIONS`` by one conditional UPDATE each, so of two staff deciding at
once one wins and the other gets ReviewDecidedError; the decision's effect on the rewards (release,
reversal, a distributor frozen through ``distribution.services.decide``) happens in the same unit of
work and is audited as ``risk_review.<decision>``.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.accounts.models import Staff
from server.accounts.services import record_audit
from server.db import rowcount, utcnow
from server.distribution import services as distribution
from server.distribution.models import Distributor, DistributorStatus
from server.points import holds
from server.risk.errors import NotFreezableError, ReviewDecidedError, ReviewNotFoundError
from server.risk.models import ReviewState, RiskEvent, RiskReview, RiskSignal
from server.risk.signals import Reason

S = ReviewState

#: Every legal move of a review, (from, to) → the decision that makes it.
TRANSITIONS: dict[tuple[ReviewState, ReviewState], str] = {
    (S.open, S.released): "release",
    (S.frozen, S.released): "release",
    (S.open, S.reversed): "reverse",
    (S.frozen, S.reversed): "reverse",
    (S.open, S.false_positive): "false_positive",
    (S.frozen, S.false_positive): "false_positive",
    (S.open, S.frozen): "freeze",
    # Reopened while the released rewards are still pending (an order's, before it matures).
    (S.released, S.open): "reopen",
    (S.false_positive, S.open): "reopen",
}
DECISIONS = ("release", "reverse", "freeze", "false_positive", "reopen")


def score(
    sess: Session,
    *,
    event: RiskEvent,
    subject: str,
    ref_id: int,
    member_id: int | None,
    reasons: list[Reason],
    limits: dict[str, Any],
) -> RiskReview | None:
    """Record the event's review if its score reaches the review threshold, and hold an order's or a
    lead's rewards if it reaches the hold threshold. None (and nothing written) below it.

    What it writes, it writes in a savepoint: all of the review, its signals and the hold, or none of it.
    """
    total = min(sum(r.points for r in reasons), 100)
    if total < int(limits["risk_review_score"]):
        return None
    with sess.begin_nested():
        return _review(sess, event=event, subject=subject, ref_id=ref_id, member_id=member_id, reasons=reasons, total=total, limits=limits)


def _review(
    sess: Session, *, event: RiskEvent, subject: str, ref_id: int, member_id: int | None, reasons: list[Reason], total: int, limits: dict[str, Any]
) -> RiskReview | None:
    if subject == "member":
        # One open review per member and event: the rest of a burst stays that one entry in the queue,
        # which takes on any signal it did not have yet (and the higher score).
        existing = sess.scalar(
            select(RiskReview).where(RiskReview.subject == subject, RiskReview.ref_id == ref_id, RiskReview.event == event, RiskReview.state.in_((S.open, S.frozen))).limit(1)
        )
        if existing is not None:
            known = {r["signal"] for r in existing.reasons}
            added = [r for r in reasons if r.signal not in known]
            if added:
                existing.reasons = [*existing.reasons, *(r.as_dict() for r in added)]
                sess.add_all([RiskSignal(review_id=existing.id, signal=r.signal, points=r.points, created_at=utcnow()) for r in added])
            existing.score = max(existing.score, total)
            sess.flush()
            return existing
    elif sess.scalar(select(RiskReview.id).where(RiskReview.subject == subject, RiskReview.ref_id == ref_id, RiskReview.event == event).limit(1)) is not None:
        return None  # this event was scored before (a repeated notification)
    hold = subject in holds.SUBJECTS and total >= int(limits["risk_hold_score"])
    review = RiskReview(
        event=event, subject=subject, ref_id=ref_id, member_id=member_id, score=total, reasons=[r.as_dict() for r in reasons], held=hold
    )
    sess.add(review)
    sess.flush()
    for reason in reasons:
        sess.add(RiskSignal(review_id=review.id, signal=reason.signal, points=reason.points, created_at=review.created_at))
    if hold:
        holds.hold_rewards(sess, subject, ref_id, reason=f"risk review {review.id}: score {total}")
    sess.flush()
    return review


def get_review(sess: Session, review_id: int) -> RiskReview:
    review = sess.get(RiskReview, review_id)
    if review is None:
        raise ReviewNotFoundError()
    return review


def _move(sess: Session, review: RiskReview, decision: str, staff: Staff, note: str) -> ReviewState:
    source = review.state
    target = next((to for (frm, to), name in TRANSITIONS.items() if frm == source and name == decision), None)
    if target is None:
        raise ReviewDecidedError(data={"state": source.value, "decision": decision})
    result = sess.execute(
        update(RiskReview)
        .where(RiskReview.id == review.id, RiskReview.state == source)
        .values(state=target, decided_by=staff.id, decided_at=utcnow(), note=note[:255])
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        sess.refresh(review)
        raise ReviewDecidedError(data={"state": review.state.value, "decision": decision})
    sess.refresh(review)
    return source


def _freeze(sess: Session, review: RiskReview, staff: Staff, note: str) -> int:
    distributor = sess.scalar(select(Distributor).where(Distributor.member_id == review.member_id)) if review.member_id else None
    if distributor is None or distributor.status != DistributorStatus.approved:
        raise NotFreezableError(data={"member_id": review.member_id})
    distribution.decide(sess, distributor.id, "freeze", staff=staff, reason=note.strip() or f"风控审核 #{review.id}")
    return distributor.id


def decide_review(sess: Session, review_id: int, decision: str, *, staff: Staff, note: str = "") -> RiskReview:
    """Staff decide a review: release or reverse its held rewards, freeze the distributor, mark it a false
    positive (which releases), or reopen a release whose rewards have not matured. Audited."""
    if decision not in DECISIONS:
        raise ValueError(f"not a review decision: {decision}")
    review = get_review(sess, review_id)
    if decision == "reverse" and not review.held:
        raise ReviewDecidedError("nothing is held by this review, so there is nothing to reverse", data={"state": review.state.value, "decision": decision})
    # One savepoint: a decision whose effect is refused (a hold someone moved, nobody to freeze) leaves no trace.
    try:
        with sess.begin_nested():
            return _decide(sess, review, decision, staff, note)
    except Exception:
        sess.expire(review)  # it was reloaded inside the savepoint, as the rolled-back update left it
        raise


def _decide(sess: Session, review: RiskReview, decision: str, staff: Staff, note: str) -> RiskReview:
    source = _move(sess, review, decision, staff, note)
    actor = f"staff:{staff.id}"
    detail: dict[str, Any] = {"from": source.value, "to": review.state.value, "note": note, "subject": review.subject, "ref_id": review.ref_id}
    if review.held:
        if decision in ("release", "false_positive"):
            detail["points_moved"] = holds.release_hold(sess, review.subject, review.ref_id, actor=actor)
        elif decision == "reverse":
            detail["points_reversed"] = holds.reverse_held(sess, review.subject, review.ref_id, actor=actor)
        elif decision == "reopen":
            holds.reopen_hold(sess, review.subject, review.ref_id)
    if decision == "freeze":
        detail["distributor_id"] = _freeze(sess, review, staff, note)
    record_audit(sess, staff.id, f"risk_review.{decision}", f"risk_review:{review.id}", detail)
    sess.flush()
    return review
