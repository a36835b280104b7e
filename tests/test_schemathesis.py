"""Schemathesis fuzzes every operation of the written spec against the app, in process (WSGI).

One app, one database and one set of sign-ins serve the whole module: building them per
operation cost more than the fuzzing. What a case can break for the cases after it is put
right before each operation (``Accounts.restore``): alice is re-enabled and signed in again
if an operation disabled her, and the owner signed in again if their token stopped working.
Everything else a case does (a grade deleted, an order shipped) is state the next operation
may meet, and a 404 or 409 it answers is as much the spec's business as a 200. The logout
operations revoke the token they are called with, so they get a fresh one for every case.

The spec's example path ids stand for records that exist: a case that uses one is pointed
at a record made before the fuzzing starts, mostly from the spec's own example of the
creating request. Random ids still reach the 404 paths.

The suite runs twice in CI, and this module has to fit in about 90 seconds: console
operations get fewer examples than the mini-program's, WeChat Pay's notify URLs fewer still,
and the coverage phase is limited to valid values at the schemas' boundaries.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.hypothesis.builder import ApiOperationMark
from schemathesis.specs.openapi.checks import positive_data_acceptance
from werkzeug.security import generate_password_hash

from server import create_app, db
from server.accounts.models import Member, MemberStatus, StaffRole
from server.accounts.services import create_staff
from wechat_sandbox import SandboxServer, build_pay_notification, install_pay_merchant, pay_merchant_from_config
from tests.conftest import _empty_database, make_config

SPEC_PATH = Path(__file__).resolve().parent.parent / "miniprogram_api_spec" / "openapi.yaml"
LOGOUT_PATHS = {"/api/v1/auth/logout", "/admin/api/v1/auth/logout"}
#: Fuzzing examples per operation: the console's operations are many and mostly alike, and WeChat Pay's
#: notify URLs take signed XML or encrypted JSON that random bodies never forge.
MEMBER_EXAMPLES, ADMIN_EXAMPLES, PAY_NOTIFY_EXAMPLES = 20, 10, 5

def load_schema(checks: dict[str, Any]) -> Any:
    """The written spec, with ``checks`` configured on top of every check."""
    return schemathesis.openapi.from_path(
        SPEC_PATH,
        config=schemathesis.Config.from_dict(
            {
                "checks": {"enabled": True, **checks},
                # Boundary values of the schemas, not the invalid inputs: those are the fuzzing phase's.
                "phases": {"coverage": {"generation": {"mode": "positive"}, "unexpected-methods": []}},
            }
        ),
    )


#: Every check runs. The two that judge inputs meet refusals no schema can carry (whether WeChat knows a code,
#: a refund is within what is left): BUSINESS_REFUSALS excuses those, by code and field.
schema = load_schema({})
#: WeChat Pay's callbacks: nothing random is signed, so a valid body is refused (v3 with a 4xx), and v2 answers
#: every notification 200 with FAIL or SUCCESS in its XML, as WeChat Pay v2 expects. A schema of their own,
#: because schemathesis's per-operation settings would override the selection of each test's operations.
pay_schema = load_schema(
    {
        "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401"]},
        "negative_data_rejection": {"expected-statuses": ["200", "400", "401", "413", "415", "422"]},
    }
)
#: One test per audience, each with its own number of examples: schemathesis's per-operation settings
#: would do the same, but resolving them costs about a millisecond per case.
CONSOLE = r"^/admin/"
PAY_NOTIFY = r"^/wechat/pay/"


def request_example(path: str) -> dict[str, Any]:
    """The spec's example JSON body of ``POST path``."""
    return schema[path]["POST"].definition.raw["requestBody"]["content"]["application/json"]["example"]


def _path_parameter_components() -> dict[tuple[str, str], str]:
    """(path template, parameter name) -> the ``components/parameters`` entry the path refers to."""
    found: dict[tuple[str, str], str] = {}
    for path, item in schema.raw_schema["paths"].items():
        operations = [item] + [op for key, op in item.items() if key != "parameters" and isinstance(op, dict)]
        for holder in operations:
            for parameter in holder.get("parameters", []):
                ref = parameter.get("$ref", "")
                if ref.startswith("#/components/parameters/"):
                    component = ref.rsplit("/", 1)[1]
                    declared = schema.raw_schema["components"]["parameters"][component]
                    if declared["in"] == "path":
                        found[(path, declared["name"])] = component
    return found


#: The owner signs in with the spec's own example, so the examples phase sees a successful staff sign-in.
OWNER_LOGIN = request_example("/admin/api/v1/auth/login")
#: Path parameter component -> the value the spec gives as its example.
EXAMPLE_IDS = {name: p["example"] for name, p in schema.raw_schema["components"]["parameters"].items() if p["in"] == "path" and "example" in p}
PATH_COMPONENTS = _path_parameter_components()


@pytest.fixture(scope="module")
def app(database_url: str, sandbox: SandboxServer) -> Iterator[Flask]:
    """The app under test, for the whole module; the fuzzer signs in far more often than the test limit allows."""
    config = make_config(database_url, sandbox, LOGIN_RATE_LIMIT=100_000, FEEDBACK_RATE_LIMIT=100_000)
    # The sandbox's WeChat Pay serves the merchant this app is configured as, so orders can be paid.
    install_pay_merchant(sandbox.app, pay_merchant_from_config(vars(config)))
    app = create_app(config)
    yield app
    _empty_database(app)
    if app.extensions["redis"] is not None:
        app.extensions["redis"].flushdb()
    app.extensions["db_engine"].dispose()


class Accounts:
    """The accounts and records the cases act as or on, in the module's database."""

    def __init__(self, app: Flask, sandbox: SandboxServer):
        self._app = app
        self._sandbox = sandbox
        self._client = app.test_client()
        self._seeded: dict[str, Any] = {}
        self.alice: dict[str, Any] = {}
        self.owner: dict[str, str] = {}

    # -- signing in ------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        response = self._client.open(path, method=method, **kwargs)
        assert response.status_code in expect, (method, path, response.status_code, response.get_data(as_text=True)[:500])
        return response.get_json()["data"] if response.is_json else None

    def fresh_member(self) -> dict[str, str]:
        data = self._call("POST", "/api/v1/auth/wx-login", json={"code": "sandbox:alice"})
        return {"Authorization": f"Bearer {data['token']}"}

    def fresh_owner(self) -> dict[str, str]:
        data = self._call("POST", "/admin/api/v1/auth/login", json={"username": OWNER_LOGIN["username"], "password": OWNER_LOGIN["password"]})
        return {"Authorization": f"Bearer {data['token']}"}

    def make_staff(self, role: StaffRole, username: str) -> int:
        with self._app.app_context():
            staff = create_staff(db.session(), username=username, password=OWNER_LOGIN["password"], role=role)
            # A cheap hash of the same password: checking the real one (scrypt) takes a fifth of a second,
            # and the logout cases sign in again for every call.
            staff.password_hash = generate_password_hash(OWNER_LOGIN["password"], method="pbkdf2:sha256:1000")
            db.commit()
            return staff.id

    def sign_in(self) -> None:
        """Alice with a phone bound (so responses show a masked phone, not only null), and the owner."""
        self.make_staff(StaffRole.owner, OWNER_LOGIN["username"])
        headers = self.fresh_member()
        self._call("POST", "/api/v1/me/phone", json={"code": "sandbox-phone:13800138000"}, headers=headers)
        self.alice = self._call("GET", "/api/v1/me", headers=headers) | {"headers": headers}
        self.owner = self.fresh_owner()

    def restore(self) -> None:
        """Undo what a case may have done to the accounts the next operation needs."""
        if self._client.get("/api/v1/me", headers=self.alice["headers"]).status_code != 200:
            with self._app.app_context():
                member = db.session().get(Member, self.alice["id"])
                assert member is not None
                member.status = MemberStatus.active
                db.commit()
            self.alice["headers"] = self.fresh_member()
        if self._client.get("/admin/api/v1/me", headers=self.owner).status_code != 200:
            self.owner = self.fresh_owner()

    # -- records ---------------------------------------------------------------------------

    def create(self, path: str, body: dict[str, Any] | None = None, *, as_member: bool = False, headers: dict[str, str] | None = None) -> Any:
        """POST ``body`` (the spec's example by default) to ``path`` as alice or the owner; the response's data."""
        auth = self.alice["headers"] if as_member else self.owner
        return self._call("POST", path, json=request_example(path) if body is None else body, headers=auth | (headers or {}))

    def seed(self, component: str, path: str) -> Any:
        """The id of an existing record for the path parameter ``component`` of ``path``."""
        key = (component, path) if (component, path) in PATH_SEEDS else component
        if key not in self._seeded:
            self._seeded[key] = (PATH_SEEDS.get(key) or SEEDS[component])(self)  # type: ignore[call-overload]
        return self._seeded[key]

    def product(self) -> int:
        return self.create("/admin/api/v1/products")["id"]

    def sku(self) -> int:
        return self.create(f"/admin/api/v1/products/{self.seed('ProductId', '')}/skus", request_example("/admin/api/v1/products/{product_id}/skus"))["id"]

    def unpaid_order(self) -> int:
        body = request_example("/api/v1/orders") | {"items": [{"sku_id": self.seed("SkuId", ""), "quantity": 1}]}
        return self.create("/api/v1/orders", body, as_member=True)["id"]

    def paid_order(self) -> int:
        """An order paid the way WeChat Pay pays one: a prepay, then its signed notification."""
        order_id = self.unpaid_order()
        self._call("POST", f"/api/v1/orders/{order_id}/pay", headers=self.alice["headers"])
        out_trade_no = self._call("GET", f"/api/v1/orders/{order_id}", headers=self.alice["headers"])["out_trade_no"]
        headers, body = build_pay_notification(self._sandbox.app, out_trade_no)
        self._call("POST", "/wechat/pay/v3/notify", data=body, headers=headers, expect=(204,))
        return order_id

    def refund(self) -> int:
        order_id = self.paid_order()
        return self.create(f"/api/v1/orders/{order_id}/refunds", request_example("/api/v1/orders/{order_id}/refunds"), as_member=True)["id"]

    def contract(self) -> int:
        """A contract for alice, from a lead she left that operations marked valid."""
        lead_id = self.seed("LeadId", "")
        self._call("POST", f"/admin/api/v1/leads/{lead_id}/review", json={"status": "valid"}, headers=self.owner)
        return self.create("/admin/api/v1/contracts", request_example("/admin/api/v1/contracts") | {"lead_id": lead_id})["id"]

    def course(self) -> int:
        """A published course for every member, with a lesson and a quiz, so alice can take it."""
        course_id = self.create("/admin/api/v1/training/courses", request_example("/admin/api/v1/training/courses") | {"audience": 3})["id"]
        self.create(f"/admin/api/v1/training/courses/{course_id}/lessons", request_example("/admin/api/v1/training/courses/{course_id}/lessons"))
        quiz = {"pass_mark": 60, "questions": [{"prompt": "积分能否兑换现金？", "options": ["能", "不能"], "answer": 1}]}
        self._call("PUT", f"/admin/api/v1/training/courses/{course_id}/quiz", json=quiz, headers=self.owner)
        self.create(f"/admin/api/v1/training/courses/{course_id}/publication", {"published": True})
        return course_id

    def lesson(self) -> int:
        course_id = self.seed("CourseId", "")
        return self._call("GET", f"/admin/api/v1/training/courses/{course_id}", headers=self.owner)["lessons"][0]["id"]

    def redemption_item(self) -> int:
        return self.create("/admin/api/v1/points/items")["id"]

    def redemption(self) -> int:
        """Alice redeems the item, with points the owner grants her for it."""
        item_id = self.seed("RedemptionItemId", "")
        grant = request_example("/admin/api/v1/points/adjustments") | {"member_id": self.alice["id"], "amount": 1_000_000}
        self.create("/admin/api/v1/points/adjustments", grant, headers={"Idempotency-Key": uuid.uuid4().hex})
        body = request_example("/api/v1/points/redemptions") | {"item_id": item_id}
        return self.create("/api/v1/points/redemptions", body, as_member=True, headers={"Idempotency-Key": uuid.uuid4().hex})["id"]

    # -- cases -----------------------------------------------------------------------------

    def notice(self) -> int:
        """A published notice for every member, so alice reads it."""
        notice_id = self.create("/admin/api/v1/notices", request_example("/admin/api/v1/notices") | {"audience": "all"})["id"]
        self._call("POST", f"/admin/api/v1/notices/{notice_id}/publish", headers=self.owner)
        return notice_id

    def prepare(self, case: schemathesis.Case) -> dict[str, str]:
        """Point the case at existing records where it uses the spec's example ids; the headers that sign it in.

        The token goes with the call, not into the case, so schemathesis knows it for a real one and
        checks that the operation refuses the call without it (or with a made-up one).
        """
        operation = case.operation
        for name, value in case.path_parameters.items():
            component = PATH_COMPONENTS.get((operation.path, name))
            if component in EXAMPLE_IDS and value == EXAMPLE_IDS[component]:
                case.path_parameters[name] = self.seed(component, operation.path)
        if not operation.definition.raw.get("security", True):
            return {}
        if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER) and "Authorization" not in (case.headers or {}):
            # The invalid headers this case was made of lack the token: adding it would make them valid.
            return {}
        admin = operation.path.startswith("/admin/")
        if operation.path in LOGOUT_PATHS:
            headers = self.fresh_owner() if admin else self.fresh_member()
        else:
            headers = self.owner if admin else self.alice["headers"]
        return headers


#: How to make the record a path parameter component's example id stands for.
SEEDS: dict[str, Callable[[Accounts], Any]] = {
    "StaffId": lambda a: a.make_staff(StaffRole.operations, "fuzz-colleague"),  # nobody may disable themselves
    "MemberId": lambda a: a.alice["id"],
    "SceneCode": lambda a: a.create("/api/v1/referral/scenes", as_member=True)["scene"],
    "LeadId": lambda a: a.create("/api/v1/referral/leads", as_member=True)["id"],
    "PartnerId": lambda a: a.create("/admin/api/v1/partners")["id"],
    "DistributorId": lambda a: a.create("/api/v1/distributors/apply", as_member=True)["id"],
    "GradeId": lambda a: a.create("/admin/api/v1/grades")["id"],
    "MaterialId": lambda a: a.create("/admin/api/v1/materials")["id"],
    "TemplateId": lambda a: a.create("/admin/api/v1/poster-templates")["id"],
    "PosterToken": lambda a: a.create("/api/v1/referral/posters", as_member=True)["image_url"].rsplit("/", 1)[1].removesuffix(".png"),
    "ProductId": Accounts.product,
    "SkuId": Accounts.sku,
    "OrderId": Accounts.paid_order,
    "RefundId": Accounts.refund,
    "ContractId": Accounts.contract,
    "RedemptionItemId": Accounts.redemption_item,
    "RedemptionId": Accounts.redemption,
    "RewardOverrideId": lambda a: a.create(
        "/admin/api/v1/points/reward-overrides", request_example("/admin/api/v1/points/reward-overrides") | {"ref_id": a.seed("ProductId", "")}
    )["id"],
    "StageRuleId": lambda a: a.create("/admin/api/v1/points/stage-rules")["id"],
    "RulesId": lambda a: a.create("/admin/api/v1/distributor-rules")["id"],
    "NoticeId": Accounts.notice,
    "CourseId": Accounts.course,
    "LessonId": Accounts.lesson,
    "FeedbackId": lambda a: a.create("/api/v1/feedback", as_member=True)["id"],
}
#: Operations that need a record of their own: paying and cancelling want an order nobody paid.
PATH_SEEDS: dict[tuple[str, str], Callable[[Accounts], Any]] = {
    ("OrderId", "/api/v1/orders/{order_id}/pay"): Accounts.unpaid_order,
    ("OrderId", "/api/v1/orders/{order_id}/cancel"): Accounts.unpaid_order,
}


@pytest.fixture(scope="module")
def accounts(app: Flask, sandbox: SandboxServer) -> Accounts:
    """Alice and the owner signed in, and every seeded record made."""
    accounts = Accounts(app, sandbox)
    accounts.sign_in()
    # Every record up front: once the fuzzing starts, it may take the names, stock or rate limits they need.
    for component in SEEDS:
        accounts.seed(component, "")
    for component, path in PATH_SEEDS:
        accounts.seed(component, path)
    return accounts


@pytest.fixture
def signed_in(accounts: Accounts) -> Accounts:
    """The module's accounts, restored for this operation."""
    accounts.restore()
    return accounts


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Name each operation's item by who calls it, so every operation has a node id of its own.

    pytest 9 builds an unparametrized item's node id from the function's name alone, which would
    give every operation the same one.
    """
    if "caller" in metafunc.fixturenames:
        operation = ApiOperationMark.get(metafunc.function)
        assert operation is not None
        caller = "anonymous" if not operation.definition.raw.get("security", True) else "staff" if operation.path.startswith("/admin/") else "member"
        metafunc.parametrize("caller", [caller])


def test_every_example_id_has_a_seed() -> None:
    """An example id without a seed would only ever reach the 404 paths."""
    assert set(EXAMPLE_IDS) == set(SEEDS)
    assert {component for component, _ in PATH_SEEDS} <= set(SEEDS)


SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}


#: Any field (or none) in ``data.errors``.
ANY: frozenset[str] = frozenset()
#: Valid requests an operation refuses for what no schema can carry: what WeChat knows, stored state, settings.
#: Operation -> {envelope code: the only fields its ``data.errors`` may name (ANY: whichever)}. Any other refusal
#: of a request the spec calls valid fails ``positive_data_acceptance``. The README lists these.
BUSINESS_REFUSALS: dict[str, dict[int, frozenset[str]]] = {
    # WeChat does not know a made-up login, phone or OAuth code.
    "POST /api/v1/auth/wx-login": {40010: ANY},
    "POST /api/v1/me/phone": {40011: ANY},
    # Posters cannot show every content type; a content id goes with a content type (the shop's poster has neither).
    "POST /api/v1/referral/posters": {42250: ANY, 42200: frozenset({"content_id"})},
    # Goods are shipped, so they need a contact; the item's kind is stored, not sent.
    "POST /api/v1/points/redemptions": {42200: frozenset({"contact"})},
    # No more than is left to refund.
    "POST /api/v1/orders/{order_id}/refunds": {42260: ANY},
    "POST /admin/api/v1/orders/{order_id}/refunds": {42260: ANY},
    # Each setting's value has its own type and range, chosen by the key in the path.
    "PUT /admin/api/v1/settings/{key}": {42200: ANY},
    # An inactive partner gets no new scenes.
    "POST /admin/api/v1/partners/{partner_id}/scenes": {42200: frozenset({"body"})},
    # The member, the poster template, the lead and the parent contract must exist (and be in a fitting state).
    "POST /admin/api/v1/distributors": {42200: frozenset({"member_id"})},
    "POST /admin/api/v1/points/adjustments": {42200: frozenset({"member_id"})},
    "POST /admin/api/v1/materials": {42200: frozenset({"poster_template_id"})},
    "POST /admin/api/v1/contracts": {42200: frozenset({"lead_id"}), 42261: ANY, 42262: ANY, 42263: ANY, 42264: ANY},
    "POST /admin/api/v1/leads/{lead_id}/assign": {42200: frozenset({"assignee_id"})},
    "POST /admin/api/v1/leads/{lead_id}/member": {42200: frozenset({"member_id"})},
    # A payout's period must be over and end after it starts.
    "POST /admin/api/v1/partners/{partner_id}/payouts": {42200: frozenset({"to"})},
    # A patch is checked with the stored material: its kind's fields, together.
    "PATCH /admin/api/v1/materials/{material_id}": {42200: frozenset({"body", "url", "poster_template_id"})},
    # Layouts are checked against the canvas (sizes scale with it) and background images by their bytes.
    "POST /admin/api/v1/poster-templates": {42252: ANY, 42253: ANY},
    "PATCH /admin/api/v1/poster-templates/{template_id}": {42252: ANY, 42253: ANY},
    # Override rates stay within the merchant's order cap (a setting), for a product or grade that exists.
    "POST /admin/api/v1/points/reward-overrides": {42200: frozenset({"level1_first_bp", "level1_repeat_bp", "ref_id"})},
    "PATCH /admin/api/v1/points/reward-overrides/{override_id}": {42200: frozenset({"level1_first_bp", "level1_repeat_bp"})},
    # A team cursor continues one level (not level=all), and its member id fits a BIGINT.
    "GET /api/v1/referral/team": {42200: frozenset({"cursor", "body", "query"})},
    # A product patched to pre-sale needs a ship date, sent or stored.
    "PATCH /admin/api/v1/products/{product_id}": {42200: frozenset({"ship_date"})},
    # Goods cost at least the setting min_goods_price.
    "POST /admin/api/v1/points/items": {42200: frozenset({"price"})},
    # Stock is changed by a delta, which may not take the stored stock below zero (nor touch an unlimited item's).
    "PATCH /admin/api/v1/points/items/{item_id}": {42200: frozenset({"price", "stock_delta"})},
    # Once the programme rules are published, applying accepts the current version (stored state).
    "POST /api/v1/distributors/apply": {40030: ANY},
    # The rules' placeholders must name live settings; a notice's tier goes with the one-tier audience.
    "POST /admin/api/v1/distributor-rules": {42200: frozenset({"body"})},
    "PATCH /admin/api/v1/distributor-rules/{rules_id}": {42200: frozenset({"body"})},
    "POST /admin/api/v1/notices": {42200: frozenset({"tier"})},
    "PATCH /admin/api/v1/notices/{notice_id}": {42200: frozenset({"tier"})},
    # A report names a distributor who exists; a quiz is answered for its own questions and options.
    "POST /api/v1/feedback": {42200: frozenset({"distributor_member_id", "scene"})},
    "POST /api/v1/training/courses/{course_id}/quiz": {42200: ANY},
    # A video's host is a setting; the order names the course's own lessons.
    "POST /admin/api/v1/training/courses/{course_id}/lessons": {42200: frozenset({"video_url"})},
    "PATCH /admin/api/v1/training/lessons/{lesson_id}": {42200: frozenset({"video_url", "body"})},
    "PUT /admin/api/v1/training/courses/{course_id}/lesson-order": {42200: frozenset({"lesson_ids"})},
    "PUT /admin/api/v1/training/courses/{course_id}/quiz": {42200: ANY},
    # A report's period: a real calendar day, from no later than to, a year at most.
    **{
        f"GET /admin/api/v1/reports/{report}": {42200: frozenset({"from", "to"})}
        for report in ("funnel", "distributors", "distributors/{member_id}/trend", "distributor-cohorts", "regions", "products", "repeat-business", "points-liability")
    },
    "GET /admin/api/v1/risk/report": {42200: frozenset({"from", "to"})},
}

#: The same for HTML pages, by status: the OAuth callback's state is bound to the browser by the cookie
#: ``/h5/member`` set, and its code is WeChat's, so a made-up one is refused with the error page. The zone's
#: forms need a visitor's signed form token, which no random body carries.
PAGE_REFUSALS: dict[str, set[int]] = {
    "GET /h5/member/oauth": {400},
    "POST /h5/member/shop": {400},
    "POST /h5/member/rules": {400},
    "POST /h5/member/training/lessons/{lesson_id}/complete": {400},
    "POST /h5/member/training/{course_id}/quiz": {400},
    "POST /h5/member/feedback": {400},
}


def business_refusal(case: schemathesis.Case, response: Any) -> bool:
    """Whether the app refused the case with one of its operation's BUSINESS_REFUSALS (or PAGE_REFUSALS)."""
    operation = f"{case.method} {case.operation.path}"
    if response.status_code in PAGE_REFUSALS.get(operation, ()):
        return True
    refusals = BUSINESS_REFUSALS.get(operation)
    if not refusals:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    if not isinstance(body, dict) or body.get("code") not in refusals:  # type: ignore[operator]
        return False
    allowed = refusals[body["code"]]  # type: ignore[index]
    named = {error["field"] for error in (body.get("data") or {}).get("errors", [])}
    return not allowed or named <= allowed


def call_and_validate(case: schemathesis.Case, app: Flask, accounts: Accounts) -> None:
    """Sign the case in, point it at seeded records, call the app and check the response against the spec."""
    headers = accounts.prepare(case)
    # The checks that send requests of their own (a probe without the token) send them to the schema's app.
    case.operation.schema.app = app
    response = case.call(app=app, headers=headers)
    excused = [positive_data_acceptance] if business_refusal(case, response) else []
    case.validate_response(response, headers=headers, excluded_checks=excused, transport_kwargs={"app": app, "headers": headers})


@pytest.mark.slow
@schema.exclude(path_regex=f"{CONSOLE}|{PAY_NOTIFY}").parametrize()
@settings(max_examples=MEMBER_EXAMPLES, **SETTINGS)
def test_api_conforms_to_spec(case: schemathesis.Case, caller: str, app: Flask, signed_in: Accounts) -> None:
    """The mini-program's API, the landing page, the official account and health."""
    call_and_validate(case, app, signed_in)


@pytest.mark.slow
@schema.include(path_regex=CONSOLE).parametrize()
@settings(max_examples=ADMIN_EXAMPLES, **SETTINGS)
def test_console_api_conforms_to_spec(case: schemathesis.Case, caller: str, app: Flask, signed_in: Accounts) -> None:
    """The merchant console's API."""
    call_and_validate(case, app, signed_in)


@pytest.mark.slow
@pay_schema.include(path_regex=PAY_NOTIFY).parametrize()
@settings(max_examples=PAY_NOTIFY_EXAMPLES, **SETTINGS)
def test_pay_notify_conforms_to_spec(case: schemathesis.Case, caller: str, app: Flask, signed_in: Accounts) -> None:
    """Nothing random is a valid notification: each is refused in WeChat Pay's format, never with a 5xx."""
    call_and_validate(case, app, signed_in)
