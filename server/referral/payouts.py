"""Paying partner channels: finance marks the commission lines of a period paid, once.

A period is [start, end) and must be over. Marking it paid makes one ``PartnerPayout`` holding the
period's unpaid lines (a line paid in an earlier, overlapping period stays with that payout); marking
the same period again answers the same payout and writes nothing, so a retried request pays nothing
twice. The partner's row is locked first, so two clerks marking periods of one partner go one at a time.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.accounts.services import record_audit
from server.db import rowcount, utcnow
from server.errors import ConflictError, ValidationError
from server.referral.errors import NothingToPayError, PartnerNotFoundError
from server.referral.models import Partner, PartnerCommission, PartnerPayout


def _period_problem(start: datetime, end: datetime) -> str | None:
    if start >= end:
        return "the period must end after it starts"
    if end > utcnow():
        return "the period has not ended yet"
    return None


def _existing(sess: Session, partner_id: int, start: datetime, end: datetime) -> PartnerPayout | None:
    return sess.scalar(
        select(PartnerPayout)
        .where(PartnerPayout.partner_id == partner_id, PartnerPayout.period_start == start, PartnerPayout.period_end == end)
        .with_for_update()
    )


def mark_period_paid(sess: Session, partner_id: int, start: datetime, end: datetime, *, staff_id: int, reference: str = "") -> tuple[PartnerPayout, bool]:
    """Mark the partner's unpaid commission lines of [start, end) paid; (the payout, whether this call made it).

    Audited as ``staff_id``'s ``partner.payout``. A period with nothing unpaid is refused (NothingToPayError).
    """
    start, end = start.replace(microsecond=0), end.replace(microsecond=0)
    if (problem := _period_problem(start, end)) is not None:
        raise ValidationError(data={"errors": [{"field": "to", "error": problem}]})
    partner = sess.get(Partner, partner_id, with_for_update=True)
    if partner is None:
        raise PartnerNotFoundError()
    if (existing := _existing(sess, partner.id, start, end)) is not None:
        return existing, False
    lines = sess.scalars(
        select(PartnerCommission)
        .where(
            PartnerCommission.partner_id == partner.id,
            PartnerCommission.created_at >= start,
            PartnerCommission.created_at < end,
            PartnerCommission.payout_id.is_(None),
        )
        .with_for_update()
    ).all()
    if not lines:
        raise NothingToPayError(data={"from": start.isoformat(), "to": end.isoformat()})
    payout = PartnerPayout(
        partner_id=partner.id,
        period_start=start,
        period_end=end,
        lines=len(lines),
        total_fen=sum(line.amount_fen for line in lines),
        reference=reference,
        paid_by=staff_id,
    )
    try:
        with sess.begin_nested():
            sess.add(payout)
    except IntegrityError:
        # The same period was paid by a request that did not wait for the partner's lock (it cannot, but be sure).
        found = _existing(sess, partner.id, start, end)
        if found is None:
            raise
        return found, False
    ids = [line.id for line in lines]
    claimed = sess.execute(
        update(PartnerCommission)
        .where(PartnerCommission.id.in_(ids), PartnerCommission.payout_id.is_(None))
        .values(payout_id=payout.id)
        .execution_options(synchronize_session=False)
    )
    if rowcount(claimed) != len(ids):
        raise ConflictError("some of the period's lines were paid meanwhile; try again")
    for line in lines:
        sess.refresh(line)
    record_audit(
        sess,
        staff_id,
        "partner.payout",
        f"partner:{partner.id}",
        {"payout_id": payout.id, "from": start.isoformat(), "to": end.isoformat(), "lines": payout.lines, "total_fen": payout.total_fen, "reference": reference},
    )
    return payout, True


def payouts_of(sess: Session, partner_id: int, *, offset: int = 0, limit: int = 100) -> list[PartnerPayout]:
    """The partner's payouts, newest period first."""
    return list(
        sess.scalars(
            select(PartnerPayout)
            .where(PartnerPayout.partner_id == partner_id)
            .order_by(PartnerPayout.period_end.desc(), PartnerPayout.id.desc())
            .offset(offset)
            .limit(limit)
        )
    )
