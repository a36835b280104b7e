"""The reports' admin API: who may read them, how a bad period or filter is refused, and CSV and XLSX files
that carry the same rows as the JSON."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any, Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openpyxl import load_workbook

from server import db
from server.clock import local
from server.db import utcnow
from server.reports import rollups
from tests.reports.generate import generate

REPORTS = ["funnel", "distributors", "distributor-cohorts", "regions", "products", "repeat-business", "points-liability"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def rolled_up(app: Flask) -> dict[str, Any]:
    """Generated data with its rollups refreshed; the first distributor's member id and the data's first day."""
    with app.app_context():
        sess = db.session()
        data = generate(sess, members=16, orders=60, touches=150)
        first = local(data.start).date()
        rollups.refresh_days(sess, rollups.days_between(first, local(utcnow()).date()))
        db.commit()
    return {"member_id": data.members[0], "from": first.isoformat(), "to": local(utcnow()).date().isoformat()}


@pytest.mark.parametrize("role", ["owner", "operations", "finance"])
def test_owner_operations_and_finance_read_every_report(client: FlaskClient, staff_login: Callable[..., dict[str, str]], role: str) -> None:
    headers = staff_login(role)
    for report in REPORTS:
        response = client.get(f"/admin/api/v1/reports/{report}", headers=headers)
        assert response.status_code == 200, (report, response.get_json())
        data = response.get_json()["data"]
        today = local(utcnow()).date()
        assert (data["from"], data["to"]) == ((today - timedelta(days=29)).isoformat(), today.isoformat())


def test_members_and_anonymous_callers_are_refused(client: FlaskClient, wx_login: Callable[..., dict[str, Any]]) -> None:
    member = wx_login("alice")
    for report in REPORTS:
        assert client.get(f"/admin/api/v1/reports/{report}").status_code == 401
        assert client.get(f"/admin/api/v1/reports/{report}", headers=member["headers"]).get_json()["code"] == 40101


@pytest.mark.parametrize("query,field", [
    ("from=2026-02-30", "from"),
    ("from=2026-1-1", "from"),
    ("to=1999-12-31", "to"),
    ("to=9999-12-31", "to"),
    ("from=2026-01-01T00:00:00", "from"),
    ("from=2026-03-02&to=2026-03-01", "from"),
    ("from=2025-01-01&to=2026-01-02", "to"),
    ("format=pdf", "format"),
    ("channel=wechat", "channel"),
    ("view=middle", "view"),
    ("sort=nickname", "sort"),
    ("page_size=1000", "page_size"),
])
def test_a_bad_query_is_a_validation_error_naming_the_field(client: FlaskClient, staff_login: Callable[..., dict[str, str]], query: str, field: str) -> None:
    headers = staff_login("owner")
    report = {"channel": "funnel", "view": "funnel", "sort": "distributors", "page_size": "distributors"}.get(field, "distributors")
    response = client.get(f"/admin/api/v1/reports/{report}?{query}", headers=headers)
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["code"] == 42200 and [e["field"] for e in body["data"]["errors"]] == [field]


def test_a_year_is_the_longest_period(client: FlaskClient, staff_login: Callable[..., dict[str, str]]) -> None:
    headers = staff_login("owner")
    assert client.get("/admin/api/v1/reports/regions?from=2024-01-01&to=2024-12-31", headers=headers).status_code == 200  # 366 days
    assert client.get("/admin/api/v1/reports/regions?from=2024-01-01&to=2025-01-01", headers=headers).status_code == 422


def test_files_carry_the_same_rows_as_json(client: FlaskClient, staff_login: Callable[..., dict[str, str]], rolled_up: dict[str, Any]) -> None:
    headers = staff_login("finance")
    period = f"from={rolled_up['from']}&to={rolled_up['to']}"
    for report in REPORTS + [f"distributors/{rolled_up['member_id']}/trend"]:
        extra = "&by=content&view=first" if report == "funnel" else "&by=sku" if report == "products" else "&page_size=100" if report == "distributors" else ""
        rows = client.get(f"/admin/api/v1/reports/{report}?{period}{extra}", headers=headers).get_json()["data"]["rows"]
        assert rows or report in ("distributor-cohorts",), report

        response = client.get(f"/admin/api/v1/reports/{report}?{period}{extra}&format=csv", headers=headers)
        assert response.status_code == 200 and response.mimetype == "text/csv"
        assert "attachment" in response.headers["Content-Disposition"]
        table = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
        assert len(table) == len(rows) + 1, report

        response = client.get(f"/admin/api/v1/reports/{report}?{period}{extra}&format=xlsx", headers=headers)
        assert response.status_code == 200 and response.mimetype == XLSX
        sheet = load_workbook(io.BytesIO(response.data), read_only=True).active
        assert sheet is not None
        cells = list(sheet.iter_rows(values_only=True))
        assert cells[0] == tuple(table[0]) and len(cells) == len(rows) + 1, report


def test_csv_money_is_in_yuan_and_member_text_is_never_a_formula(client: FlaskClient, staff_login: Callable[..., dict[str, str]], rolled_up: dict[str, Any]) -> None:
    headers = staff_login("owner")
    period = f"from={rolled_up['from']}&to={rolled_up['to']}"
    rows = client.get(f"/admin/api/v1/reports/regions?{period}", headers=headers).get_json()["data"]["rows"]
    text = client.get(f"/admin/api/v1/reports/regions?{period}&format=csv", headers=headers).get_data(as_text=True)
    table = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    by_city = {(r["省份"], r["城市"]): r for r in table}
    for row in rows:
        province, city = (("'" + v if v.startswith(("=", "+", "-", "@")) else v) for v in (row["province"], row["city"]))
        assert by_city[(province, city)]["销售额（元）"] == f"{row['sales_fen'] // 100}.{row['sales_fen'] % 100:02d}"
    assert ("'=1+1", "'@city") in by_city


def test_the_distributor_report_pages_and_the_trend_needs_a_distributor(client: FlaskClient, staff_login: Callable[..., dict[str, str]], rolled_up: dict[str, Any]) -> None:
    headers = staff_login("operations")
    period = f"from={rolled_up['from']}&to={rolled_up['to']}"
    first = client.get(f"/admin/api/v1/reports/distributors?{period}&page_size=3&sort=orders&order=asc", headers=headers).get_json()["data"]
    second = client.get(f"/admin/api/v1/reports/distributors?{period}&page_size=3&page=2&sort=orders&order=asc", headers=headers).get_json()["data"]
    assert first["total"] == second["total"] == 8 and len(first["rows"]) == 3
    assert not {r["member_id"] for r in first["rows"]} & {r["member_id"] for r in second["rows"]}
    assert [r["orders"] for r in first["rows"] + second["rows"]] == sorted(r["orders"] for r in first["rows"] + second["rows"])
    response = client.get(f"/admin/api/v1/reports/distributors/{2**62}/trend", headers=headers)
    assert response.status_code == 404 and response.get_json()["code"] == 40400
