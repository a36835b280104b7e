"""The report pages: each role that may read reports sees each page, its numbers are the report
functions', its exports hold the same rows in CSV and XLSX, and bad filters fall back to the default period."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import openpyxl
import pytest
from flask import Flask

from server import db
from server.clock import local
from server.db import utcnow
from server.reports import queries
from server.reports.queries import Period
from tests.console.test_pages import _demo_login, demo  # noqa: F401  (the demo shop fixture)

PAGES = [
    "/console/reports/",
    "/console/reports/funnel",
    "/console/reports/funnel?view=first&by=content",
    "/console/reports/distributors",
    "/console/reports/distributors?sort=orders&order=asc",
    "/console/reports/cohorts",
    "/console/reports/regions",
    "/console/reports/products?by=sku",
    "/console/reports/repeat-business",
    "/console/reports/points-liability",
]


def _default_period() -> Period:
    today = local(utcnow()).date()
    return Period(today - timedelta(days=29), today)


@pytest.mark.parametrize("username", ["owner", "ops", "finance"])
def test_every_report_page_answers_for_every_role(app: Flask, demo: dict[str, Any], username: str) -> None:  # noqa: F811
    browser = _demo_login(app, username)
    nav = browser.get("/console/").text
    assert ">报表</a>" in nav
    for path in PAGES:
        response = browser.get(path)
        assert response.status_code == 200, (username, path)
        assert 'id="report-table"' in response.text or "没有" in response.text, path


def test_the_funnel_page_shows_the_report_functions_numbers(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    with app.app_context():
        rows = queries.funnel(db.session(), _default_period(), view="last", by="channel")
    assert rows, "the demo shop has channel traffic"
    page = _demo_login(app, "owner").get("/console/reports/funnel").text
    assert 'data-chart="report"' in page and "data-chart-spec=" in page
    total_visits = sum(row["visits"] for row in rows)
    assert f'<td class="num"><strong>{total_visits}</strong></td>' in page


def test_the_liability_page_shows_what_is_owed_today_in_yuan(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    with app.app_context():
        found = queries.points_liability(db.session(), _default_period())
    page = _demo_login(app, "finance").get("/console/reports/points-liability").text
    assert f'<span id="liability-yuan">¥{found["outstanding"]["liability_yuan"]}</span>' in page


EXPORTS = [
    ("/console/reports/funnel", "funnel", lambda s, p: queries.funnel(s, p), "渠道"),
    ("/console/reports/distributors", "distributors", lambda s, p: queries.distributors(s, p)[0], "会员 ID"),
    ("/console/reports/regions", "regions", lambda s, p: queries.regions(s, p)["rows"], "省份"),
    ("/console/reports/products", "products", lambda s, p: queries.products(s, p), "商品 ID"),
    ("/console/reports/repeat-business", "repeat-business", lambda s, p: queries.repeat_business(s, p), "类型"),
    ("/console/reports/points-liability", "points-liability", lambda s, p: queries.points_liability(s, p)["rows"], "日期"),
    ("/console/reports/cohorts", "distributor-cohorts", lambda s, p: queries.distributor_cohorts(s, p), "加入月份"),
]


@pytest.mark.parametrize("path,name,read,first_header", EXPORTS)
def test_each_report_exports_the_same_rows_as_csv_and_xlsx(app: Flask, demo: dict[str, Any], path: str, name: str, read: Any, first_header: str) -> None:  # noqa: F811
    period = _default_period()
    with app.app_context():
        expected = len(read(db.session(), period))
    browser = _demo_login(app, "ops")
    as_csv = browser.get(f"{path}?format=csv")
    assert as_csv.status_code == 200 and as_csv.mimetype == "text/csv"
    assert f"{name}-{period.start}-{period.end}.csv" in as_csv.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(as_csv.data.decode("utf-8").lstrip("\ufeff"))))
    assert rows[0][0] == first_header and len(rows) == expected + 1
    as_xlsx = browser.get(f"{path}?format=xlsx")
    assert as_xlsx.status_code == 200 and as_xlsx.mimetype.endswith("spreadsheetml.sheet")
    sheet = openpyxl.load_workbook(io.BytesIO(as_xlsx.data)).active
    assert sheet is not None
    cells = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert cells[0][0] == first_header and len(cells) == expected + 1
    # The same rows, in the same order, in both files.
    assert ["" if row[0] is None else str(row[0]) for row in cells[1:]] == [row[0] for row in rows[1:]]


def test_a_distributor_exports_every_row_not_just_the_page(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    browser = _demo_login(app, "owner")
    with app.app_context():
        _, total = queries.distributors(db.session(), _default_period(), limit=1)
    rows = list(csv.reader(io.StringIO(browser.get("/console/reports/distributors?format=csv&page=99").data.decode("utf-8").lstrip("\ufeff"))))
    assert len(rows) == total + 1


@pytest.mark.parametrize("query,message", [
    ("from=2026-13-01", "日期格式应为"),
    ("from=2026-11-30&to=2026-11-01", "开始日期不能晚于结束日期"),
    ("from=2024-01-01&to=2026-01-01", "一次最多查看 366 天"),
])
def test_bad_periods_fall_back_to_the_last_30_days_with_the_reason(app: Flask, demo: dict[str, Any], query: str, message: str) -> None:  # noqa: F811
    browser = _demo_login(app, "owner")
    for path in ("/console/reports/funnel", "/console/reports/points-liability"):
        response = browser.get(f"{path}?{query}")
        assert response.status_code == 200 and message in response.text
        period = _default_period()
        assert f'value="{period.start.isoformat()}"' in response.text


def test_unknown_filters_are_ignored_and_an_unknown_format_shows_the_page(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    browser = _demo_login(app, "owner")
    for path in ("/console/reports/funnel?view=middle&by=x&channel=fax&format=pdf", "/console/reports/distributors?sort=team_size&order=x&page=abc",
                 "/console/reports/products?by=brand", "/console/reports/regions?page=-1"):
        response = browser.get(path)
        assert response.status_code == 200 and response.mimetype == "text/html", path
    assert browser.get("/console/reports/distributors?sort=team_size").text.count("selected") >= 1


def test_one_distributors_monthly_trend(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    browser = _demo_login(app, "owner")
    page = browser.get(f"/console/reports/distributors/{demo['alice']}")
    assert page.status_code == 200 and 'id="report-table"' in page.text
    today = local(utcnow()).date()
    assert f"<td>{today:%Y-%m}</td>" in page.text
    assert page.text.count("<tr><td>20") == 12
    assert browser.get("/console/reports/distributors/999999").status_code == 404
    xlsx = browser.get(f"/console/reports/distributors/{demo['alice']}?format=xlsx")
    assert xlsx.status_code == 200 and len(list(openpyxl.load_workbook(io.BytesIO(xlsx.data)).active.iter_rows())) == 13  # type: ignore[union-attr]
