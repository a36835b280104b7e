"""The reports: plain functions of a session and a period that sum the daily rollups.

Every function returns plain rows (dicts) that the admin API serializes and the console can show; each
report's ``*_COLUMNS`` describes those rows for CSV and XLSX export (``server.exports``). Money is in fen,
points in hundredths of a point, rates in basis points (10,000 = 100%), each a floor, None when the base
is zero. Days are China-time days; a period is inclusive at both ends.

What cannot be summed from days is read another way: the days since a distributor's last sale along the
member rollup's (member, day) key, the cohorts from each new distributor's sale days, the
outstanding points from the ledger's cached balances.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, func, or_, select, union_all
from sqlalchemy.orm import Session

from server.accounts.models import Member
from server.clock import local
from server.db import int_div, utcnow
from server.distribution.models import Distributor, Grade
from server.exports import Column
from server.orders.models import OrderKind, Product, Sku
from server.points.models import Account, AccountKind, MEMBER_KINDS
from server.reports.models import (
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
from server.reports.rollups import FUNNEL_STEPS, day_start, month_end, month_of

#: The longest period a report covers.
MAX_DAYS = 366
#: Days a report covers when its start is not given (the API's and the console's).
DEFAULT_DAYS = 30
#: The new-distributor cohort windows: active in the 30 days ending this many days after joining.
COHORT_DAYS = (30, 60, 90)


@dataclass(frozen=True)
class Period:
    """China-time days ``start`` to ``end``, both included."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __contains__(self, day: date) -> bool:
        return self.start <= day <= self.end


def rate_bp(part: int, whole: int) -> int | None:
    """``part`` as basis points of ``whole``, floored; None when ``whole`` is zero."""
    return part * 10_000 // whole if whole else None


def _within(column: Any, period: Period) -> list[ColumnElement[bool]]:
    return [column >= period.start, column <= period.end]


def _int(value: Any) -> int:
    return int(value or 0)


# -- channel funnel -----------------------------------------------------------------------------

STEPS = tuple(step for step, _ in FUNNEL_STEPS)
View = Literal["first", "last"]
FunnelBy = Literal["channel", "content"]

FUNNEL_COLUMNS = [
    Column("channel", "渠道", width=20),
    Column("content", "内容", width=24),
    Column("visits", "访问/扫码", "int"),
    Column("sign_ins", "登录", "int"),
    Column("sign_ins_rate_bp", "登录转化", "percent_bp"),
    Column("bindings", "绑定", "int"),
    Column("bindings_rate_bp", "绑定转化", "percent_bp"),
    Column("leads", "线索", "int"),
    Column("leads_rate_bp", "线索转化", "percent_bp"),
    Column("orders", "下单", "int"),
    Column("orders_rate_bp", "下单转化", "percent_bp"),
    Column("paid", "支付", "int"),
    Column("paid_rate_bp", "支付转化", "percent_bp"),
    Column("completed", "完成", "int"),
    Column("completed_rate_bp", "完成转化", "percent_bp"),
]


def funnel_row(channel: str, content: str | None, counts: dict[str, int]) -> dict[str, Any]:
    """One funnel row: each step's events and its conversion from the step before."""
    row: dict[str, Any] = {"channel": channel, "content": content}
    previous: int | None = None
    for step in STEPS:
        row[step] = counts.get(step, 0)
        if previous is not None:
            row[f"{step}_rate_bp"] = rate_bp(row[step], previous)
        previous = row[step]
    return row


def spans(period: Period) -> tuple[tuple[date, date] | None, list[tuple[date, date]]]:
    """``period`` as the whole calendar months inside it (first and last month, or None) and the days left
    at its ends: a long period reads the monthly rollups and the daily ones only for partial months."""
    months: list[date] = []
    edges: list[tuple[date, date]] = []
    cursor = period.start
    while cursor <= period.end:
        month = month_of(cursor)
        last = month_end(month)
        if cursor == month and last <= period.end:
            months.append(month)
        else:
            edges.append((cursor, min(last, period.end)))
        cursor = min(last, period.end) + timedelta(days=1)
    return ((months[0], months[-1]) if months else None), edges


def _summed(monthly: Any, daily: Any, period: Period, keys: tuple[str, ...], values: tuple[str, ...], *where: Any) -> Any:
    """Rows of (keys, values) covering ``period`` once: whole months from ``monthly``, the rest from ``daily``;
    ``where`` (a function of the table) narrows both. A subquery to group by the keys."""
    months, edges = spans(period)
    parts = []
    for table, within in (
        (monthly, [and_(monthly.month >= months[0], monthly.month <= months[1])] if months else None),
        (daily, [or_(*[and_(daily.day >= first, daily.day <= last) for first, last in edges])] if edges else None),
    ):
        if within is not None:
            columns = [getattr(table, name).label(name) for name in keys + values]
            parts.append(select(*columns).where(*within, *[condition(table) for condition in where]))
    return (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("spans")


def funnel(sess: Session, period: Period, *, view: View = "last", by: FunnelBy = "channel", channel: str | None = None) -> list[dict[str, Any]]:
    """Funnel steps per channel (or per channel and content item) over ``period``, busiest first."""
    where = [lambda t: t.view == view] + ([lambda t: t.channel == channel] if channel is not None else [])
    if by == "content":
        rows: Any = _summed(FunnelMonthly, FunnelDaily, period, ("channel", "content"), STEPS, *where)
        keys = [rows.c.channel, rows.c.content]
    else:
        # Per channel, the table without content items: a few rows a day however many items are shared.
        rows = select(FunnelChannelDaily).where(*_within(FunnelChannelDaily.day, period), *[condition(FunnelChannelDaily) for condition in where]).subquery("days")
        keys = [rows.c.channel]
    stmt = select(*keys, *[func.sum(rows.c[step]) for step in STEPS]).group_by(*keys)
    found = []
    for row in sess.execute(stmt):
        content = row[1] if by == "content" else None
        found.append(funnel_row(row[0], content, {step: _int(value) for step, value in zip(STEPS, row[len(keys):])}))
    found.sort(key=lambda r: (-r["visits"], -r["orders"], r["channel"], r["content"] or ""))
    return found


# -- distributors -------------------------------------------------------------------------------

DistributorSort = Literal["sales_fen", "orders", "leads", "valid_leads", "conversion_bp", "points_earned", "points_redeemed", "days_since_last_sale"]

DISTRIBUTOR_COLUMNS = [
    Column("member_id", "会员 ID", "int"),
    Column("nickname", "昵称"),
    Column("real_name", "姓名"),
    Column("status", "状态"),
    Column("tier", "级别", "int"),
    Column("grade", "等级"),
    Column("sales_fen", "自有业绩", "fen"),
    Column("orders", "订单", "int"),
    Column("leads", "线索", "int"),
    Column("valid_leads", "有效线索", "int"),
    Column("conversion_bp", "转化（订单/线索）", "percent_bp"),
    Column("points_earned", "获得积分", "points"),
    Column("points_redeemed", "兑换积分", "points"),
    Column("last_sale_day", "最近成交日", "date"),
    Column("days_since_last_sale", "距最近成交天数", "int"),
]


MEMBER_FIGURES = ("orders", "sales_fen", "leads", "valid_leads", "points_earned", "points_redeemed")


def _distributor_sums(period: Period) -> Any:
    """Each distributor's own figures summed over ``period``: whole months from the monthly rollup, the rest
    from the daily one, each read along the distributor's (member, …) key, so other members cost nothing."""
    distributor_ids = select(Distributor.member_id)
    rows = _summed(MemberMonthly, MemberDaily, period, ("member_id",), MEMBER_FIGURES, lambda t: t.member_id.in_(distributor_ids))
    return select(rows.c.member_id, *[func.sum(rows.c[name]).label(name) for name in MEMBER_FIGURES]).group_by(rows.c.member_id).subquery("sums")


def _last_sale(end: date) -> Any:
    """The distributor's latest day with an attributed paid order up to ``end``: read backwards along their key."""
    return (
        select(func.max(MemberDaily.day))
        .where(MemberDaily.member_id == Distributor.member_id, MemberDaily.day <= end, MemberDaily.orders > 0)
        .scalar_subquery()
    )


def distributors(
    sess: Session,
    period: Period,
    *,
    sort: DistributorSort = "sales_fen",
    descending: bool = True,
    offset: int = 0,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Every distributor (any status) with their own attributed figures over ``period``; one page of them, sorted, and how many in all.

    Ties go to the lower member id. "Days since last sale" counts to the period's last day; a distributor
    who never sold has None and sorts last either way.
    """
    sums = _distributor_sums(period)
    last_day = _last_sale(period.end).label("last_sale_day")
    figures = {name: func.coalesce(sums.c[name], 0) for name in ("orders", "sales_fen", "leads", "valid_leads", "points_earned", "points_redeemed")}
    conversion = case((figures["leads"] > 0, int_div(figures["orders"] * 10_000, figures["leads"])), else_=None)
    stmt = (
        select(Distributor, Member.nickname, Grade.name, last_day, conversion.label("conversion_bp"), *[v.label(k) for k, v in figures.items()])
        .join(Member, Member.id == Distributor.member_id)
        .outerjoin(Grade, Grade.id == Distributor.grade_id)
        .outerjoin(sums, sums.c.member_id == Distributor.member_id)
    )
    if sort == "days_since_last_sale":
        # Fewer days since the last sale is a later last sale.
        key: Any = last_day
        order = [key.is_(None), key.asc() if descending else key.desc()]
    else:
        key = conversion if sort == "conversion_bp" else figures[sort]
        order = [key.is_(None), key.desc() if descending else key.asc()]
    stmt = stmt.order_by(*order, Distributor.member_id.asc()).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    total = _int(sess.scalar(select(func.count()).select_from(Distributor)))
    rows = []
    for dist, nickname, grade, sold_on, conversion_bp, *values in sess.execute(stmt):
        last_sale = _as_date(sold_on)
        rows.append(
            {
                "member_id": dist.member_id,
                "nickname": nickname,
                "real_name": dist.real_name,
                "status": dist.status.value,
                "tier": dist.tier,
                "grade": grade,
                **{name: _int(value) for name, value in zip(figures, values)},
                "conversion_bp": None if conversion_bp is None else int(conversion_bp),
                "last_sale_day": last_sale,
                "days_since_last_sale": (period.end - last_sale).days if last_sale else None,
            }
        )
    return rows, total


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


TREND_COLUMNS = [
    Column("month", "月份", width=10),
    Column("sales_fen", "自有业绩", "fen"),
    Column("orders", "订单", "int"),
    Column("leads", "线索", "int"),
    Column("valid_leads", "有效线索", "int"),
    Column("points_earned", "获得积分", "points"),
    Column("points_redeemed", "兑换积分", "points"),
]


def months_of(period: Period) -> list[str]:
    """The calendar months ``period`` touches, as "YYYY-MM"."""
    months, day = [], period.start.replace(day=1)
    while day <= period.end:
        months.append(f"{day:%Y-%m}")
        day = (day + timedelta(days=32)).replace(day=1)
    return months


def distributor_trend(sess: Session, member_id: int, period: Period) -> list[dict[str, Any]]:
    """One member's own figures per calendar month of ``period`` (months cut to the period), every month listed."""
    m = MemberDaily
    stmt = select(m.day, m.orders, m.sales_fen, m.leads, m.valid_leads, m.points_earned, m.points_redeemed).where(
        m.member_id == member_id, *_within(m.day, period)
    )
    names = ("orders", "sales_fen", "leads", "valid_leads", "points_earned", "points_redeemed")
    months: dict[str, dict[str, Any]] = {month: {"month": month, **{name: 0 for name in names}} for month in months_of(period)}
    for day, *values in sess.execute(stmt):
        row = months[f"{_as_date(day):%Y-%m}"]
        for name, value in zip(names, values):
            row[name] += _int(value)
    return list(months.values())


COHORT_COLUMNS = [
    Column("month", "加入月份", width=10),
    Column("distributors", "新分销员", "int"),
    *[column for days in COHORT_DAYS for column in (
        Column(f"eligible_{days}", f"满 {days} 天", "int"),
        Column(f"active_{days}", f"{days} 天活跃", "int"),
        Column(f"active_{days}_bp", f"{days} 天活跃率", "percent_bp"),
    )],
]


def distributor_cohorts(sess: Session, period: Period, *, today: date | None = None) -> list[dict[str, Any]]:
    """Distributors who applied in ``period``, by month of applying: how many had an attributed paid order in
    the 30 days ending 30, 60 and 90 days after the day they applied.

    A window counts only once it is over (it ended before ``today``); ``eligible_N`` says how many had that long.
    """
    today = today or local(utcnow()).date()
    joined: dict[int, date] = {}
    start, end = day_start(period.start), day_start(period.end + timedelta(days=1))
    for member_id, applied_at in sess.execute(select(Distributor.member_id, Distributor.applied_at).where(Distributor.applied_at >= start, Distributor.applied_at < end)):
        joined[member_id] = local(applied_at).date()
    sale_days: dict[int, list[date]] = {}
    if joined:
        last_window = period.end + timedelta(days=max(COHORT_DAYS))
        stmt = (
            select(MemberDaily.member_id, MemberDaily.day)
            .join(Distributor, Distributor.member_id == MemberDaily.member_id)
            .where(Distributor.applied_at >= start, Distributor.applied_at < end, MemberDaily.orders > 0)
            .where(MemberDaily.day > period.start, MemberDaily.day <= last_window)
        )
        for member_id, day in sess.execute(stmt):
            sale_days.setdefault(member_id, []).append(_as_date(day))  # type: ignore[arg-type]
    return cohort_rows(joined, sale_days, period, today)


def cohort_rows(joined: dict[int, date], sale_days: dict[int, list[date]], period: Period, today: date) -> list[dict[str, Any]]:
    """The cohort table from each distributor's joining day and sale days (shared with the tests' recomputation)."""
    rows: dict[str, dict[str, Any]] = {month: {"month": month, "distributors": 0, **{f"{k}_{d}": 0 for d in COHORT_DAYS for k in ("eligible", "active")}} for month in months_of(period)}
    for member_id, day in joined.items():
        row = rows[f"{day:%Y-%m}"]
        row["distributors"] += 1
        for days in COHORT_DAYS:
            window_end = day + timedelta(days=days)
            if window_end >= today:
                continue
            row[f"eligible_{days}"] += 1
            window_start = window_end - timedelta(days=29)
            if any(window_start <= sold <= window_end for sold in sale_days.get(member_id, ())):
                row[f"active_{days}"] += 1
    for row in rows.values():
        for days in COHORT_DAYS:
            row[f"active_{days}_bp"] = rate_bp(row[f"active_{days}"], row[f"eligible_{days}"])
    return list(rows.values())


# -- regions and products -----------------------------------------------------------------------

REGION_COLUMNS = [
    Column("province", "省份"),
    Column("city", "城市"),
    Column("orders", "订单", "int"),
    Column("paid_fen", "支付金额", "fen"),
    Column("refunded_fen", "退款金额", "fen"),
    Column("sales_fen", "销售额", "fen"),
]


def regions(sess: Session, period: Period) -> dict[str, Any]:
    """Orders paid in ``period`` by province and city of their address: a table (``rows``) and per-province totals for a map."""
    r = RegionDaily
    stmt = (
        select(r.province, r.city, func.sum(r.orders), func.sum(r.paid_fen), func.sum(r.refunded_fen))
        .where(*_within(r.day, period))
        .group_by(r.province, r.city)
    )
    rows: list[dict[str, Any]] = []
    for province, city, orders, paid, refunded in sess.execute(stmt):
        rows.append({"province": province, "city": city, "orders": _int(orders), "paid_fen": _int(paid), "refunded_fen": _int(refunded), "sales_fen": _int(paid) - _int(refunded)})
    rows.sort(key=lambda row: (-row["sales_fen"], row["province"], row["city"]))
    provinces: dict[str, dict[str, Any]] = {}
    for row in rows:
        total = provinces.setdefault(row["province"], {"province": row["province"], "orders": 0, "sales_fen": 0})
        total["orders"] += row["orders"]
        total["sales_fen"] += row["sales_fen"]
    return {"provinces": sorted(provinces.values(), key=lambda p: (-p["sales_fen"], p["province"])), "rows": rows}


ProductBy = Literal["product", "sku"]

PRODUCT_COLUMNS = [
    Column("product_id", "商品 ID", "int"),
    Column("title", "商品", width=24),
    Column("sku_id", "SKU ID", "int"),
    Column("sku_name", "规格"),
    Column("orders", "订单", "int"),
    Column("units", "件数", "int"),
    Column("gross_fen", "成交金额", "fen"),
    Column("refunded_fen", "退款金额", "fen"),
    Column("sales_fen", "销售额", "fen"),
    Column("referral_sales_fen", "推荐销售额", "fen"),
    Column("referral_share_bp", "推荐占比", "percent_bp"),
]


def products(sess: Session, period: Period, *, by: ProductBy = "product") -> list[dict[str, Any]]:
    """Sales per product (or per SKU) of the orders paid in ``period``, best selling first."""
    p = ProductDaily
    keys = [p.product_id] + ([p.sku_id] if by == "sku" else [])
    stmt = (
        select(*keys, func.sum(p.orders), func.sum(p.units), func.sum(p.gross_fen), func.sum(p.refunded_fen), func.sum(p.referral_gross_fen), func.sum(p.referral_refunded_fen))
        .where(*_within(p.day, period))
        .group_by(*keys)
    )
    found = sess.execute(stmt).all()
    titles = dict(sess.execute(select(Product.id, Product.title).where(Product.id.in_({row[0] for row in found}))).all()) if found else {}
    sku_names = dict(sess.execute(select(Sku.id, Sku.name).where(Sku.id.in_({row[1] for row in found}))).all()) if found and by == "sku" else {}
    rows: list[dict[str, Any]] = []
    for row in found:
        product_id, sku_id = row[0], row[1] if by == "sku" else None
        orders, units, gross, refunded, referral_gross, referral_refunded = (_int(v) for v in row[len(keys):])
        sales, referral = gross - refunded, referral_gross - referral_refunded
        rows.append({
            "product_id": product_id, "title": titles.get(product_id, ""), "sku_id": sku_id, "sku_name": sku_names.get(sku_id, "") if sku_id else None,
            "orders": orders, "units": units, "gross_fen": gross, "refunded_fen": refunded, "sales_fen": sales,
            "referral_sales_fen": referral, "referral_share_bp": rate_bp(referral, sales) if sales > 0 else None,
        })
    rows.sort(key=lambda r: (-r["sales_fen"], r["product_id"], r["sku_id"] or 0))
    return rows


# -- repeat business ----------------------------------------------------------------------------

REPEAT_COLUMNS = [
    Column("kind", "类型"),
    Column("orders", "订单/合同", "int"),
    Column("repeat_orders", "复购/二期+", "int"),
    Column("repeat_orders_bp", "复购占比（单数）", "percent_bp"),
    Column("sales_fen", "销售额", "fen"),
    Column("repeat_sales_fen", "复购销售额", "fen"),
    Column("repeat_sales_bp", "复购占比（金额）", "percent_bp"),
]


def repeat_business(sess: Session, period: Period) -> list[dict[str, Any]]:
    """Of the orders (online) and contracts paid in ``period``, how many and how much are repeat business; then both together."""
    o = OrdersDaily
    stmt = (
        select(o.kind, o.repeat_business, func.sum(o.orders), func.sum(o.paid_fen - o.refunded_fen))
        .where(*_within(o.day, period))
        .group_by(o.kind, o.repeat_business)
    )
    kinds = [kind.value for kind in OrderKind] + ["all"]
    totals: dict[str, dict[str, Any]] = {kind: {"kind": kind, "orders": 0, "repeat_orders": 0, "sales_fen": 0, "repeat_sales_fen": 0} for kind in kinds}
    for kind, repeat, orders, sales in sess.execute(stmt):
        for row in (totals[str(kind)], totals["all"]):
            row["orders"] += _int(orders)
            row["sales_fen"] += _int(sales)
            if repeat:
                row["repeat_orders"] += _int(orders)
                row["repeat_sales_fen"] += _int(sales)
    for row in totals.values():
        row["repeat_orders_bp"] = rate_bp(row["repeat_orders"], row["orders"])
        row["repeat_sales_bp"] = rate_bp(row["repeat_sales_fen"], row["sales_fen"]) if row["sales_fen"] > 0 else None
    return list(totals.values())


# -- points liability ---------------------------------------------------------------------------

LIABILITY_COLUMNS = [
    Column("day", "日期", "date", width=12),
    Column("issued", "发放", "points"),
    Column("reversed", "冲回", "points"),
    Column("redeemed", "兑换", "points"),
    Column("expired", "过期", "points"),
    Column("pending", "待确认余额", "points"),
    Column("matured", "待结算余额", "points"),
    Column("available", "可用余额", "points"),
    Column("debt", "欠分", "points"),
    Column("liability", "积分负债", "points"),
]
BALANCE_KINDS = tuple(kind.value for kind in MEMBER_KINDS)


def liability(balances: dict[str, int]) -> int:
    """What the merchant owes members in hundredths of a point (= fen at ¥1 a point): held points less debt owed."""
    return balances["pending"] + balances["matured"] + balances["available"] - balances["debt"]


def points_liability(sess: Session, period: Period) -> dict[str, Any]:
    """Per day of ``period``: points issued, reversed, redeemed and expired that day, and member balances at
    the day's end; and the outstanding balances now, from the accounts' cached balances.

    ``debt`` is what members owe (a positive number); ``liability`` = pending + matured + available − debt.
    """
    l = LedgerDaily
    net = func.sum(l.credits + l.debits)
    opening = {kind: 0 for kind in BALANCE_KINDS}
    for kind, amount in sess.execute(select(l.account_kind, net).where(l.day < period.start, l.account_kind.in_(BALANCE_KINDS)).group_by(l.account_kind)):
        opening[kind] = _int(amount)
    stmt = (
        select(l.day, l.account_kind, func.sum(l.credits), func.sum(l.debits))
        .where(*_within(l.day, period))
        .group_by(l.day, l.account_kind)
    )
    by_day: dict[date, dict[str, tuple[int, int]]] = {}
    for day, kind, credits, debits in sess.execute(stmt):
        by_day.setdefault(_as_date(day) or period.start, {})[kind] = (_int(credits), _int(debits))
    rows, balances = [], dict(opening)
    for n in range(period.days):
        day = period.start + timedelta(days=n)
        moves = by_day.get(day, {})
        for kind in BALANCE_KINDS:
            credits, debits = moves.get(kind, (0, 0))
            balances[kind] += credits + debits
        held = {kind: balances[kind] for kind in BALANCE_KINDS}
        held["debt"] = -held["debt"]
        issuance = moves.get(AccountKind.issuance.value, (0, 0))
        rows.append({
            "day": day,
            "issued": -issuance[1],
            "reversed": issuance[0],
            "redeemed": sum(moves.get(AccountKind.redemption.value, (0, 0))),
            "expired": sum(moves.get(AccountKind.expiry.value, (0, 0))),
            **held,
            "liability": liability(held),
        })
    now = {kind: 0 for kind in BALANCE_KINDS}
    for kind, total in sess.execute(select(Account.kind, func.sum(Account.balance)).where(Account.kind.in_(MEMBER_KINDS)).group_by(Account.kind)):
        now[kind.value] = _int(total)
    now["debt"] = -now["debt"]
    outstanding: dict[str, Any] = {**now, "liability": liability(now)}
    outstanding["liability_yuan"] = str((Decimal(outstanding["liability"]) / 100).quantize(Decimal("0.01")))
    return {"rows": rows, "outstanding": outstanding}
