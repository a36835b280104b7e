"""One commit per request: a successful response commits, anything else rolls back, in one place.

Routes do not commit; the few that must commit early (so that no transaction is open while
WeChat answers, before a lock is released, or to keep a write under an error answer) are listed
in ``EARLY_COMMITS`` with the reason.
Jobs and CLI commands are units of work of their own and commit themselves (``OWN_UNITS``).
Services never commit.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server import db
from server.accounts.models import Staff, StaffRole
from server.errors import ConflictError, envelope

ROOT = Path(__file__).resolve().parent.parent

#: Request code that commits before the request ends: (file, function) and why.
EARLY_COMMITS = {
    ("server/accounts/routes.py", "bind_phone"): "the sign-in check's transaction ends before WeChat is asked for the number",
    ("server/posters/routes.py", "create_poster"): "get_poster commits before the avatar host and WeChat; the row commits before its render lock is released",
    ("server/posters/routes.py", "set_default"): "the new default commits before the default-template lock is released",
    ("server/console/posters_pages.py", "posters_default"): "the new default commits before the default-template lock is released",
    ("server/orders/pay_routes.py", "_apply"): "a payment notice whose commit fails is still answered in WeChat Pay's words",
    ("server/orders/payments.py", "prepay_order"): "the planned prepay commits before WeChat Pay is asked for a prepay_id",
    ("server/orders/payments.py", "resend_abnormal_refund"): "the resend commits before WeChat Pay is asked, and its refusal is kept",
    ("server/referral/routes.py", "landing"): "a visit to a dead scene is kept, though the landing page answers 404",
    ("server/referral/oa_routes.py", "_record_scan_once"): "a scan whose commit fails still gets the follower their welcome",
    ("server/referral/oa_routes.py", "member_qrcode"): "the member's scene commits before WeChat draws its QR code",
    ("server/memberzone/routes.py", "home"): "the member zone's scenes commit before WeChat draws the QR code",
    ("server/memberzone/wechat_share.py", "zone_share"): "the member's share scene commits before WeChat gives the JS-SDK ticket and the mini-program link",
    ("server/memberzone/share_pages.py", "share"): "get_poster commits before the avatar host and WeChat; the row commits before its render lock is released",
}

#: Jobs and CLI commands: each is a unit of work of its own (``db.unit_of_work``) and commits it.
OWN_UNITS = {
    ("server/cli.py", "create_staff_command"),
    ("server/cli.py", "seed_demo_command"),
    ("server/distribution/cli.py", "regrade_command"),
    ("server/points/cli.py", "settle_command"),
    ("server/points/cli.py", "grant_command"),
    ("server/points/cli.py", "override_set_command"),
    ("server/points/cli.py", "override_remove_command"),
    ("server/points/cli.py", "stage_add_command"),
    ("server/points/cli.py", "stage_set_command"),
    ("server/settings/cli.py", "set_command"),
    ("server/scheduler.py", "stage_bonus_job"),
    ("server/scheduler.py", "_finish"),
    ("server/scheduler.py", "orders_tick"),
    ("server/scheduler.py", "_points_of"),
    ("server/scheduler.py", "refund_retry_job"),
    ("server/scheduler.py", "notifications_job"),
    # Sending a message: the claim commits before WeChat is asked, the outcome in a transaction of its own.
    ("server/notifications/delivery.py", "claim"),
    ("server/notifications/delivery.py", "record_outcome"),
    ("server/notifications/delivery.py", "deliver"),
    ("server/tasks.py", "_run"),
    # A queued job: taking it commits, then the work commits with the row's deletion, a failure on its own.
    ("server/jobs/queue.py", "claim"),
    ("server/jobs/queue.py", "run"),
    ("server/jobs/queue.py", "_record_failure"),
    ("server/jobs/cli.py", "retry_command"),
    ("server/jobs/cli.py", "purge_command"),
    # The rollup rebuild commits day by day, then the months.
    ("server/reports/cli.py", "done"),
    ("server/reports/cli.py", "rebuild_command"),
    # A background export commits its start, its progress after each batch, and its end.
    ("server/console/export_pages.py", "run_export_job"),
    ("server/console/export_pages.py", "_save_progress"),
    # Refund submission, its query and the reconciliation of an unpaid order: one unit per refund
    # or order, committed before and after WeChat Pay answers.
    ("server/orders/payments.py", "submit_refund"),
    ("server/orders/payments.py", "query_refund"),
    ("server/orders/payments.py", "reconcile_order"),
}


def _commit_sites() -> Iterator[tuple[str, str | None, int]]:
    """Every mention of ``commit`` (``db.commit``, ``sess.commit``, ``from server.db import commit``) outside server/db.py."""
    for path in sorted((ROOT / "server").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name == "server/db.py":
            continue

        def visit(node: ast.AST, function: str | None) -> Iterator[tuple[str, str | None, int]]:
            for child in ast.iter_child_nodes(node):
                inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
                if isinstance(child, ast.Attribute) and child.attr == "commit":
                    yield name, inner, child.lineno
                if isinstance(child, ast.ImportFrom) and any(alias.name == "commit" for alias in child.names):
                    yield name, inner, child.lineno
                yield from visit(child, inner)

        yield from visit(ast.parse(path.read_text(encoding="utf-8")), None)


def test_only_the_listed_places_commit() -> None:
    allowed = set(EARLY_COMMITS) | OWN_UNITS
    unexpected = [f"{name}:{line} in {function}" for name, function, line in _commit_sites() if (name, function) not in allowed]
    assert not unexpected, "requests commit once, in db.finish_request; an early commit needs an entry in EARLY_COMMITS: " + ", ".join(unexpected)


def test_the_allow_list_has_no_stale_entries() -> None:
    found = {(name, function) for name, function, _ in _commit_sites()}
    assert (set(EARLY_COMMITS) | OWN_UNITS) - found == set()


def test_services_never_commit() -> None:
    offenders = [f"{name}:{line}" for name, _, line in _commit_sites() if name.endswith("/services.py")]
    assert not offenders


# -- the request's unit of work ------------------------------------------------------------------


def _staff_count(app: Flask, username: str) -> int:
    with app.app_context():
        return db.session().scalar(select(func.count()).select_from(Staff).where(Staff.username == username)) or 0


def _add_staff(username: str) -> None:
    db.session().add(Staff(username=username, password_hash="x", role=StaffRole.owner))


@pytest.fixture
def ran() -> list[str]:
    return []


@pytest.fixture
def test_routes(app: Flask, ran: list[str]) -> FlaskClient:
    """Routes that write and then answer in each way a route can."""

    @app.post("/test/ok")
    def ok() -> Any:
        _add_staff("kept")
        db.after_commit(lambda: ran.append("ok"))
        return envelope(None)

    @app.post("/test/raises")
    def raises() -> Any:
        _add_staff("raised")
        db.session().flush()
        db.after_commit(lambda: ran.append("raises"))
        raise ConflictError("after writing")

    @app.post("/test/crashes")
    def crashes() -> Any:
        _add_staff("crashed")
        db.session().flush()
        db.after_commit(lambda: ran.append("crashes"))
        raise RuntimeError("after writing")

    @app.post("/test/answers-an-error")
    def answers_an_error() -> Any:
        _add_staff("error-answer")
        db.session().flush()
        db.after_commit(lambda: ran.append("error answer"))
        return "refused", 403

    @app.post("/test/commit-fails")
    def commit_fails() -> Any:
        # Two rows with one username: nothing is flushed until the commit, which fails.
        _add_staff("twice")
        _add_staff("twice")
        db.after_commit(lambda: ran.append("commit fails"))
        return envelope(None)

    return app.test_client()


def test_a_successful_route_commits_without_calling_commit(app: Flask, test_routes: FlaskClient, ran: list[str]) -> None:
    assert test_routes.post("/test/ok").status_code == 200
    assert _staff_count(app, "kept") == 1
    assert ran == ["ok"]


def test_a_real_write_route_persists_its_write(app: Flask, client: FlaskClient, staff_login: Any) -> None:
    headers = staff_login("owner")
    response = client.put("/admin/api/v1/settings/shop_name", json={"value": "一次提交"}, headers=headers)
    assert response.status_code == 200, response.get_json()
    from server.settings.services import get_setting

    with app.app_context():
        assert get_setting(db.session(), "shop_name") == "一次提交"


@pytest.mark.parametrize("path, status", [("/test/raises", 409), ("/test/crashes", 500), ("/test/answers-an-error", 403)])
def test_an_error_after_writing_leaves_nothing(app: Flask, test_routes: FlaskClient, ran: list[str], path: str, status: int) -> None:
    assert test_routes.post(path).status_code == status
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(Staff)) == 0
    assert ran == []


def test_a_commit_that_fails_answers_the_error_envelope(app: Flask, test_routes: FlaskClient, ran: list[str]) -> None:
    response = test_routes.post("/test/commit-fails")
    assert response.status_code == 500
    assert response.get_json() == {"code": 50000, "message": "internal error", "data": None}
    assert _staff_count(app, "twice") == 0
    assert ran == []
