"""The console's report pages under /console/reports/: the admin API's reports as tables and charts.

Each page reads the same functions as ``/admin/api/v1/reports`` (``server.reports.queries``) over a
period taken from ``from`` / ``to`` in the URL (China-time days, both included; the last 30 days when
left out), and ``?format=csv`` or ``?format=xlsx`` downloads exactly the rows the page shows (all pages
of them) with the API's columns. Charts are drawn by ``console.js`` from a small description the page
carries in a ``data-chart-spec`` attribute: categories, and series of numbers.
"""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Iterable, Mapping

from flask import render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from server import db
from server.accounts.models import Member
from server.clock import local
from server.console import labels
from server.console.routes import PAGE_SIZE, bp, date_arg, int_arg, pages
from server.console.session import console_view
from server.db import utcnow
from server.distribution.models import Distributor
from server.errors import NotFoundError
from server.exports import FORMATS, Column, download
from server.referral.models import Channel
from server.reports import queries
from server.reports.queries import DEFAULT_DAYS, MAX_DAYS, Period

#: The tabs over every report page: (endpoint, title).
TABS = [
    ("console.report_funnel", "渠道漏斗"),
    ("console.report_distributors", "分销员业绩"),
    ("console.report_cohorts", "新分销员活跃"),
    ("console.report_regions", "地区"),
    ("console.report_products", "商品"),
    ("console.report_repeat", "复购"),
    ("console.report_liability", "积分负债"),
]
FUNNEL_STEP_TITLES = {"visits": "访问/扫码", "sign_ins": "登录", "bindings": "绑定", "leads": "线索", "orders": "下单", "paid": "支付", "completed": "完成"}
SORTS = {
    "sales_fen": "自有业绩",
    "orders": "订单",
    "leads": "线索",
    "valid_leads": "有效线索",
    "conversion_bp": "转化率",
    "points_earned": "获得积分",
    "points_redeemed": "兑换积分",
    "days_since_last_sale": "最近成交",
}
#: Bars in the ranking and region charts.
TOP = 10


def report_period() -> tuple[Period, list[str]]:
    """The period in the URL, and what was wrong with it (then the default period is shown instead)."""
    problems: list[str] = []
    today = local(utcnow()).date()
    start, end = date_arg("from", problems), date_arg("to", problems)
    end = end or today
    start = start or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        problems.append("开始日期不能晚于结束日期。")
    elif (end - start).days + 1 > MAX_DAYS:
        problems.append(f"一次最多查看 {MAX_DAYS} 天。")
    if problems:
        return Period(today - timedelta(days=DEFAULT_DAYS - 1), today), problems
    return Period(start, end), problems


def export_format() -> str | None:
    fmt = request.args.get("format", "")
    return fmt if fmt in FORMATS else None


def export(name: str, period: Period, columns: list[Column], rows: Iterable[Mapping[str, Any]]) -> Response:
    fmt = export_format()
    assert fmt is not None
    return download(fmt, f"{name}-{period.start}-{period.end}", columns, rows, sheet=name)  # type: ignore[arg-type]


def export_url(fmt: str) -> str:
    """This page, with its filters, as a file."""
    args: dict[str, Any] = {**request.args.to_dict(), **(request.view_args or {}), "format": fmt}
    args.pop("page", None)
    return url_for(request.endpoint or "console.report_funnel", **args)


def render(template: str, period: Period, problems: list[str], **context: Any) -> str:
    return render_template(template, period=period, problems=problems, tabs=TABS, export_url=export_url, **context)


def chart(categories: list[str], *series: dict[str, Any], axes: list[str] | None = None, horizontal: bool = False) -> dict[str, Any]:
    """What ``console.js`` draws: categories and series ``{name, type: bar|line, data, axis}``; money and points as numbers in yuan and points."""
    return {"categories": categories, "series": list(series), "axes": axes or [""], "horizontal": horizontal}


def _yuan(fen: int) -> float:
    return round(fen / 100, 2)


def channel_title(channel: str) -> str:
    return labels.CHANNEL.get(channel, "直接访问" if channel == "direct" else channel)


# -- channel funnel -----------------------------------------------------------------------------


@bp.get("/reports/")
@bp.get("/reports/funnel")
@console_view("reports")
def report_funnel() -> Any:
    """Visits → sign-ins → bindings → leads → orders → paid → completed per channel (or content item)."""
    period, problems = report_period()
    view = request.args.get("view", "last") if request.args.get("view") in ("first", "last") else "last"
    by = "content" if request.args.get("by") == "content" else "channel"
    raw_channel = request.args.get("channel", "")
    channel = raw_channel if raw_channel in {c.value for c in Channel} | {"direct"} else None
    rows = queries.funnel(db.session(), period, view=view, by=by, channel=channel)  # type: ignore[arg-type]
    columns = queries.FUNNEL_COLUMNS if by == "content" else [c for c in queries.FUNNEL_COLUMNS if c.key != "content"]
    if export_format():
        return export("funnel", period, columns, rows)
    totals = {step: sum(row[step] for row in rows) for step in queries.STEPS}
    by_channel: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = by_channel.setdefault(row["channel"], {step: 0 for step in queries.STEPS})
        for step in queries.STEPS:
            counts[step] += row[step]
    spec = chart(
        [FUNNEL_STEP_TITLES[step] for step in queries.STEPS],
        *[{"name": channel_title(name), "type": "bar", "data": [counts[step] for step in queries.STEPS]} for name, counts in by_channel.items()],
    )
    return render(
        "console/reports/funnel.html", period, problems, rows=rows, totals=totals, view=view, by=by, channel=channel,
        channels=[c.value for c in Channel] + ["direct"], channel_title=channel_title, steps=FUNNEL_STEP_TITLES, spec=spec,
    )


# -- distributors -------------------------------------------------------------------------------


@bp.get("/reports/distributors")
@console_view("reports")
def report_distributors() -> Any:
    """Every distributor's own attributed figures over the period, sortable, one page at a time; the top sellers as a chart."""
    period, problems = report_period()
    sort = request.args.get("sort", "sales_fen")
    sort = sort if sort in SORTS else "sales_fen"
    descending = request.args.get("order", "desc") != "asc"
    sess = db.session()
    if export_format():
        rows, _ = queries.distributors(sess, period, sort=sort, descending=descending)  # type: ignore[arg-type]
        return export("distributors", period, queries.DISTRIBUTOR_COLUMNS, rows)
    page = int_arg("page", 1)
    rows, total = queries.distributors(sess, period, sort=sort, descending=descending, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)  # type: ignore[arg-type]
    # The ranking is by own sales, never by team size (a headcount ranking would reward recruiting).
    if sort == "sales_fen" and descending and page == 1:
        top = rows[:TOP]  # the page already starts with the ranking
    else:
        top, _ = queries.distributors(sess, period, sort="sales_fen", descending=True, limit=TOP)
    top = [row for row in top if row["sales_fen"] > 0]
    spec = chart(
        [row["nickname"] or f"#{row['member_id']}" for row in reversed(top)],
        {"name": "自有业绩（元）", "type": "bar", "data": [_yuan(row["sales_fen"]) for row in reversed(top)]},
        axes=["元"],
        horizontal=True,
    )
    return render(
        "console/reports/distributors.html", period, problems, rows=rows, pager=pages(total), sort=sort, descending=descending,
        sorts=SORTS, spec=spec, has_top=bool(top),
    )


@bp.get("/reports/distributors/<int:member_id>")
@console_view("reports")
def report_distributor(member_id: int) -> Any:
    """One distributor's own figures month by month (the last twelve months unless a period is given)."""
    sess = db.session()
    found = sess.execute(select(Distributor, Member).join(Member, Member.id == Distributor.member_id).where(Distributor.member_id == member_id)).first()
    if found is None:
        raise NotFoundError("no distributor has this member id")
    distributor, member = found
    if request.args.get("from") or request.args.get("to"):
        period, problems = report_period()
    else:
        # This month and the eleven before it.
        today = local(utcnow()).date()
        year, month = (today.year, today.month - 11) if today.month == 12 else (today.year - 1, today.month + 1)
        period, problems = Period(date(year, month, 1), today), []
    rows = queries.distributor_trend(sess, member_id, period)
    if export_format():
        return export(f"distributor-{member_id}", period, queries.TREND_COLUMNS, rows)
    spec = chart(
        [row["month"] for row in rows],
        {"name": "自有业绩（元）", "type": "bar", "data": [_yuan(row["sales_fen"]) for row in rows]},
        {"name": "订单", "type": "line", "data": [row["orders"] for row in rows], "axis": 1},
        {"name": "有效线索", "type": "line", "data": [row["valid_leads"] for row in rows], "axis": 1},
        axes=["元", "数量"],
    )
    return render("console/reports/distributor.html", period, problems, rows=rows, distributor=distributor, member=member, spec=spec)


@bp.get("/reports/cohorts")
@console_view("reports")
def report_cohorts() -> Any:
    """Distributors by the month they applied: the share with a sale in the 30 days ending 30, 60 and 90 days after."""
    period, problems = report_period()
    rows = queries.distributor_cohorts(db.session(), period)
    if export_format():
        return export("distributor-cohorts", period, queries.COHORT_COLUMNS, rows)
    spec = chart(
        [row["month"] for row in rows],
        *[
            {"name": f"{days} 天活跃率（%）", "type": "line", "data": [None if row[f"active_{days}_bp"] is None else row[f"active_{days}_bp"] / 100 for row in rows]}
            for days in queries.COHORT_DAYS
        ],
        axes=["%"],
    )
    return render("console/reports/cohorts.html", period, problems, rows=rows, windows=queries.COHORT_DAYS, spec=spec)


# -- regions, products, repeat business -------------------------------------------------------------


@bp.get("/reports/regions")
@console_view("reports")
def report_regions() -> Any:
    """Sales and orders by province and city of the order address."""
    period, problems = report_period()
    found = queries.regions(db.session(), period)
    if export_format():
        return export("regions", period, queries.REGION_COLUMNS, found["rows"])
    top = found["provinces"][:TOP]
    spec = chart(
        [row["province"] or "未填地址" for row in reversed(top)],
        {"name": "销售额（元）", "type": "bar", "data": [_yuan(row["sales_fen"]) for row in reversed(top)]},
        axes=["元"],
        horizontal=True,
    )
    rows = found["rows"]
    page = int_arg("page", 1)
    return render(
        "console/reports/regions.html", period, problems, provinces=found["provinces"], rows=rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE],
        pager=pages(len(rows)), spec=spec,
    )


@bp.get("/reports/products")
@console_view("reports")
def report_products() -> Any:
    """Sales, units, refunds and the referral share of sales per product or SKU."""
    period, problems = report_period()
    by: queries.ProductBy = "sku" if request.args.get("by") == "sku" else "product"
    rows = queries.products(db.session(), period, by=by)
    columns = queries.PRODUCT_COLUMNS if by == "sku" else [c for c in queries.PRODUCT_COLUMNS if c.key not in ("sku_id", "sku_name")]
    if export_format():
        return export("products", period, columns, rows)
    top = rows[:TOP]
    names = [row["title"] + (f" {row['sku_name']}" if row.get("sku_name") else "") for row in top]
    spec = chart(
        names,
        {"name": "推荐销售额（元）", "type": "bar", "stack": "sales", "data": [_yuan(row["referral_sales_fen"]) for row in top]},
        {"name": "其他销售额（元）", "type": "bar", "stack": "sales", "data": [_yuan(row["sales_fen"] - row["referral_sales_fen"]) for row in top]},
        axes=["元"],
    )
    page = int_arg("page", 1)
    return render(
        "console/reports/products.html", period, problems, rows=rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE], pager=pages(len(rows)), by=by, spec=spec,
    )


@bp.get("/reports/repeat-business")
@console_view("reports")
def report_repeat() -> Any:
    """Of the orders and contracts paid in the period, the share that is phase 2+ or a repeat purchase."""
    period, problems = report_period()
    rows = queries.repeat_business(db.session(), period)
    if export_format():
        return export("repeat-business", period, queries.REPEAT_COLUMNS, rows)
    kinds = {"online": "线上订单", "contract": "合同", "all": "合计"}
    spec = chart(
        [kinds.get(row["kind"], row["kind"]) for row in rows],
        {"name": "首单/一期（元）", "type": "bar", "stack": "sales", "data": [_yuan(row["sales_fen"] - row["repeat_sales_fen"]) for row in rows]},
        {"name": "复购/二期+（元）", "type": "bar", "stack": "sales", "data": [_yuan(row["repeat_sales_fen"]) for row in rows]},
        axes=["元"],
    )
    return render("console/reports/repeat.html", period, problems, rows=rows, kinds=kinds, spec=spec)


# -- points liability ---------------------------------------------------------------------------


@bp.get("/reports/points-liability")
@console_view("reports")
def report_liability() -> Any:
    """Points issued, redeemed and expired per day, balances at each day's end, and what is owed today in yuan."""
    period, problems = report_period()
    found = queries.points_liability(db.session(), period)
    if export_format():
        return export("points-liability", period, queries.LIABILITY_COLUMNS, found["rows"])
    rows = found["rows"]
    spec = chart(
        [row["day"].isoformat()[5:] for row in rows],
        *[{"name": title, "type": "line", "data": [_yuan(row[key]) for row in rows]} for key, title in (
            ("liability", "积分负债"), ("available", "可用"), ("pending", "待确认"), ("matured", "待结算"), ("debt", "欠分"),
        )],
        axes=["积分"],
    )
    return render("console/reports/liability.html", period, problems, rows=list(reversed(rows)), outstanding=found["outstanding"], spec=spec)
