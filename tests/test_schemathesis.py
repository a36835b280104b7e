"""Schemathesis fuzzes every operation of the written spec against the app, in process (WSGI).

Each operation is its own test item with its own app and an emptied database, so
what one operation does (a member disabled, a token revoked) never reaches another.
Member routes get alice's token and admin routes an owner's token, both signed in
through the sandbox once per item. The logout operations revoke the token they are
called with, so they get a fresh one for every case; otherwise every case after the
first could only ever see 401.

The spec's example path ids stand for records that exist: a case that uses one is
pointed at a record the item creates on first use, from the spec's own example of the
creating request. Random ids still reach the 404 paths.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings

SPEC_PATH = Path(__file__).resolve().parent.parent / "miniprogram_api_spec" / "openapi.yaml"
CHECKED = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")
LOGOUT_PATHS = {"/api/v1/auth/logout", "/admin/api/v1/auth/logout"}

schema = schemathesis.openapi.from_path(
    SPEC_PATH,
    # Only what a response must be is checked here. The checks that judge which inputs the app should
    # accept need state or meaning the spec cannot carry (e.g. whether a new staff username is free).
    config=schemathesis.Config.from_dict({"checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKED}}}),
)


def request_example(path: str) -> dict[str, Any]:
    """The spec's example JSON body of ``POST path``."""
    return schema[path]["POST"].definition.raw["requestBody"]["content"]["application/json"]["example"]


#: The owner signs in with the spec's own example, so the examples phase sees a successful staff sign-in.
OWNER_LOGIN = request_example("/admin/api/v1/auth/login")
#: Path parameter name -> the value the spec gives as its example.
EXAMPLE_IDS = {p["name"]: p["example"] for p in schema.raw_schema["components"]["parameters"].values() if p["in"] == "path" and "example" in p}


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    """The app under test; the fuzzer signs in far more often than the test limit allows."""
    return app_factory(LOGIN_RATE_LIMIT=100_000)


class Accounts:
    """The accounts and records a case acts as or on, created in this item's database on first use."""

    def __init__(self, client: FlaskClient, wx_login: Callable[..., dict[str, Any]], make_staff: Callable[..., Any]):
        self._client = client
        self._wx_login = wx_login
        self._make_staff = make_staff
        self._seeded: dict[str, Any] = {}

    def fresh_member(self) -> dict[str, str]:
        return self._wx_login("alice")["headers"]

    def fresh_owner(self) -> dict[str, str]:
        response = self._client.post(
            "/admin/api/v1/auth/login", json={"username": self.owner_username, "password": OWNER_LOGIN["password"]}
        )
        assert response.status_code == 200, response.get_json()
        return {"Authorization": f"Bearer {response.get_json()['data']['token']}"}

    @cached_property
    def alice(self) -> dict[str, Any]:
        """Alice, signed in with a phone bound, so responses show a masked phone and not only null."""
        signed_in = self._wx_login("alice")
        response = self._client.post(
            "/api/v1/me/phone", json={"code": "sandbox-phone:13800138000"}, headers=signed_in["headers"]
        )
        assert response.status_code == 200, response.get_json()
        return signed_in

    @cached_property
    def owner_username(self) -> str:
        return self._make_staff("owner", username=OWNER_LOGIN["username"], password=OWNER_LOGIN["password"]).username

    @cached_property
    def owner(self) -> dict[str, str]:
        return self.fresh_owner()

    def colleague(self) -> int:
        """Staff the owner may disable: nobody may disable their own account."""
        return self._make_staff("operations", username="fuzz-colleague").id

    def create(self, path: str, *, as_member: bool = False) -> dict[str, Any]:
        """POST the spec's example to ``path`` as alice or the owner; the response's data."""
        headers = self.alice["headers"] if as_member else self.owner
        response = self._client.post(path, json=request_example(path), headers=headers)
        assert response.status_code in (200, 201), (path, response.get_json())
        return response.get_json()["data"]

    def seed(self, name: str) -> Any:
        """The id of an existing record for path parameter ``name``."""
        if name not in self._seeded:
            self._seeded[name] = SEEDS[name](self)
        return self._seeded[name]

    def prepare(self, case: schemathesis.Case) -> None:
        """Point the case at existing records where it uses the spec's example ids, and sign it in."""
        operation = case.operation
        admin = operation.path.startswith("/admin/")
        if admin:
            # Before the sign-in operation too, so the spec's example credentials find the account.
            _ = self.owner_username
        if operation.path.startswith("/admin/api/v1/members"):
            # So the list and the lookups have someone to return.
            _ = self.alice
        for name, value in case.path_parameters.items():
            if name in SEEDS and value == EXAMPLE_IDS.get(name):
                case.path_parameters[name] = self.seed(name)
        if not operation.definition.raw.get("security", True):
            return
        if operation.path in LOGOUT_PATHS:
            headers = self.fresh_owner() if admin else self.fresh_member()
        else:
            headers = self.owner if admin else self.alice["headers"]
        case.headers.update(headers)


#: How to make the record a path parameter's example id stands for.
SEEDS: dict[str, Callable[[Accounts], Any]] = {
    "member_id": lambda a: a.alice["user"]["id"],
    "staff_id": Accounts.colleague,
    "code": lambda a: a.create("/api/v1/referral/scenes", as_member=True)["scene"],
    "lead_id": lambda a: a.create("/api/v1/referral/leads", as_member=True)["id"],
    "partner_id": lambda a: a.create("/admin/api/v1/partners")["id"],
    "distributor_id": lambda a: a.create("/api/v1/distributors/apply", as_member=True)["id"],
    "grade_id": lambda a: a.create("/admin/api/v1/grades")["id"],
    "material_id": lambda a: a.create("/admin/api/v1/materials")["id"],
    "template_id": lambda a: a.create("/admin/api/v1/poster-templates")["id"],
    "token": lambda a: a.create("/api/v1/referral/posters", as_member=True)["image_url"].rsplit("/", 1)[1].removesuffix(".png"),
}


@pytest.fixture
def accounts(client: FlaskClient, wx_login: Callable[..., dict[str, Any]], make_staff: Callable[..., Any]) -> Accounts:
    return Accounts(client, wx_login, make_staff)


def test_every_example_id_has_a_seed() -> None:
    assert set(EXAMPLE_IDS) == set(SEEDS)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    # Each operation is one pytest item, and its app, database and tokens belong to that item on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_api_conforms_to_spec(case: schemathesis.Case, app: Flask, accounts: Accounts) -> None:
    accounts.prepare(case)
    case.call_and_validate(app=app)
