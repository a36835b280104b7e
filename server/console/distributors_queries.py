"""Read-side figures of the distributor pages: a page of distributors' own sales and points, grade holders."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.distribution.models import Distributor, DistributorStatus, Grade
from server.orders import queries as order_queries
from server.points.models import Account, AccountKind


def own_sales(sess: Session, member_ids: list[int]) -> dict[int, int]:
    """Each distributor's own attributed sales in fen (what grades follow), one grouped query."""
    return order_queries.sales_by_inviters(sess, member_ids)


def available_points(sess: Session, member_ids: list[int]) -> dict[int, int]:
    """Each member's available points (hundredths), by the ledger's member-and-kind key."""
    if not member_ids:
        return {}
    rows = sess.execute(
        select(Account.member_id, Account.balance).where(Account.member_id.in_(member_ids), Account.kind == AccountKind.available)
    ).all()
    return {int(member_id): int(balance) for member_id, balance in rows if member_id is not None}


def grade_names(sess: Session) -> dict[int, str]:
    return {grade_id: name for grade_id, name in sess.execute(select(Grade.id, Grade.name)).all()}


def grade_holders(sess: Session) -> dict[int, int]:
    """How many distributors hold each grade (a grade with holders cannot be deleted)."""
    rows = sess.execute(
        select(Distributor.grade_id, func.count()).where(Distributor.grade_id.is_not(None)).group_by(Distributor.grade_id)
    ).all()
    return {int(grade_id): int(count) for grade_id, count in rows if grade_id is not None}


def pending_count(sess: Session) -> int:
    """Applications waiting for staff (the status-and-tier index answers it)."""
    return int(sess.scalar(select(func.count()).select_from(Distributor).where(Distributor.status == DistributorStatus.pending)) or 0)
