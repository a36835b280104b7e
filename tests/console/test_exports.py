"""Exports of the console's lists: each holds exactly the rows its filters show on the page (every page,
same order), as CSV and XLSX, with phones masked as on the page, for the roles that see the list, audited;
long ones run as background jobs with progress, a download for their staff member alone, expiry and cleanup."""
from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from openpyxl import load_workbook
from sqlalchemy import select

from server import db
from server.accounts import export_jobs
from server.accounts.models import AuditEntry, ExportJob, ExportState, Member, Staff
from server.distribution.models import Distributor
from server.referral.models import Lead
from server.scheduler import export_cleanup_job
from tests.console.conftest import Console
from tests.console.test_pages import demo  # noqa: F401  (the demo shop fixture)
from tests.statements import statements_sent

DEMO_PASSWORD = "demo-pass-2026"


@pytest.fixture
def app(app_factory: Callable[..., Flask], tmp_path: Path) -> Flask:
    """Batches of two rows, so every export reads the list in several keyset queries."""
    return app_factory(EXPORT_BATCH_ROWS=2, EXPORT_DIR=str(tmp_path / "exports"))


def login(app: Flask, username: str) -> Console:
    browser = Console(app.test_client())
    assert browser.login(username, DEMO_PASSWORD).status_code == 303
    return browser


#: list name: (list path, the filters of a proper subset, how a page's rows name their ids, the export's id column).
LISTS: dict[str, tuple[str, dict[str, str], str, str]] = {
    "members": ("/console/members", {"q": "丝"}, r'data-member="(\d+)"', "会员 ID"),
    "distributors": ("/console/distributors", {"status": "approved"}, r'id="distributor-(\d+)"', "分销员 ID"),
    "orders": ("/console/orders", {"kind": "online", "from": "2020-01-01"}, r'data-order="(\d+)"', "订单 ID"),
    "leads": ("/console/leads", {"status": "new"}, r'data-lead="(\d+)"', "线索 ID"),
    "points": ("/console/points", {"kind": "order_reward"}, r'id="tx-(\d+)"', "交易 ID"),
    "redemptions": ("/console/redemptions", {"kind": "goods"}, r'id="redemption-(\d+)"', "兑换 ID"),
    "audit": ("/console/audit", {"action": "distributor"}, r'data-audit="(\d+)"', "记录 ID"),
}


def shown_ids(browser: Console, path: str, filters: dict[str, str], pattern: str) -> list[int]:
    """The ids the list page shows with ``filters``, page after page, in its order."""
    found: list[int] = []
    page = 1
    while True:
        response = browser.get(path, query_string={**filters, "page": page})
        assert response.status_code == 200
        ids = [int(i) for i in re.findall(pattern, response.text)]
        found += [i for i in ids if i not in found]
        total = re.search(r"共 (\d+) 条，第 (\d+) / (\d+) 页", response.text)
        if total is None or int(total.group(2)) >= int(total.group(3)):
            return found
        page += 1


def csv_rows(body: bytes) -> list[dict[str, str]]:
    assert body.startswith("\ufeff".encode())
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def xlsx_rows(body: bytes) -> list[dict[str, Any]]:
    sheet = load_workbook(io.BytesIO(body), read_only=True).active
    assert sheet is not None
    values = list(sheet.iter_rows(values_only=True))
    header = [str(v) for v in values[0]]
    return [dict(zip(header, row)) for row in values[1:]]


def ids_in(rows: list[dict[str, Any]], column: str) -> list[int]:
    seen: list[int] = []
    for row in rows:
        value = int(row[column])
        if value not in seen:
            seen.append(value)
    return seen


@pytest.mark.parametrize("name", sorted(LISTS))
def test_each_list_exports_exactly_its_filtered_rows_as_csv_and_xlsx(app: Flask, demo: dict[str, Any], name: str) -> None:
    path, filters, pattern, id_column = LISTS[name]
    browser = login(app, "owner")
    everything = shown_ids(browser, path, {}, pattern)
    expected = shown_ids(browser, path, filters, pattern)
    assert expected and len(expected) < len(everything), "the filter should pick a proper subset of the demo shop"

    # The page's links carry its filters (and not its page number).
    page = browser.get(path, query_string={**filters, "page": 1}).text
    assert "导出 CSV" in page and "导出 Excel" in page
    links = {}
    for href in re.findall(r'href="([^"]*/export\?[^"]*)"', page):
        parts = urlsplit(href.replace("&amp;", "&"))
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        links[query.pop("format")] = (parts.path, query)
    assert links == {"csv": (f"{path}/export", filters), "xlsx": (f"{path}/export", filters)}

    response = browser.get(f"{path}/export", query_string={**filters, "format": "csv", "page": 2})
    assert response.status_code == 200, response.text
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = csv_rows(response.data)
    assert ids_in(rows, id_column) == expected

    response = browser.get(f"{path}/export", query_string={**filters, "format": "xlsx"})
    assert response.status_code == 200
    assert response.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet_rows = xlsx_rows(response.data)
    assert ids_in(sheet_rows, id_column) == expected
    assert len(sheet_rows) == len(rows)

    with app.app_context():
        entries = db.session().scalars(select(AuditEntry).where(AuditEntry.action == "export.create").order_by(AuditEntry.id))
        found = [(e.target, e.detail["format"], e.detail["filters"], e.detail["rows"]) for e in entries]
    assert found == [
        (f"export:{name}", "csv", filters, len(rows)),
        (f"export:{name}", "xlsx", filters, len(rows)),
    ]


def test_unfiltered_export_has_every_row_and_money_in_yuan(app: Flask, demo: dict[str, Any]) -> None:
    browser = login(app, "owner")
    expected = shown_ids(browser, "/console/orders", {}, LISTS["orders"][2])
    rows = csv_rows(browser.get("/console/orders/export?format=csv").data)
    assert ids_in(rows, "订单 ID") == expected
    paid = next(r for r in rows if r["状态"] == "已支付")
    assert re.fullmatch(r"\d+\.\d\d", paid["金额（元）"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", paid["下单时间"])
    sheet = xlsx_rows(browser.get("/console/orders/export?format=xlsx").data)
    assert [int(r["订单 ID"]) for r in sheet] == expected


def test_phones_stay_masked_as_on_the_page(app: Flask, demo: dict[str, Any]) -> None:
    browser = login(app, "owner")
    with app.app_context():
        sess = db.session()
        masked_leads = {lead.id: lead.contact_phone_masked for lead in sess.scalars(select(Lead))}
        masked_distributors = {d.id: d.phone_masked for d in sess.scalars(select(Distributor))}
        masked_members = {m.id: m.phone_masked for m in sess.scalars(select(Member))}
    full = ("13600136000", "13500135000", "13400134000", "13100131000", "13800138000", "13700137000", "13900139000")
    for path, column, id_column, masked in (
        ("/console/leads", "手机（已脱敏）", "线索 ID", masked_leads),
        ("/console/distributors", "手机（已脱敏）", "分销员 ID", masked_distributors),
        ("/console/members", "手机（已脱敏）", "会员 ID", masked_members),
    ):
        for fmt in ("csv", "xlsx"):
            body = browser.get(f"{path}/export?format={fmt}").data
            rows = csv_rows(body) if fmt == "csv" else xlsx_rows(body)
            assert any(row[column] for row in rows), path
            for row in rows:
                assert (row[column] or None) == masked[int(row[id_column])]
            text = body.decode("utf-8-sig") if fmt == "csv" else repr(rows)
            assert not any(number in text for number in full), path


@pytest.mark.parametrize("username,refused,allowed_lists", [
    ("finance", ["members", "distributors", "leads", "audit"], ["orders", "points", "redemptions"]),
    ("ops", ["audit"], ["members", "distributors", "orders", "leads", "points", "redemptions"]),
])
def test_a_role_exports_only_the_lists_it_may_see(app: Flask, demo: dict[str, Any], username: str, refused: list[str], allowed_lists: list[str]) -> None:
    browser = login(app, username)
    for name in refused:
        path = LISTS[name][0]
        assert browser.get(path).status_code == 403
        response = browser.get(f"{path}/export?format=csv")
        assert response.status_code == 403 and "无权访问" in response.text
    for name in allowed_lists:
        assert browser.get(f"{LISTS[name][0]}/export?format=xlsx").status_code == 200, name
    with app.app_context():
        targets = {e.target for e in db.session().scalars(select(AuditEntry).where(AuditEntry.action == "export.create"))}
    assert targets == {f"export:{name}" for name in allowed_lists}


def test_signed_out_export_goes_to_the_login_page(app: Flask, demo: dict[str, Any]) -> None:
    response = app.test_client().get("/console/orders/export?format=csv")
    assert response.status_code == 302 and "/console/login" in response.headers["Location"]


@pytest.mark.parametrize("query,status", [
    ("format=pdf", 400),
    ("", 400),
    ("format=csv&from=2026-13-40", 400),
    ("format=xlsx&to=yesterday", 400),
    ("format=csv&inviter=abc", 400),
    ("format=csv&product=%00%FF&status=nope&q=" + "x" * 500, 200),
    ("format=csv&format=xlsx", 200),
])
def test_bad_parameters_are_answered_never_a_500(app: Flask, demo: dict[str, Any], query: str, status: int) -> None:
    browser = login(app, "owner")
    response = browser.get(f"/console/orders/export?{query}")
    assert response.status_code == status, response.text
    if status == 400:
        assert response.mimetype == "text/html" and "请求无效" in response.text
    for name, (path, *_rest) in LISTS.items():
        assert browser.get(f"{path}/export?format=csv&from=2026-02-30&member=x&sharer=y").status_code in (200, 400), name


# -- background exports ------------------------------------------------------------------------------


def _jobs(app: Flask) -> list[ExportJob]:
    with app.app_context():
        jobs = list(db.session().scalars(select(ExportJob).order_by(ExportJob.id)))
        for job in jobs:
            db.session().expunge(job)
        return jobs


def test_a_large_export_runs_in_the_background_with_progress_and_a_download(
    app: Flask, demo: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app.config["EXPORT_STREAM_MAX_ROWS"] = 3
    progress: list[int] = []
    record = export_jobs.record_progress
    monkeypatch.setattr(export_jobs, "record_progress", lambda sess, job, done, now=None: (progress.append(done), record(sess, job, done, now))[1])
    browser = login(app, "owner")
    expected = shown_ids(browser, "/console/orders", {"kind": "online"}, LISTS["orders"][2])
    assert len(expected) > 3

    response = browser.get("/console/orders/export?format=xlsx&kind=online")
    assert response.status_code == 303
    (job,) = _jobs(app)
    assert response.headers["Location"].endswith(f"/console/exports/{job.id}")
    assert (job.list_name, job.format, job.filters, job.state) == ("orders", "xlsx", {"kind": "online"}, ExportState.done)
    assert job.rows_done == job.rows_total == len(expected)
    # Progress was committed after every batch of two rows.
    assert progress == list(range(2, len(expected), 2)) + [len(expected)]
    assert job.expires_at is not None and job.finished_at is not None
    assert job.expires_at - job.finished_at == timedelta(hours=24)
    export_dir = Path(app.config["EXPORT_DIR"])
    assert job.file_name and (export_dir / job.file_name).is_file()
    assert not list(export_dir.glob("*.part"))

    page = browser.get(f"/console/exports/{job.id}").text
    assert 'data-state="done"' in page and f"/console/exports/{job.id}/download" in page
    assert 'data-state="done"' in browser.get(f"/console/exports/{job.id}/state").text
    listing = browser.get("/console/exports").text
    assert f'data-export-job="{job.id}"' in listing

    download = browser.get(f"/console/exports/{job.id}/download")
    assert download.status_code == 200
    assert "attachment" in download.headers["Content-Disposition"]
    assert [int(r["订单 ID"]) for r in xlsx_rows(download.data)] == expected
    download.close()

    with app.app_context():
        detail = db.session().scalars(select(AuditEntry).where(AuditEntry.action == "export.create")).one().detail
    assert detail == {"format": "xlsx", "filters": {"kind": "online"}, "rows": len(expected), "job": job.id}


def test_a_running_export_shows_its_progress_and_polls(app: Flask, demo: dict[str, Any]) -> None:
    browser = login(app, "owner")
    with app.app_context():
        owner = db.session().scalars(select(Staff).where(Staff.username == "owner")).one()
        job = export_jobs.start_export(db.session(), staff_id=owner.id, list_name="orders", fmt="csv", filters={}, rows_total=10)
        job.state, job.rows_done = ExportState.running, 4
        db.commit()
        job_id = job.id
    fragment = browser.get(f"/console/exports/{job_id}/state").text
    assert 'data-state="running"' in fragment and 'hx-trigger="every 1s"' in fragment
    assert "4</span> / 10" in fragment and "40%" in fragment
    assert browser.get(f"/console/exports/{job_id}/download").status_code == 409

    # The same export again while it runs leads to it, not to a second job.
    app.config["EXPORT_STREAM_MAX_ROWS"] = 1
    again = browser.get("/console/orders/export?format=csv")
    assert again.status_code == 303 and again.headers["Location"].endswith(f"/console/exports/{job_id}")
    assert len(_jobs(app)) == 1


def test_only_the_staff_member_who_asked_may_see_or_download_an_export(app: Flask, demo: dict[str, Any], make_staff: Callable[..., Any]) -> None:
    app.config["EXPORT_STREAM_MAX_ROWS"] = 1
    owner = login(app, "owner")
    assert owner.get("/console/orders/export?format=csv").status_code == 303
    (job,) = _jobs(app)
    download = owner.get(f"/console/exports/{job.id}/download")
    assert download.status_code == 200 and download.data.startswith("\ufeff".encode())
    download.close()

    make_staff("owner", username="other-owner")
    other = Console(app.test_client())
    assert other.login("other-owner").status_code == 303
    for path in (f"/console/exports/{job.id}", f"/console/exports/{job.id}/state", f"/console/exports/{job.id}/download"):
        assert other.get(path).status_code == 404, path
    assert f'data-export-job="{job.id}"' not in other.get("/console/exports").text
    assert app.test_client().get(f"/console/exports/{job.id}/download").status_code == 302  # signed out: to the login page


def test_an_expired_export_answers_410_and_the_cleanup_job_removes_it(app: Flask, demo: dict[str, Any]) -> None:
    app.config["EXPORT_STREAM_MAX_ROWS"] = 1
    browser = login(app, "owner")
    assert browser.get("/console/leads/export?format=csv&status=new").status_code == 303
    (job,) = _jobs(app)
    path = Path(app.config["EXPORT_DIR"]) / str(job.file_name)
    assert path.is_file()
    assert job.expires_at is not None

    # Before expiry the cleanup leaves it alone.
    assert export_cleanup_job(app, job.expires_at - timedelta(minutes=1)) == {"stale": 0, "files": 0, "rows": 0}
    assert path.is_file()

    with app.app_context():
        found = db.session().get(ExportJob, job.id)
        assert found is not None
        found.expires_at = db.utcnow() - timedelta(seconds=1)
        db.commit()
    response = browser.get(f"/console/exports/{job.id}/download")
    assert response.status_code == 410 and "过期" in response.text
    assert 'data-state="expired"' in browser.get(f"/console/exports/{job.id}").text

    now = db.utcnow()
    assert export_cleanup_job(app, now) == {"stale": 0, "files": 1, "rows": 0}
    assert not path.exists()
    assert browser.get(f"/console/exports/{job.id}/download").status_code == 410
    # A week later the row goes too.
    assert export_cleanup_job(app, now + timedelta(days=8)) == {"stale": 0, "files": 0, "rows": 1}
    assert _jobs(app) == []
    assert browser.get(f"/console/exports/{job.id}/download").status_code == 404


def test_an_export_that_died_with_its_process_is_marked_failed(app: Flask, demo: dict[str, Any]) -> None:
    browser = login(app, "owner")
    export_dir = Path(app.config["EXPORT_DIR"])
    export_dir.mkdir(parents=True, exist_ok=True)
    with app.app_context():
        owner = db.session().scalars(select(Staff).where(Staff.username == "owner")).one()
        job = export_jobs.start_export(db.session(), staff_id=owner.id, list_name="orders", fmt="xlsx", filters={}, rows_total=10)
        job.state = ExportState.running
        db.commit()
        job_id, name, started = job.id, job.file_name, job.updated_at
    (export_dir / f"{name}.part").write_bytes(b"half a file")

    assert export_cleanup_job(app, started + timedelta(minutes=9)) == {"stale": 0, "files": 0, "rows": 0}
    assert export_cleanup_job(app, started + timedelta(minutes=11)) == {"stale": 1, "files": 0, "rows": 0}
    (job,) = _jobs(app)
    assert job.state == ExportState.failed and "中断" in job.error
    assert not (export_dir / f"{name}.part").exists()
    page = browser.get(f"/console/exports/{job_id}").text
    assert 'data-state="failed"' in page and "中断" in page
    assert browser.get(f"/console/exports/{job_id}/download").status_code == 410


def test_a_failing_export_job_is_marked_failed_and_leaves_no_file(app: Flask, demo: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from server.console import export_pages

    def broken(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_pages, "write_csv", broken)
    app.config["EXPORT_STREAM_MAX_ROWS"] = 1
    browser = login(app, "owner")
    assert browser.get("/console/orders/export?format=csv").status_code == 303
    (job,) = _jobs(app)
    assert job.state == ExportState.failed and job.error
    assert not list(Path(app.config["EXPORT_DIR"]).glob("*"))
    assert 'data-state="failed"' in browser.get(f"/console/exports/{job.id}").text


def test_a_staff_member_has_at_most_three_exports_under_way(app: Flask, demo: dict[str, Any]) -> None:
    app.config["EXPORT_STREAM_MAX_ROWS"] = 1
    browser = login(app, "owner")
    with app.app_context():
        owner = db.session().scalars(select(Staff).where(Staff.username == "owner")).one()
        for status in ("paid", "shipped", "completed"):
            export_jobs.start_export(db.session(), staff_id=owner.id, list_name="orders", fmt="csv", filters={"status": status}, rows_total=5)
        db.commit()
    response = browser.get("/console/orders/export?format=csv")
    assert response.status_code == 429
    assert len(_jobs(app)) == 3


def test_exports_read_the_list_in_keyset_batches_and_csv_streams(app: Flask, demo: dict[str, Any]) -> None:
    """No query reads the whole list: each batch asks for the next two rows after the last key seen."""
    browser = login(app, "owner")
    with statements_sent(app) as statements:
        response = browser.get("/console/distributors/export?format=csv")
        assert response.is_streamed
        rows = csv_rows(response.data)
    reads = [s for s in statements if s.startswith("SELECT") and "FROM distributors" in s and "count(" not in s]
    assert len(rows) >= 2
    assert len(reads) == len(rows) // 2 + 1
    assert all("LIMIT" in s for s in reads), reads
    assert all("applied_at <" in s for s in reads[1:]), reads
