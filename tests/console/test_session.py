"""The staff session: sign-in, CSRF, logout, idle timeout, password change, and the cookie's flags."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from flask import Flask

from server import db
from server.accounts.models import AuditEntry, AuthSession, Staff
from sqlalchemy import select
from tests.console.conftest import PASSWORD, Console


def test_sign_in_sets_a_locked_down_cookie_and_lands_on_the_dashboard(console: Callable[..., Console], make_staff: Any) -> None:
    make_staff("owner", username="boss")
    browser = console()
    browser.get("/console/login")
    response = browser.post("/console/login", {"username": "boss", "password": PASSWORD})
    assert response.status_code == 303 and response.location == "/console/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie and "Secure" not in cookie
    assert "boss" in browser.get("/console/").text


@pytest.mark.parametrize("app_env,secure", [("production", True), ("development", False)])
def test_the_cookie_is_secure_in_production(app_env: str, secure: bool) -> None:
    from server import console

    bare = Flask("console-cookie")
    bare.config.update(APP_ENV=app_env, SECRET_KEY="k" * 40)
    console.init_app(bare)
    assert bare.config["SESSION_COOKIE_SECURE"] is secure


def test_wrong_password_and_unknown_user_are_refused_alike(console: Callable[..., Console], make_staff: Any) -> None:
    make_staff("owner", username="boss")
    browser = console()
    for username, password in (("boss", "wrong-horse"), ("nobody", PASSWORD)):
        response = browser.post("/console/login", {"username": username, "password": password})
        assert response.status_code == 401 and "用户名或密码错误" in response.text
    assert browser.post("/console/login", {"username": "", "password": ""}).status_code == 400
    assert browser.get("/console/").status_code == 302


def test_sign_in_keeps_the_admin_apis_rate_limit(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(STAFF_LOGIN_RATE_LIMIT=2)
    browser = Console(app.test_client())
    codes = [browser.post("/console/login", {"username": "boss", "password": "nope-nope"}).status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    assert "尝试次数过多" in browser.post("/console/login", {"username": "boss", "password": "nope-nope"}).text


def test_a_form_posted_without_its_csrf_token_is_refused(console: Callable[..., Console], make_staff: Any, app: Flask) -> None:
    owner = console("owner")
    for path, data in (
        ("/console/settings/binding_protection_days", {"value": "45"}),
        ("/console/staff", {"username": "sneaky", "password": "long-enough-pw", "role": "owner"}),
        ("/console/logout", {}),
        ("/console/login", {"username": "owner-console", "password": PASSWORD}),
    ):
        response = owner.post(path, data, csrf=False)
        assert response.status_code == 400 and "CSRF" in response.text, path
        response = owner.post(path, {**data, "csrf_token": "forged"}, csrf=False)
        assert response.status_code == 400, path
    with app.app_context():
        assert db.session().scalar(select(Staff.id).where(Staff.username == "sneaky")) is None
    # The JSON API is not affected: bearer-token requests need no CSRF token.
    response = owner.client.post("/admin/api/v1/auth/login", json={"username": "owner-console", "password": PASSWORD})
    assert response.status_code == 200


def test_htmx_requests_may_send_the_token_in_a_header(console: Callable[..., Console]) -> None:
    owner = console("owner")
    response = owner.client.post(
        "/console/settings/binding_protection_days", data={"value": "40"}, headers={"X-CSRFToken": owner.token, "HX-Request": "true"}
    )
    assert response.status_code == 303


def test_logout_revokes_the_session(console: Callable[..., Console], app: Flask) -> None:
    owner = console("owner")
    assert owner.post("/console/logout").status_code == 303
    assert owner.get("/console/").status_code == 302
    with app.app_context():
        rows = db.session().scalars(select(AuthSession)).all()
        assert rows and all(row.revoked_at is not None for row in rows)


def test_an_idle_session_ends_and_its_token_is_revoked(console: Callable[..., Console], app: Flask) -> None:
    owner = console("owner")
    assert owner.get("/console/").status_code == 200
    with owner.client.session_transaction(path="/console/") as session:
        session["seen"] -= app.config["CONSOLE_IDLE_MINUTES"] * 60 + 1
    response = owner.get("/console/members")
    assert response.status_code == 302 and response.location.startswith("/console/login?next=/console/members")
    assert "长时间未操作" in owner.get(response.location).text
    with app.app_context():
        assert all(row.revoked_at is not None for row in db.session().scalars(select(AuthSession)))


def test_a_session_just_inside_the_timeout_lives_on(console: Callable[..., Console], app: Flask) -> None:
    owner = console("owner")
    with owner.client.session_transaction(path="/console/") as session:
        session["seen"] -= app.config["CONSOLE_IDLE_MINUTES"] * 60 - 30
    assert owner.get("/console/").status_code == 200


def test_a_tampered_cookie_is_no_session(console: Callable[..., Console]) -> None:
    owner = console("owner")
    with owner.client.session_transaction(path="/console/") as session:
        session["staff_token"] = "not-a-sealed-token"
    assert owner.get("/console/").status_code == 302


def test_disabling_an_account_ends_its_console_session(console: Callable[..., Console], staff_login: Callable[..., dict[str, str]], app: Flask) -> None:
    ops = console("operations")
    owner_headers = staff_login("owner")
    with app.app_context():
        ops_id = db.session().scalars(select(Staff.id).where(Staff.username == "operations-console")).one()
    ops.client.patch(f"/admin/api/v1/staff/{ops_id}", json={"active": False}, headers=owner_headers)
    assert ops.get("/console/").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/console/", "/api/v1/me", "/console\\..\\x", "javascript:alert(1)"])
def test_next_never_leaves_the_console(console: Callable[..., Console], make_staff: Any, target: str) -> None:
    make_staff("owner", username="boss")
    browser = console()
    browser.get("/console/login")
    response = browser.post("/console/login", {"username": "boss", "password": PASSWORD, "next": target})
    assert response.location == "/console/"


def test_next_returns_to_the_page_asked_for(console: Callable[..., Console], make_staff: Any) -> None:
    make_staff("owner", username="boss")
    browser = console()
    assert browser.get("/console/audit?action=staff").location == "/console/login?next=/console/audit?action%3Dstaff"
    browser.get("/console/login?next=/console/audit?action%3Dstaff")
    response = browser.post("/console/login", {"username": "boss", "password": PASSWORD, "next": "/console/audit?action=staff"})
    assert response.location == "/console/audit?action=staff"


def test_password_change_needs_the_old_password_and_ends_other_sessions(console: Callable[..., Console], app: Flask, make_staff: Any) -> None:
    owner = console("owner", username="boss")
    other_device = Console(app.test_client())
    assert other_device.login("boss").status_code == 303
    wrong = owner.post("/console/account/password", {"old_password": "wrong-horse", "new_password": "new-password-1", "new_password_again": "new-password-1"})
    assert wrong.status_code == 401 and "当前密码不正确" in wrong.text
    mismatch = owner.post("/console/account/password", {"old_password": PASSWORD, "new_password": "new-password-1", "new_password_again": "new-password-2"})
    assert mismatch.status_code == 422 and "不一致" in mismatch.text
    short = owner.post("/console/account/password", {"old_password": PASSWORD, "new_password": "short", "new_password_again": "short"})
    assert short.status_code == 422 and "至少 8 位" in short.text
    done = owner.post("/console/account/password", {"old_password": PASSWORD, "new_password": "new-password-1", "new_password_again": "new-password-1"})
    assert done.status_code == 303
    assert owner.get("/console/").status_code == 200, "this browser stays signed in"
    assert other_device.get("/console/").status_code == 302, "every other session ended"
    fresh = Console(app.test_client())
    assert fresh.login("boss").status_code == 401
    assert fresh.login("boss", "new-password-1").status_code == 303
    with app.app_context():
        assert db.session().scalars(select(AuditEntry.action).where(AuditEntry.action == "staff.password_change")).all() == ["staff.password_change"]
