"""What the console reads: dashboard figures, trends and queues, member search, the audit log.

Read-side only: these depend on the models and ``server.db``, never on services, and change nothing.
Days and periods are counted on the merchant's wall clock (China time).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from server import db
from server.accounts.models import AuditEntry, Member, MemberStatus, Staff
from server.clock import CHINA, local
from server.distribution.models import Distributor, DistributorStatus
from server.feedback.models import FeedbackItem, FeedbackState
from server.orders.models import Order, Refund, RefundStatus
from server.points.models import (
    MEMBER_KINDS,
    Account,
    AccountKind,
    Entry,
    LedgerTransaction,
    Redemption,
    RedemptionStatus,
)
from server.referral.models import Binding, Lead, LeadStatus, TouchEvent, TouchKind
from server.reports.models import DailyTotals, LedgerDaily, OrdersDaily
from server.risk.models import ReviewState, RiskReview

#: The dashboard's periods: key, days counted back including today, label.
#: Lists count their rows up to this many and then say "more than": an exact count of millions of
#: ledger entries or orders would cost seconds for a number nobody pages through.
COUNT_CAP = 10_000
PERIODS = (("today", 1, "今日"), ("7d", 7, "近 7 天"), ("30d", 30, "近 30 天"))


def day_start(day: date) -> datetime:
    """Midnight of a China-time day, as an aware datetime (compared with the UTC columns)."""
    return datetime.combine(day, time.min, tzinfo=CHINA)


def today(now: datetime | None = None) -> date:
    return local(now or db.utcnow()).date()


@dataclass(frozen=True)
class Figures:
    """What happened in one period. Money in fen, points in hundredths of a point."""

    new_members: int
    bindings: int
    leads: int
    orders: int
    paid_fen: int
    points_issued: int
    points_redeemed: int


def _count(sess: Session, column: Any, *where: ColumnElement[bool]) -> int:
    return int(sess.scalar(select(func.count()).select_from(column.table).where(*where)) or 0)


def period_figures(sess: Session, now: datetime | None = None) -> dict[str, Figures]:
    """Figures for today, the last 7 and the last 30 days (each including today): sums of the daily series
    ``trend`` draws, so the figures and the charts always agree. Past days come from the report rollups
    and today from the raw rows, so a large ledger costs the dashboard nothing."""
    longest = max(days for _, days, _ in PERIODS)
    series = trend(sess, longest, now, with_redeemed=True)
    return {
        key: Figures(**{name: sum(series[name][-days:]) for name in Figures.__dataclass_fields__})
        for key, days, _ in PERIODS
    }


def outstanding_points(sess: Session) -> dict[str, int]:
    """Points members hold now, by account (pending, matured, available, debt) and in all."""
    rows = sess.execute(
        select(Account.kind, func.coalesce(func.sum(Account.balance), 0)).where(Account.kind.in_(MEMBER_KINDS)).group_by(Account.kind)
    ).all()
    found = {kind.value: int(total) for kind, total in rows}
    result = {kind.value: found.get(kind.value, 0) for kind in MEMBER_KINDS}
    result["total"] = sum(result.values())
    return result


def _daily(sess: Session, column: Any, days: list[date], *where: ColumnElement[bool], value: Any = None) -> list[int]:
    """Per China-time day of ``days``: how many rows (or the sum of ``value``) have ``column`` in that day.

    One range scan of the period (an index on ``column`` serves it), grouped by the China-time day.
    """
    start, end = day_start(days[0]), day_start(days[-1] + timedelta(days=1))
    day = db.china_date(column)
    measure = func.count() if value is None else func.coalesce(func.sum(value), 0)
    rows = sess.execute(select(day, measure).select_from(column.table).where(column >= start, column < end, *where).group_by(day)).all()
    found = {str(key)[:10]: int(total or 0) for key, total in rows}
    return [found.get(d.isoformat(), 0) for d in days]


def _ledger_on(sess: Session, day: date, kind: AccountKind, *where: ColumnElement[bool]) -> int:
    """What the merchant's ``kind`` account moved in the transactions posted on ``day`` (as the ledger rollup
    counts): found from that day's transactions (the created_at index), not by walking the account's entries,
    which on a busy shop number millions."""
    account = select(Account.id).where(Account.kind == kind, Account.member_id.is_(None)).scalar_subquery()
    start, end = day_start(day), day_start(day + timedelta(days=1))
    total = sess.scalar(
        select(func.coalesce(func.sum(Entry.amount), 0))
        .select_from(LedgerTransaction)
        .join(Entry, Entry.transaction_id == LedgerTransaction.id)
        .where(LedgerTransaction.created_at >= start, LedgerTransaction.created_at < end, Entry.account_id == account, *where)
    )
    return int(total or 0)


def _rolled_up(sess: Session, days: list[date]) -> dict[str, dict[date, int]]:
    """The dashboard's series for ``days`` from the report rollups (days never rolled up are absent)."""
    found: dict[str, dict[date, int]] = {key: {} for key in ("new_members", "bindings", "leads", "orders", "paid_fen", "points_issued", "points_redeemed")}
    if not days:
        return found
    first, last = days[0], days[-1]
    totals = select(DailyTotals.day, DailyTotals.new_members, DailyTotals.bindings, DailyTotals.leads, DailyTotals.orders_created)
    for day, new_members, bindings, leads, orders in sess.execute(totals.where(DailyTotals.day >= first, DailyTotals.day <= last)):
        for key, value in (("new_members", new_members), ("bindings", bindings), ("leads", leads), ("orders", orders)):
            found[key][day] = int(value)
    paid = select(OrdersDaily.day, func.sum(OrdersDaily.paid_fen)).where(OrdersDaily.day >= first, OrdersDaily.day <= last).group_by(OrdersDaily.day)
    found["paid_fen"] = {day: int(total or 0) for day, total in sess.execute(paid)}
    issued = (
        select(LedgerDaily.day, func.sum(LedgerDaily.debits))
        .where(LedgerDaily.day >= first, LedgerDaily.day <= last, LedgerDaily.account_kind == AccountKind.issuance.value)
        .group_by(LedgerDaily.day)
    )
    found["points_issued"] = {day: -int(total or 0) for day, total in sess.execute(issued)}
    redeemed = (
        select(LedgerDaily.day, func.sum(LedgerDaily.credits + LedgerDaily.debits))
        .where(LedgerDaily.day >= first, LedgerDaily.day <= last, LedgerDaily.account_kind == AccountKind.redemption.value)
        .group_by(LedgerDaily.day)
    )
    found["points_redeemed"] = {day: int(total or 0) for day, total in sess.execute(redeemed)}
    return found


def trend(sess: Session, days: int, now: datetime | None = None, *, with_redeemed: bool = False) -> dict[str, Any]:
    """Daily series for the dashboard's charts over the last ``days`` days (including today).

    Past days come from the report rollups the scheduler keeps (``server.reports``); today is counted
    from the raw rows, so it is never behind.
    """
    last = today(now)
    dates = [last - timedelta(days=days - 1 - i) for i in range(days)]
    past = _rolled_up(sess, dates[:-1])
    live = {
        "new_members": _daily(sess, Member.created_at, [last]),
        "bindings": _daily(sess, TouchEvent.created_at, [last], TouchEvent.kind == TouchKind.bind),
        "leads": _daily(sess, Lead.created_at, [last]),
        "orders": _daily(sess, Order.created_at, [last]),
        "paid_fen": _daily(sess, Order.paid_at, [last], value=Order.paid_fee),
        "points_issued": [-_ledger_on(sess, last, AccountKind.issuance, Entry.amount < 0)],
    }
    if with_redeemed:
        # Spent points land in the redemption account; a cancelled redemption takes them back out.
        live["points_redeemed"] = [_ledger_on(sess, last, AccountKind.redemption)]
    series: dict[str, Any] = {"dates": [d.isoformat() for d in dates]}
    for key, today_value in live.items():
        series[key] = [past[key].get(d, 0) for d in dates[:-1]] + today_value
    return series


def queue_counts(sess: Session, now: datetime | None = None) -> dict[str, int]:
    """How much waits in each staff queue (the dashboard's to-do list)."""
    recent = (now or db.utcnow()) - timedelta(days=30)
    return {
        "applications": _count(sess, Distributor.id, Distributor.status == DistributorStatus.pending),
        "leads": _count(sess, Lead.id, Lead.status == LeadStatus.new),
        "refunds": _count(sess, Refund.id, Refund.status == RefundStatus.requested),
        "refunds_abnormal": _count(sess, Refund.id, Refund.status == RefundStatus.abnormal),
        "refunds_failed": _count(sess, Refund.id, Refund.status == RefundStatus.failed, Refund.created_at >= recent),
        "redemptions": _count(sess, Redemption.id, Redemption.status == RedemptionStatus.placed),
        "feedback": _count(sess, FeedbackItem.id, FeedbackItem.state == FeedbackState.new),
        # ix_risk_reviews_state: reviews still waiting for a decision on their rewards.
        "risk": _count(sess, RiskReview.id, RiskReview.state == ReviewState.open),
    }


# -- members ----------------------------------------------------------------------------------


def members_query(*, q: str | None, phone_digest: str | None, status: MemberStatus | None) -> Any:
    """Members matching a search: an id, an openid, a nickname, the end of a phone number, or (with
    ``phone_digest``) a whole phone number; newest first."""
    stmt = select(Member)
    if q:
        matches: list[ColumnElement[bool]] = [Member.nickname.contains(q, autoescape=True), Member.openid == q]
        if q.isdigit():
            if len(q) <= 18:
                matches.append(Member.id == int(q))
            matches.append(Member.phone_masked.endswith(q[-4:], autoescape=True) if len(q) <= 4 else Member.phone_masked == q)
        if phone_digest:
            matches.append(Member.phone_digest == phone_digest)
        stmt = stmt.where(or_(*matches))
    if status is not None:
        stmt = stmt.where(Member.status == status)
    return stmt


def inviters_of(sess: Session, member_ids: list[int]) -> dict[int, Member]:
    """Each member's inviter, for a list page."""
    if not member_ids:
        return {}
    rows = sess.execute(
        select(Binding.member_id, Member).join(Member, Member.id == Binding.inviter_id).where(Binding.member_id.in_(member_ids))
    ).all()
    return {member_id: inviter for member_id, inviter in rows}


@dataclass(frozen=True)
class Team:
    direct_total: int
    indirect_total: int
    direct: list[tuple[Member, Binding]]
    indirect: list[tuple[Member, Binding]]


def team(sess: Session, member_id: int, limit: int = 20) -> Team:
    """The member's direct (level 1) and indirect (level 2) invitees, newest first; nothing deeper exists."""

    def level(column: Any) -> tuple[int, list[tuple[Member, Binding]]]:
        total = _count(sess, Binding.member_id, column == member_id)
        rows = sess.execute(
            select(Member, Binding).join(Binding, Binding.member_id == Member.id).where(column == member_id)
            .order_by(Binding.bound_at.desc(), Member.id.desc()).limit(limit)
        ).all()
        return total, [(m, b) for m, b in rows]

    direct_total, direct = level(Binding.inviter_id)
    indirect_total, indirect = level(Binding.upline_id)
    return Team(direct_total, indirect_total, direct, indirect)


def member_orders(sess: Session, member_id: int, limit: int = 20) -> tuple[list[Order], int]:
    stmt = select(Order).where(Order.member_id == member_id)
    return db.paginate(sess, stmt, offset=0, limit=limit, order_by=(Order.id.desc(),), count_cap=COUNT_CAP)


def member_balances(sess: Session, member_id: int) -> dict[str, int]:
    rows = sess.execute(select(Account.kind, Account.balance).where(Account.member_id == member_id)).all()
    found = {kind.value: int(balance) for kind, balance in rows}
    return {kind.value: found.get(kind.value, 0) for kind in MEMBER_KINDS}


def member_entries(sess: Session, member_id: int, limit: int = 20) -> tuple[list[tuple[Entry, AccountKind, LedgerTransaction]], int]:
    """The member's latest ledger entries, with the account each moved and the transaction it belongs to,
    and how many there are (counted up to ``COUNT_CAP``).

    A member has at most four accounts: the latest ``limit`` entries of each come from the (account, id)
    index, and the newest of those are the page, however many entries a busy sharer has.
    """
    account_ids = list(sess.scalars(select(Account.id).where(Account.member_id == member_id)))
    if not account_ids:
        return [], 0
    newest: list[int] = []
    for account_id in account_ids:
        newest += sess.scalars(select(Entry.id).where(Entry.account_id == account_id).order_by(Entry.id.desc()).limit(limit))
    page = sorted(newest, reverse=True)[:limit]
    rows = sess.execute(
        select(Entry, Account.kind, LedgerTransaction)
        .join(Account, Account.id == Entry.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == Entry.transaction_id)
        .where(Entry.id.in_(page))
        .order_by(Entry.id.desc())
    ).all()
    total = db.count(sess, select(Entry.id).where(Entry.account_id.in_(account_ids)), cap=COUNT_CAP)
    return [(entry, kind, tx) for entry, kind, tx in rows], total


def member_timeline(sess: Session, member_id: int, limit: int = 50) -> list[TouchEvent]:
    """The member's latest touches (scan, sign-in, bind, lead, order …), newest first."""
    stmt = select(TouchEvent).where(TouchEvent.member_id == member_id).order_by(TouchEvent.created_at.desc(), TouchEvent.id.desc())
    return list(sess.scalars(stmt.limit(limit)))


def member_leads(sess: Session, member_id: int) -> list[Lead]:
    return list(sess.scalars(select(Lead).where(Lead.member_id == member_id).order_by(Lead.id.desc()).limit(20)))


def distributor_of(sess: Session, member_id: int) -> Distributor | None:
    return sess.scalar(select(Distributor).where(Distributor.member_id == member_id))


# -- the audit log ----------------------------------------------------------------------------


def audit_query(
    *, staff_id: int | None, from_cli: bool, action: str | None, target: str | None, start: datetime | None, end: datetime | None
) -> Any:
    """Audit entries matching the filters, as (entry, staff or None) rows; ``action`` and ``target``
    match from the start (``member`` finds ``member.enable``; ``member:42`` one member)."""
    stmt = select(AuditEntry, Staff).outerjoin(Staff, Staff.id == AuditEntry.staff_id)
    if from_cli:
        stmt = stmt.where(AuditEntry.staff_id.is_(None))
    elif staff_id is not None:
        stmt = stmt.where(AuditEntry.staff_id == staff_id)
    if action:
        stmt = stmt.where(AuditEntry.action.startswith(action, autoescape=True))
    if target:
        exact = ":" in target
        stmt = stmt.where(AuditEntry.target == target if exact else AuditEntry.target.startswith(target, autoescape=True))
    if start is not None:
        stmt = stmt.where(AuditEntry.created_at >= start)
    if end is not None:
        stmt = stmt.where(AuditEntry.created_at < end)
    return stmt


def staff_names(sess: Session) -> list[Staff]:
    return list(sess.scalars(select(Staff).order_by(Staff.id)))


def audit_of(sess: Session, target: str, limit: int = 20) -> list[tuple[AuditEntry, Staff | None]]:
    stmt = audit_query(staff_id=None, from_cli=False, action=None, target=target, start=None, end=None)
    return [(entry, staff) for entry, staff in sess.execute(stmt.order_by(AuditEntry.id.desc()).limit(limit)).all()]
