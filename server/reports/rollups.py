"""Keeping the rollup tables: one China-time day at a time, from the raw rows.

``refresh_day`` deletes a day's rows from every rollup table and inserts them again with one
``INSERT … SELECT … GROUP BY`` per table, so it is idempotent and can run any number of times;
``refresh_days`` then sums the months those days fall in again into the monthly tables.
The scheduler refreshes today and yesterday every ten minutes, and with them every past day whose
raw rows changed since its previous run (``days_to_refresh``): an order paid late or refunded
(``orders.updated_at``) changes its paid day, a lead reviewed later changes its created day.
Touch events, ledger entries and new members are only ever added with the current time, so they
never change a past day.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any, Callable, Iterable

from sqlalchemy import ColumnElement, Date, and_, case, delete, distinct, func, insert, literal, or_, select, union_all
from sqlalchemy.orm import Session, aliased

from server.accounts.models import Member
from server.clock import CHINA, local
from server.db import china_date, int_div
from server.orders.models import Order, OrderItem
from server.points.models import Account, AccountKind, Entry, JobClaim, LedgerTransaction
from server.referral.models import Channel, Lead, LeadStatus, TouchEvent, TouchKind
from server.reports.models import (
    MONTHLY_TABLES,
    ROLLUP_TABLES,
    DailyTotals,
    FunnelChannelDaily,
    FunnelDaily,
    FunnelMonthly,
    LedgerDaily,
    MemberDaily,
    MemberMonthly,
    OrdersDaily,
    ProductDaily,
    RegionDaily,
)

#: The scheduler job's name (its JobClaim rows), and how far before its previous run it looks for changed rows:
#: a transaction that stamped ``updated_at`` before that run but committed after it is still found.
JOB = "report-rollups"
OVERLAP = timedelta(minutes=10)
#: With no previous run to go by, changes this far back are looked for.
FIRST_RUN_LOOKBACK = timedelta(days=2)
#: The funnel's steps, in order, and the touch kinds each counts.
FUNNEL_STEPS: tuple[tuple[str, tuple[TouchKind, ...]], ...] = (
    ("visits", (TouchKind.visit, TouchKind.scan)),
    ("sign_ins", (TouchKind.sign_in,)),
    ("bindings", (TouchKind.bind,)),
    ("leads", (TouchKind.lead,)),
    ("orders", (TouchKind.order,)),
    ("paid", (TouchKind.paid,)),
    ("completed", (TouchKind.completed,)),
)
STEP_NAMES = tuple(step for step, _ in FUNNEL_STEPS)
#: Channels a scene touch has: the events the funnel credits others to.
SCENE_CHANNELS = tuple(channel.value for channel in Channel)
#: The channel of an event no scene touch came before.
DIRECT = "direct"
VIEWS = ("first", "last")


def day_start(day: date) -> datetime:
    """Midnight at the start of a China-time day, aware (compared with UTC columns)."""
    return datetime.combine(day, time.min, tzinfo=CHINA)


def _on(column: Any, day: date) -> list[ColumnElement[bool]]:
    """``column`` falls on the China-time ``day``: a range, so the column's index serves it."""
    return [column >= day_start(day), column < day_start(day + timedelta(days=1))]


def _day(day: date) -> Any:
    return literal(day, Date)


def _text(value: Any, length: int) -> Any:
    """A JSON text value cut to a rollup column's length, "" when missing."""
    return func.substr(func.coalesce(value, ""), 1, length)


def _daily_totals(day: date) -> Any:
    def count(column: Any, *where: ColumnElement[bool]) -> Any:
        return select(func.count()).select_from(column.table).where(*_on(column, day), *where).scalar_subquery()

    return insert(DailyTotals).from_select(
        ["day", "new_members", "bindings", "leads", "valid_leads", "orders_created"],
        select(
            _day(day),
            count(Member.created_at),
            count(TouchEvent.created_at, TouchEvent.kind == TouchKind.bind),
            count(Lead.created_at),
            count(Lead.created_at, Lead.status == LeadStatus.valid),
            count(Order.created_at),
        ),
    )


def _orders_daily(day: date) -> Any:
    return insert(OrdersDaily).from_select(
        ["day", "kind", "repeat_business", "orders", "paid_fen", "refunded_fen"],
        select(_day(day), Order.kind, Order.repeat_business, func.count(), func.sum(Order.paid_fee), func.sum(Order.refunded_fee))
        .where(*_on(Order.paid_at, day))
        .group_by(Order.kind, Order.repeat_business),
    )


def _funnel_daily(day: date, view: str) -> Any:
    event = aliased(TouchEvent, name="e")
    touch = aliased(TouchEvent, name="t")
    source = aliased(TouchEvent, name="s")
    first = view == "first"
    # A member's scene touch at or before the event: the earliest for first touch, the latest for last touch.
    # Written as a range on created_at (then the same-second tie by id), so the (member, created_at) index
    # reads the member's touches from the event backwards (or from the first) and stops at the first match.
    before = and_(touch.created_at <= event.created_at, or_(touch.created_at < event.created_at, touch.id <= event.id))
    order = (touch.created_at.asc(), touch.id.asc()) if first else (touch.created_at.desc(), touch.id.desc())
    credited = (
        select(touch.id)
        .where(touch.member_id == event.member_id, touch.channel.in_(SCENE_CHANNELS), before)
        .order_by(*order)
        .limit(1)
        .scalar_subquery()
    )
    # An anonymous visit has no member to look back through: it is credited to its own scene, if any.
    own = case((event.channel.in_(SCENE_CHANNELS), event.id), else_=None)
    kinds = [kind for _, group in FUNNEL_STEPS for kind in group]
    events = (
        select(event.kind.label("kind"), case((event.member_id.is_(None), own), else_=credited).label("source_id"))
        .where(*_on(event.created_at, day), event.kind.in_(kinds))
        .subquery("x")
    )
    # Named in a derived table first, so the grouping names columns rather than repeating expressions.
    credited_rows = (
        select(
            func.coalesce(source.channel, DIRECT).label("channel"),
            func.coalesce(source.content, "").label("content"),
            events.c.kind,
        )
        .select_from(events.outerjoin(source, source.id == events.c.source_id))
        .subquery("y")
    )
    c = credited_rows.c
    counts = [func.sum(case((c.kind.in_(kinds), 1), else_=0)) for _, kinds in FUNNEL_STEPS]
    return insert(FunnelDaily).from_select(
        ["day", "view", "channel", "content", *STEP_NAMES],
        select(_day(day), literal(view), c.channel, c.content, *counts).group_by(c.channel, c.content),
    )


def _funnel_channel_daily(day: date) -> Any:
    f = FunnelDaily
    return insert(FunnelChannelDaily).from_select(
        ["day", "view", "channel", *STEP_NAMES],
        select(f.day, f.view, f.channel, *[func.sum(getattr(f, step)) for step in STEP_NAMES]).where(f.day == day).group_by(f.day, f.view, f.channel),
    )


def _issued_and_redeemed(day: date) -> Any:
    """Per member of the day's transactions: hundredths issued to them, and spent by them."""
    member = LedgerTransaction.member_id
    issued = case((and_(Account.kind == AccountKind.issuance, Entry.amount < 0), -Entry.amount), else_=0)
    redeemed = case((Account.kind == AccountKind.redemption, Entry.amount), else_=0)
    return (
        select(member.label("member_id"), func.sum(issued).label("earned"), func.sum(redeemed).label("redeemed"))
        .select_from(LedgerTransaction)
        .join(Entry, Entry.transaction_id == LedgerTransaction.id)
        .join(Account, Account.id == Entry.account_id)
        .where(*_on(LedgerTransaction.created_at, day), member.is_not(None))
        .group_by(member)
    )


def _member_daily(day: date) -> Any:
    zero = literal(0)
    sales = (
        select(Order.inviter_id.label("member_id"), func.count().label("orders"), func.sum(Order.paid_fee - Order.refunded_fee).label("sales_fen"),
               zero.label("leads"), zero.label("valid_leads"), zero.label("points_earned"), zero.label("points_redeemed"))
        .where(*_on(Order.paid_at, day), Order.inviter_id.is_not(None))
        .group_by(Order.inviter_id)
    )
    leads = (
        select(Lead.sharer_id, zero, zero, func.count(), func.sum(case((Lead.status == LeadStatus.valid, 1), else_=0)), zero, zero)
        .where(*_on(Lead.created_at, day), Lead.sharer_id.is_not(None))
        .group_by(Lead.sharer_id)
    )
    ledger = _issued_and_redeemed(day).subquery("p")
    points = select(ledger.c.member_id, zero, zero, zero, zero, ledger.c.earned, ledger.c.redeemed)
    parts = union_all(sales, leads, points).subquery("u")
    c = parts.c
    totals = [func.sum(c.orders), func.sum(c.sales_fen), func.sum(c.leads), func.sum(c.valid_leads), func.sum(c.points_earned), func.sum(c.points_redeemed)]
    return insert(MemberDaily).from_select(
        ["day", "member_id", "orders", "sales_fen", "leads", "valid_leads", "points_earned", "points_redeemed"],
        select(_day(day), c.member_id, *totals).group_by(c.member_id).having(or_(*[total != 0 for total in totals])),
    )


def _region_daily(day: date) -> Any:
    paid = (
        select(
            _text(Order.address["province"].as_string(), 64).label("province"),
            _text(Order.address["city"].as_string(), 64).label("city"),
            Order.paid_fee,
            Order.refunded_fee,
        )
        .where(*_on(Order.paid_at, day))
        .subquery("o")
    )
    c = paid.c
    return insert(RegionDaily).from_select(
        ["day", "province", "city", "orders", "paid_fen", "refunded_fen"],
        select(_day(day), c.province, c.city, func.count(), func.sum(c.paid_fee), func.sum(c.refunded_fee)).group_by(c.province, c.city),
    )


def _product_daily(day: date) -> Any:
    gross = OrderItem.price_fen * OrderItem.quantity
    # The order's refund shared over its lines by their part of the order's total, floored to the fen.
    refunded = int_div(Order.refunded_fee * gross, Order.total_fee)
    referred = Order.inviter_id.is_not(None)
    return insert(ProductDaily).from_select(
        ["day", "sku_id", "product_id", "orders", "units", "gross_fen", "refunded_fen", "referral_gross_fen", "referral_refunded_fen"],
        select(
            _day(day),
            OrderItem.sku_id,
            func.min(OrderItem.product_id),
            func.count(distinct(OrderItem.order_id)),
            func.sum(OrderItem.quantity),
            func.sum(gross),
            func.sum(refunded),
            func.sum(case((referred, gross), else_=0)),
            func.sum(case((referred, refunded), else_=0)),
        )
        .select_from(Order)
        .join(OrderItem, OrderItem.order_id == Order.id)
        .where(*_on(Order.paid_at, day))
        .group_by(OrderItem.sku_id),
    )


def _ledger_daily(day: date) -> Any:
    return insert(LedgerDaily).from_select(
        ["day", "account_kind", "tx_kind", "credits", "debits"],
        select(
            _day(day),
            Account.kind,
            LedgerTransaction.kind,
            func.sum(case((Entry.amount > 0, Entry.amount), else_=0)),
            func.sum(case((Entry.amount < 0, Entry.amount), else_=0)),
        )
        .select_from(LedgerTransaction)
        .join(Entry, Entry.transaction_id == LedgerTransaction.id)
        .join(Account, Account.id == Entry.account_id)
        .where(*_on(LedgerTransaction.created_at, day))
        .group_by(Account.kind, LedgerTransaction.kind),
    )


def refresh_day(sess: Session, day: date) -> None:
    """Recompute every rollup table's rows of the China-time ``day`` from the raw rows (only flushes)."""
    for table in ROLLUP_TABLES:
        sess.execute(delete(table).where(table.day == day))
    for statement in (
        _daily_totals(day),
        _orders_daily(day),
        _funnel_daily(day, "first"),
        _funnel_daily(day, "last"),
        _funnel_channel_daily(day),
        _member_daily(day),
        _region_daily(day),
        _product_daily(day),
        _ledger_daily(day),
    ):
        sess.execute(statement)


def month_of(day: date) -> date:
    """The first day of ``day``'s calendar month."""
    return day.replace(day=1)


def month_end(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


_MONTHLY_KEYS = {FunnelMonthly: ("view", "channel", "content"), MemberMonthly: ("member_id",)}
_MONTHLY_SUMS = {FunnelMonthly: STEP_NAMES, MemberMonthly: ("orders", "sales_fen", "leads", "valid_leads", "points_earned", "points_redeemed")}


def refresh_month(sess: Session, month: date) -> None:
    """Sum the monthly tables' rows of ``month`` (its first day) again from the daily rows (only flushes)."""
    for monthly, daily in MONTHLY_TABLES:
        sess.execute(delete(monthly).where(monthly.month == month))
        keys = [getattr(daily, key) for key in _MONTHLY_KEYS[monthly]]
        sums = [func.sum(getattr(daily, name)) for name in _MONTHLY_SUMS[monthly]]
        sess.execute(
            insert(monthly).from_select(
                ["month", *_MONTHLY_KEYS[monthly], *_MONTHLY_SUMS[monthly]],
                select(_day(month), *keys, *sums).where(daily.day >= month, daily.day <= month_end(month)).group_by(*keys),
            )
        )


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def changed_days(sess: Session, since: datetime) -> set[date]:
    """Past days whose rollups rows changed since ``since``: the paid and created days of orders updated
    since then (late payments, refunds), the created days of leads reviewed since then."""
    queries = [
        select(china_date(Order.paid_at)).where(Order.updated_at >= since, Order.paid_at.is_not(None)).distinct(),
        select(china_date(Order.created_at)).where(Order.updated_at >= since).distinct(),
        select(china_date(Lead.created_at)).where(Lead.reviewed_at >= since).distinct(),
    ]
    return {_as_date(value) for query in queries for value in sess.scalars(query) if value is not None}


def previous_run(sess: Session) -> datetime | None:
    """When the latest finished rollup job started, if any."""
    return sess.scalar(select(func.max(JobClaim.claimed_at)).where(JobClaim.job == JOB, JobClaim.finished_at.is_not(None)))


def days_to_refresh(sess: Session, now: datetime) -> list[date]:
    """Today, yesterday (China time) and every day changed since shortly before the previous run."""
    last = previous_run(sess)
    since = (last - OVERLAP) if last is not None else now - FIRST_RUN_LOOKBACK
    today = local(now).date()
    days = {today, today - timedelta(days=1)} | changed_days(sess, since)
    return sorted(day for day in days if day <= today)


def data_start(sess: Session) -> date | None:
    """The first China-time day any raw row the rollups read was written on."""
    firsts = [
        sess.scalar(select(func.min(column)))
        for column in (Member.created_at, TouchEvent.created_at, Lead.created_at, Order.created_at, Order.paid_at, LedgerTransaction.created_at)
    ]
    found = [local(value).date() for value in firsts if value is not None]
    return min(found) if found else None


def refresh_days(sess: Session, days: Iterable[date], *, after_each: Callable[[date], None] | None = None) -> int:
    """Refresh each of ``days``, then the months they fall in; ``after_each`` (a commit, a progress bar) runs
    after every day. The number of days."""
    count, months = 0, set()
    for day in days:
        refresh_day(sess, day)
        months.add(month_of(day))
        count += 1
        if after_each is not None:
            after_each(day)
    for month in sorted(months):
        refresh_month(sess, month)
    return count
