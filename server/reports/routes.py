"""The reports for staff (/admin/api/v1/reports): JSON in the envelope, or the same rows as CSV or XLSX.

Read-only; the owner, operations and finance may read them. Each takes ``from`` and ``to`` (China-time
days, both included, at most 366 days apart; default the last 30 days to today) and ``format``.
"""
from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Annotated, Any, Iterable, Literal, Mapping

from flask import Blueprint, Response
from pydantic import BeforeValidator, Field
from sqlalchemy import select

from server import db
from server.accounts.auth import staff_required
from server.accounts.models import StaffRole
from server.api import Page, Query, parse_query
from server.clock import local
from server.distribution.models import Distributor
from server.errors import NotFoundError, ValidationError, envelope
from server.exports import Column, download
from server.referral.models import Channel
from server.reports import queries
from server.reports.queries import DEFAULT_DAYS, MAX_DAYS, Period

bp = Blueprint("reports_admin", __name__, url_prefix="/admin/api/v1/reports")

#: Who may read the reports (the owner always may).
READERS = (StaffRole.operations, StaffRole.finance)
#: A day of this century, written YYYY-MM-DD: what the spec's pattern allows.
DAY_PATTERN = re.compile(r"^20\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")


def _day_text(value: Any) -> Any:
    if isinstance(value, str) and not DAY_PATTERN.match(value):
        raise ValueError("must be a date YYYY-MM-DD between 2000-01-01 and 2099-12-31")
    return value


Day = Annotated[date, BeforeValidator(_day_text)]


class ReportQuery(Query):
    start: Day | None = Field(None, alias="from")
    end: Day | None = Field(None, alias="to")
    format: Literal["json", "csv", "xlsx"] = "json"


class FunnelQuery(ReportQuery):
    view: Literal["first", "last"] = "last"
    by: Literal["channel", "content"] = "channel"
    channel: Channel | None = None


class DistributorQuery(ReportQuery, Page):
    sort: queries.DistributorSort = "sales_fen"
    order: Literal["asc", "desc"] = "desc"


class ProductQuery(ReportQuery):
    by: Literal["product", "sku"] = "product"


def period_of(query: ReportQuery) -> Period:
    """The query's period, checked: ``from`` on or before ``to``, at most MAX_DAYS days."""
    end = query.end or local(db.utcnow()).date()
    start = query.start or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise ValidationError(data={"errors": [{"field": "from", "error": "must be on or before to"}]})
    period = Period(start, end)
    if period.days > MAX_DAYS:
        raise ValidationError(data={"errors": [{"field": "to", "error": f"a report covers at most {MAX_DAYS} days"}]})
    return period


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, date) else value for key, value in row.items()}


def answer(query: ReportQuery, period: Period, name: str, columns: list[Column], rows: Iterable[Mapping[str, Any]], **extra: Any) -> Response:
    """The report as JSON (``rows`` and ``extra`` in the envelope) or as a file of ``rows``."""
    if query.format != "json":
        return download(query.format, f"{name}-{period.start}-{period.end}", columns, rows, sheet=name)
    return envelope({"from": period.start.isoformat(), "to": period.end.isoformat(), **extra, "rows": [_plain(row) for row in rows]})


@bp.get("/funnel")
@staff_required(*READERS)
def funnel() -> Any:
    query = parse_query(FunnelQuery)
    period = period_of(query)
    channel = query.channel.value if query.channel else None
    rows = queries.funnel(db.session(), period, view=query.view, by=query.by, channel=channel)
    columns = queries.FUNNEL_COLUMNS if query.by == "content" else [c for c in queries.FUNNEL_COLUMNS if c.key != "content"]
    return answer(query, period, "funnel", columns, rows, view=query.view, by=query.by, channel=channel)


@bp.get("/distributors")
@staff_required(*READERS)
def distributors() -> Any:
    query = parse_query(DistributorQuery)
    period = period_of(query)
    paged = query.format == "json"
    rows, total = queries.distributors(
        db.session(),
        period,
        sort=query.sort,
        descending=query.order == "desc",
        offset=query.offset if paged else 0,
        limit=query.page_size if paged else None,
    )
    return answer(query, period, "distributors", queries.DISTRIBUTOR_COLUMNS, rows, sort=query.sort, order=query.order, total=total, page=query.page)


@bp.get("/distributors/<int:member_id>/trend")
@staff_required(*READERS)
def distributor_trend(member_id: int) -> Any:
    query = parse_query(ReportQuery)
    period = period_of(query)
    sess = db.session()
    if sess.scalar(select(Distributor.id).where(Distributor.member_id == member_id)) is None:
        raise NotFoundError("no distributor has this member id")
    rows = queries.distributor_trend(sess, member_id, period)
    return answer(query, period, f"distributor-{member_id}-trend", queries.TREND_COLUMNS, rows, member_id=member_id)


@bp.get("/distributor-cohorts")
@staff_required(*READERS)
def distributor_cohorts() -> Any:
    query = parse_query(ReportQuery)
    period = period_of(query)
    rows = queries.distributor_cohorts(db.session(), period)
    return answer(query, period, "distributor-cohorts", queries.COHORT_COLUMNS, rows)


@bp.get("/regions")
@staff_required(*READERS)
def regions() -> Any:
    query = parse_query(ReportQuery)
    period = period_of(query)
    found = queries.regions(db.session(), period)
    return answer(query, period, "regions", queries.REGION_COLUMNS, found["rows"], provinces=found["provinces"])


@bp.get("/products")
@staff_required(*READERS)
def products() -> Any:
    query = parse_query(ProductQuery)
    period = period_of(query)
    rows = queries.products(db.session(), period, by=query.by)
    columns = queries.PRODUCT_COLUMNS if query.by == "sku" else [c for c in queries.PRODUCT_COLUMNS if c.key not in ("sku_id", "sku_name")]
    return answer(query, period, "products", columns, rows, by=query.by)


@bp.get("/repeat-business")
@staff_required(*READERS)
def repeat_business() -> Any:
    query = parse_query(ReportQuery)
    period = period_of(query)
    return answer(query, period, "repeat-business", queries.REPEAT_COLUMNS, queries.repeat_business(db.session(), period))


@bp.get("/points-liability")
@staff_required(*READERS)
def points_liability() -> Any:
    query = parse_query(ReportQuery)
    period = period_of(query)
    found = queries.points_liability(db.session(), period)
    return answer(query, period, "points-liability", queries.LIABILITY_COLUMNS, found["rows"], outstanding=found["outstanding"])
