"""Every console page, for every role, through the Flask test client: what each role sees, reaches and changes."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from flask import Flask
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry, Member, Staff
from server.console.roles import AREAS, allowed
from server.accounts.models import StaffRole
from tests.conftest import DemoShop
from tests.console.conftest import Console

#: Every page a GET reaches, and the area that guards it.
PAGES = {
    "/console/": "dashboard",
    "/console/dashboard/trend.json": "dashboard",
    "/console/members": "members",
    "/console/members/{member_id}": "members",
    "/console/audit": "audit",
    "/console/settings": "settings",
    "/console/staff": "staff",
    "/console/account/password": "account",
    "/console/exports": "exports",
    "/console/distributor-rules": "programme",
    "/console/distributor-rules/new": "programme.edit",
    "/console/notices": "notices",
    "/console/notices/new": "notices.edit",
    "/console/training": "training",
    "/console/feedback": "feedback",
    "/console/risk": "risk",
    "/console/risk/report": "risk",
}


@pytest.fixture
def demo(app: Flask, demo_shop: DemoShop) -> dict[str, Any]:
    """The demo shop of ``seed-demo``: staff, catalog, members, a team, orders, leads, a redemption."""
    demo_shop.load(app)
    with app.app_context():
        alice = db.session().scalars(select(Member).where(Member.openid == "demo-alice")).one()
        dave = db.session().scalars(select(Member).where(Member.openid == "demo-dave")).one()
        return {"alice": alice.id, "dave": dave.id}


def _demo_login(app: Flask, username: str) -> Console:
    browser = Console(app.test_client())
    assert browser.login(username, "demo-pass-2026").status_code == 303
    return browser


@pytest.mark.parametrize("username,role", [("owner", StaffRole.owner), ("ops", StaffRole.operations), ("finance", StaffRole.finance)])
def test_each_role_reaches_exactly_its_pages(app: Flask, demo: dict[str, Any], username: str, role: StaffRole) -> None:
    browser = _demo_login(app, username)
    for template, area in PAGES.items():
        path = template.format(member_id=demo["alice"])
        response = browser.get(path)
        expected = 200 if allowed(role, area) else 403
        assert response.status_code == expected, (path, response.status_code)
        if expected == 403:
            assert "无权访问" in response.text and response.mimetype == "text/html"


@pytest.mark.parametrize("username,shown,hidden", [
    ("owner", ["会员", "设置", "员工", "操作日志"], []),
    ("ops", ["会员", "设置"], ["员工", "操作日志"]),
    ("finance", ["设置"], ["会员", "员工", "操作日志"]),
])
def test_navigation_shows_what_the_role_may_open(app: Flask, demo: dict[str, Any], username: str, shown: list[str], hidden: list[str]) -> None:
    page = _demo_login(app, username).get("/console/").text
    nav = page[page.index('<nav class="nav"'):page.index("</nav>")]
    for text in shown:
        assert f">{text}</a>" in nav
    for text in hidden:
        assert f">{text}</a>" not in nav


def test_dashboard_shows_the_demo_shop_and_its_queues(app: Flask, demo: dict[str, Any]) -> None:
    owner = _demo_login(app, "owner")
    page = owner.get("/console/").text
    assert 'data-figure="30d-new_members">8<' in page
    assert 'data-figure="30d-orders">13<' in page  # twelve online orders and the demo contract
    assert "分销员申请待审核" in page and "合同尾款待财务确认" in page
    trend = owner.get("/console/dashboard/trend.json?days=7").get_json()
    assert len(trend["dates"]) == 7 and set(trend) >= {"new_members", "bindings", "leads", "orders", "paid_fen", "points_issued"}
    assert sum(owner.get("/console/dashboard/trend.json").get_json()["new_members"]) == 8
    # Finance sees its queues, not operations'.
    finance_page = _demo_login(app, "finance").get("/console/").text
    assert "合同尾款待财务确认" in finance_page and "分销员申请待审核" not in finance_page
    ops_page = _demo_login(app, "ops").get("/console/").text
    assert "分销员申请待审核" in ops_page and "合同尾款待财务确认" not in ops_page
    # The demo's suggestion and report wait in operations' feedback queue.
    assert "反馈与举报待处理" in ops_page and "反馈与举报待处理" not in finance_page
    assert "/console/feedback?state=new" in ops_page


def test_dashboard_figures_are_the_sums_of_the_charts_days(app: Flask, demo: dict[str, Any]) -> None:
    """Past days come from the report rollups, today from the raw rows, for the figures as for the charts."""
    from server.console import queries

    with app.app_context():
        sess = db.session()
        figures = queries.period_figures(sess)
        series = queries.trend(sess, 30, with_redeemed=True)
    for key, days, _ in queries.PERIODS:
        for name in ("new_members", "bindings", "leads", "orders", "paid_fen", "points_issued", "points_redeemed"):
            assert getattr(figures[key], name) == sum(series[name][-days:]), (key, name)
    assert figures["30d"].points_redeemed > 0 and figures["30d"].points_issued > 0


@pytest.mark.parametrize("days", ["abc", "-3", "999999999999", "", "1"])
def test_trend_days_out_of_range_are_clamped(app: Flask, demo: dict[str, Any], days: str) -> None:
    response = _demo_login(app, "owner").get(f"/console/dashboard/trend.json?days={days}")
    assert response.status_code == 200
    assert 7 <= len(response.get_json()["dates"]) <= 90


@pytest.mark.parametrize("query,expected", [
    ("爱丽", {"爱丽丝"}),
    ("demo-bob", {"鲍勃"}),
    ("13800138000", {"爱丽丝"}),
    ("9000", {"卡罗尔"}),
    ("no-such-person", set()),
    ("%", set()),
])
def test_member_search(app: Flask, demo: dict[str, Any], query: str, expected: set[str]) -> None:
    page = _demo_login(app, "ops").get("/console/members", query_string={"q": query}).text
    found = {name for name in ("爱丽丝", "鲍勃", "卡罗尔", "大卫", "伊娃", "弗兰克", "格蕾丝", "海蒂") if f">{name}</a>" in page}
    assert found == expected


def test_member_search_by_id_and_pages_keep_their_filters(app: Flask, demo: dict[str, Any]) -> None:
    ops = _demo_login(app, "ops")
    page = ops.get("/console/members", query_string={"q": str(demo["alice"])}).text
    assert ">爱丽丝</a>" in page
    for bad in ({"page": "abc"}, {"page": "0"}, {"page": "99999999999"}, {"status": "nope"}, {"q": "x" * 500}):
        assert ops.get("/console/members", query_string=bad).status_code == 200


def test_member_page_shows_chain_team_orders_points_and_timeline(app: Flask, demo: dict[str, Any]) -> None:
    owner = _demo_login(app, "owner")
    alice = owner.get(f"/console/members/{demo['alice']}").text
    assert "直接邀请（3）" in alice and "间接邀请（3）" in alice
    assert "修改邀请人（店主）" in alice and "操作记录" in alice
    dave = owner.get(f"/console/members/{demo['dave']}").text
    assert 'data-field="inviter"><a href="/console/members/' in dave and "鲍勃" in dave
    assert 'data-field="upline"><a' in dave and "爱丽丝" in dave
    assert "订单（2）" in dave and "退款中" in dave
    assert "轨迹" in dave and "绑定" in dave
    # Operations sees the member but neither the owner's action nor the audit trail.
    ops_view = _demo_login(app, "ops").get(f"/console/members/{demo['dave']}").text
    assert "修改邀请人（店主）" not in ops_view and "操作记录" not in ops_view
    assert owner.get("/console/members/999999").status_code == 404
    assert owner.get("/console/members/99999999999999999999999").status_code == 404


def test_audit_log_filters(app: Flask, demo: dict[str, Any]) -> None:
    owner = _demo_login(app, "owner")
    everything = owner.get("/console/audit").text + owner.get("/console/audit", query_string={"page": 2}).text
    assert "staff.create" in everything and "points.grant" in everything
    staff_only = owner.get("/console/audit", query_string={"action": "staff"}).text
    assert "staff.create" in staff_only and "points.grant" not in staff_only
    assert "staff.create" not in owner.get("/console/audit", query_string={"actor": "cli", "action": "points"}).text
    bad_date = owner.get("/console/audit", query_string={"from": "2026-13-45"})
    assert bad_date.status_code == 200 and "日期格式应为" in bad_date.text
    assert "staff.create" not in owner.get("/console/audit", query_string={"to": "2000-01-01"}).text


def test_settings_are_listed_with_descriptions_and_changed_by_the_owner(app: Flask, demo: dict[str, Any]) -> None:
    owner = _demo_login(app, "owner")
    page = owner.get("/console/settings").text
    assert "binding_policy" in page and "inviter is chosen" in page
    response = owner.post("/console/settings/binding_protection_days", {"value": "45"})
    assert response.status_code == 303
    assert 'value="45"' in owner.get("/console/settings").text
    refused = owner.post("/console/settings/binding_protection_days", {"value": "-1"})
    assert refused.status_code == 422 and "must be at least 1" in refused.text
    assert owner.post("/console/settings/no_such_key", {"value": "1"}).status_code == 404
    with app.app_context():
        entries = db.session().scalars(select(AuditEntry).where(AuditEntry.action == "settings.set")).all()
        assert [(e.detail["old"], e.detail["new"]) for e in entries] == [(30, 45)]
    # Operations reads them but cannot change them.
    ops = _demo_login(app, "ops")
    assert "只有店主可以修改设置" in ops.get("/console/settings").text
    assert ops.post("/console/settings/binding_protection_days", {"value": "10"}).status_code == 403


def test_owner_manages_staff_accounts_and_roles(app: Flask, demo: dict[str, Any]) -> None:
    owner = _demo_login(app, "owner")
    assert owner.post("/console/staff", {"username": "clerk", "password": "long-enough-pw", "role": "finance"}).status_code == 303
    assert owner.post("/console/staff", {"username": "clerk", "password": "long-enough-pw", "role": "finance"}).status_code == 409
    assert owner.post("/console/staff", {"username": "x", "password": "short", "role": "finance"}).status_code == 422
    assert owner.post("/console/staff", {"username": "clerk2", "password": "long-enough-pw", "role": "boss"}).status_code == 422
    with app.app_context():
        clerk_id = db.session().scalars(select(Staff.id).where(Staff.username == "clerk")).one()
        me_id = db.session().scalars(select(Staff.id).where(Staff.username == "owner")).one()
    assert owner.post(f"/console/staff/{clerk_id}", {"role": "operations"}).status_code == 303
    assert owner.post(f"/console/staff/{clerk_id}", {"active": "0"}).status_code == 303
    # The owner can neither disable nor demote themselves.
    assert owner.post(f"/console/staff/{me_id}", {"active": "0"}).status_code == 403
    assert owner.post(f"/console/staff/{me_id}", {"role": "finance"}).status_code == 403
    assert owner.post("/console/staff/999999", {"active": "0"}).status_code == 404
    with app.app_context():
        clerk = db.session().get(Staff, clerk_id)
        assert clerk is not None and clerk.role == StaffRole.operations and not clerk.active
        actions = db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"staff:{clerk.id}")).all()
        assert sorted(actions) == ["staff.create", "staff.disable", "staff.role"]


def test_unknown_console_paths_are_html_404s_and_entry_points_redirect(client: Any) -> None:
    response = client.get("/console/no/such/page")
    assert response.status_code == 404 and response.mimetype == "text/html"
    for path in ("/", "/admin", "/console"):
        response = client.get(path)
        assert response.status_code == 302 and response.location.endswith("/console/")
    assert client.get("/console/").location.startswith("/console/login?next=/console/")


def test_every_area_is_in_the_matrix_and_never_open_to_anyone_by_omission() -> None:
    assert set(PAGES.values()) <= set(AREAS)
    for area, (roles, _endpoint, _what) in AREAS.items():
        assert roles and StaffRole.owner in roles, area


def test_pages_send_the_console_policy(app: Flask, console: Callable[..., Console]) -> None:
    page = console("owner").get("/console/")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert "<script>" not in page.text and " style=" not in page.text and "<style" not in page.text


def test_audit_count_does_not_grow_from_reading(app: Flask, demo: dict[str, Any]) -> None:
    with app.app_context():
        before = db.session().scalar(select(func.count()).select_from(AuditEntry))
    owner = _demo_login(app, "owner")
    for template in PAGES:
        owner.get(template.format(member_id=demo["alice"]))
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(AuditEntry)) == before


def test_a_list_longer_than_the_count_cap_says_more_than_and_pages_on(app: Flask, demo: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from server.console import orders_pages, routes

    monkeypatch.setattr(routes, "COUNT_CAP", 5)
    monkeypatch.setattr(orders_pages, "COUNT_CAP", 5)
    owner = _demo_login(app, "owner")
    page = owner.get("/console/orders").text
    assert "超过 5 条，第 1 页" in page and "下一页" in page
    # Pages go on past the cap for as long as there are rows.
    assert "超过 5 条，第 3 页" in owner.get("/console/orders?page=3").text
