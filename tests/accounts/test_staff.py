"""Staff sign-in, role guards, staff and member administration, and the CLI commands."""
from __future__ import annotations

from sqlalchemy import select

from server import db
from server.accounts.models import AuditEntry, Staff


def test_staff_password_login(client, make_staff):
    make_staff("owner", username="boss", password="right-password")
    ok = client.post("/admin/api/v1/auth/login", json={"username": "boss", "password": "right-password"})
    assert ok.status_code == 200
    assert ok.get_json()["data"]["staff"]["role"] == "owner"
    assert "password" not in ok.get_data(as_text=True)
    for body in ({"username": "boss", "password": "wrong-password"}, {"username": "nobody", "password": "right-password"}):
        response = client.post("/admin/api/v1/auth/login", json=body)
        assert response.status_code == 401 and response.get_json()["code"] == 40110


def test_member_token_is_not_a_staff_token(client, wx_login):
    alice = wx_login("alice")
    assert client.get("/admin/api/v1/me", headers=alice["headers"]).status_code == 401


def test_roles_guard_admin_routes(client, staff_login, wx_login):
    wx_login("alice")
    finance, ops, owner = staff_login("finance"), staff_login("operations"), staff_login("owner")
    assert client.get("/admin/api/v1/members", headers=finance).status_code == 403
    assert client.get("/admin/api/v1/members", headers=ops).get_json()["data"]["total"] == 1
    assert client.get("/admin/api/v1/members", headers=owner).status_code == 200
    assert client.get("/admin/api/v1/staff", headers=ops).status_code == 403
    assert len(client.get("/admin/api/v1/staff", headers=owner).get_json()["data"]["items"]) == 3


def test_owner_creates_and_disables_staff(app, client, staff_login):
    owner = staff_login("owner")
    created = client.post(
        "/admin/api/v1/staff", headers=owner, json={"username": "lin", "password": "long-enough", "role": "finance"}
    )
    assert created.status_code == 201
    staff_id = created.get_json()["data"]["id"]
    dup = client.post("/admin/api/v1/staff", headers=owner, json={"username": "lin", "password": "long-enough", "role": "finance"})
    assert dup.status_code == 409
    weak = client.post("/admin/api/v1/staff", headers=owner, json={"username": "wu", "password": "short", "role": "finance"})
    assert weak.status_code == 422
    bad_role = client.post("/admin/api/v1/staff", headers=owner, json={"username": "wu", "password": "long-enough", "role": "god"})
    assert bad_role.status_code == 422

    lin = client.post("/admin/api/v1/auth/login", json={"username": "lin", "password": "long-enough"}).get_json()["data"]
    lin_headers = {"Authorization": f"Bearer {lin['token']}"}
    assert client.get("/admin/api/v1/me", headers=lin_headers).status_code == 200
    assert client.patch(f"/admin/api/v1/staff/{staff_id}", headers=owner, json={"active": False}).status_code == 200
    assert client.get("/admin/api/v1/me", headers=lin_headers).status_code == 401
    with app.app_context():
        actions = db.session().scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert "staff.create" in actions and "staff.disable" in actions


def test_create_staff_command(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-staff", "mei", "--role", "operations", "--password", "pw-long-enough"])
    assert result.exit_code == 0, result.output
    assert "mei" in result.output
    again = runner.invoke(args=["create-staff", "mei", "--role", "operations", "--password", "pw-long-enough"])
    assert again.exit_code != 0 and "exists" in again.output
    with app.app_context():
        assert db.session().scalars(select(Staff).where(Staff.username == "mei")).one().role.value == "operations"


def test_seed_demo_is_safe_twice(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["seed-demo"])
    second = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0 and second.exit_code == 0, (first.output, second.output)
    assert "created" in first.output and "already there" in second.output
    with app.app_context():
        assert len(db.session().scalars(select(Staff)).all()) == 3


def test_guessing_passwords_elsewhere_cannot_lock_the_owner_out(app_factory, make_staff):
    app = app_factory(LOGIN_RATE_LIMIT=8, STAFF_LOGIN_RATE_LIMIT=3)
    client = app.test_client()
    make_staff("owner", username="owner")
    login = "/admin/api/v1/auth/login"

    def attempt(password: str, address: str, username: str = "owner") -> int:
        body = {"username": username, "password": password}
        return client.post(login, json=body, environ_base={"REMOTE_ADDR": address}).status_code

    attacker = [attempt(f"guess-{n}", "203.0.113.66") for n in range(5)]
    assert attacker == [401, 401, 401, 429, 429]
    # The owner, at the office, signs in as usual.
    assert attempt("correct-horse", "198.51.100.10") == 200
    # The attacker's address as a whole is limited too, whatever username it tries.
    others = [attempt("guess", "203.0.113.66", username=f"user{n}") for n in range(5)]
    assert others[-1] == 429 and client.post(login, json={"username": "owner", "password": "x"}, environ_base={"REMOTE_ADDR": "203.0.113.66"}).get_json()["code"] == 42900
