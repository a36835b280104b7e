"""Distributor pages for each role: the application queue, decisions, appointing, tiers and grades."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry, Member
from server.console.roles import allowed
from server.accounts.models import StaffRole
from server.demo import DEMO_PASSWORD
from server.distribution.models import Distributor, DistributorStatus, DistributorTier, Grade
from tests.conftest import DemoShop
from tests.console.conftest import Console

#: Every distributor, material and poster page a GET reaches, and the area that guards it.
PAGES = {
    "/console/distributors": "distributors",
    "/console/distributors?status=pending": "distributors",
    "/console/distributors/{distributor_id}": "distributors",
    "/console/distributors/tiers": "distributors",
    "/console/materials": "materials",
    "/console/materials/new": "materials.edit",
    "/console/materials/{material_id}": "materials",
    "/console/posters": "posters",
    "/console/posters/new": "posters.edit",
    "/console/posters/{template_id}": "posters",
    "/console/posters/{template_id}/preview.png": "posters",
}


@pytest.fixture
def shop(app: Flask, demo_shop: DemoShop) -> dict[str, Any]:
    """The demo shop: alice an approved tier-1 distributor, frank's application waiting, grades, materials, a template."""
    from server.distribution.models import Material
    from server.posters.models import PosterTemplate

    demo_shop.load(app)
    with app.app_context():
        sess = db.session()

        def member(openid: str) -> int:
            return sess.scalars(select(Member.id).where(Member.openid == openid)).one()

        def distributor(openid: str) -> int:
            return sess.scalars(select(Distributor.id).where(Distributor.member_id == member(openid))).one()

        return {
            "alice": distributor("demo-alice"),
            "frank": distributor("demo-frank"),
            "grace_member": member("demo-grace"),
            "material": sess.scalars(select(Material.id).order_by(Material.id)).first(),
            "template": sess.scalars(select(PosterTemplate.id).where(PosterTemplate.name == "春茶上新")).one(),
        }


def login(app: Flask, username: str) -> Console:
    browser = Console(app.test_client())
    assert browser.login(username, DEMO_PASSWORD).status_code == 303
    return browser


def status_of(app: Flask, distributor_id: int) -> DistributorStatus:
    with app.app_context():
        found = db.session().get(Distributor, distributor_id)
        assert found is not None
        return found.status


def audit_count(app: Flask) -> int:
    with app.app_context():
        return int(db.session().scalar(select(func.count()).select_from(AuditEntry)) or 0)


@pytest.mark.parametrize("username,role", [("owner", StaffRole.owner), ("ops", StaffRole.operations), ("finance", StaffRole.finance)])
def test_each_role_reaches_exactly_its_pages(app: Flask, shop: dict[str, Any], username: str, role: StaffRole) -> None:
    browser = login(app, username)
    for template, area in PAGES.items():
        path = template.format(distributor_id=shop["frank"], material_id=shop["material"], template_id=shop["template"])
        response = browser.get(path)
        expected = 200 if allowed(role, area) else 403
        assert response.status_code == expected, (path, response.status_code)
        if expected == 403:
            assert "无权访问" in response.text
    nav = browser.get("/console/").text
    for text in ("分销员", "素材", "海报"):
        assert (f">{text}</a>" in nav) == (role != StaffRole.finance)


def test_the_queue_lists_applications_and_operations_approve_one(app: Flask, shop: dict[str, Any]) -> None:
    ops = login(app, "ops")
    queue = ops.get("/console/distributors", query_string={"status": "pending"}).text
    assert "方克" in queue and "李爱丽" not in queue
    everyone = ops.get("/console/distributors").text
    assert "李爱丽" in everyone and "银牌" in everyone
    assert "李爱丽" in ops.get("/console/distributors", query_string={"q": "爱丽"}).text
    assert "方克" not in ops.get("/console/distributors", query_string={"tier": "1", "status": "approved"}).text
    # The dashboard's to-do entry now links to the queue.
    assert 'href="/console/distributors?status=pending"' in ops.get("/console/").text
    response = ops.post(f"/console/distributors/{shop['frank']}/decisions", {"action": "approve", "back": "queue"})
    assert response.status_code == 303 and response.location.endswith("/console/distributors?status=pending")
    assert status_of(app, shop["frank"]) == DistributorStatus.approved
    with app.app_context():
        assert db.session().scalar(select(AuditEntry.action).where(AuditEntry.target == f"distributor:{shop['frank']}")) == "distributor.approve"


def test_decisions_need_a_reason_and_a_status_that_allows_them(app: Flask, shop: dict[str, Any]) -> None:
    owner = login(app, "owner")
    before = audit_count(app)
    refused = owner.post(f"/console/distributors/{shop['frank']}/decisions", {"action": "reject", "reason": "  "})
    assert refused.status_code == 422 and "请填写原因" in refused.text
    unknown = owner.post(f"/console/distributors/{shop['frank']}/decisions", {"action": "promote"})
    assert unknown.status_code == 422 and "请选择一项操作" in unknown.text
    illegal = owner.post(f"/console/distributors/{shop['frank']}/decisions", {"action": "unfreeze"})
    assert illegal.status_code == 409 and "当前的状态不能解冻" in illegal.text
    long_reason = owner.post(f"/console/distributors/{shop['frank']}/decisions", {"action": "reject", "reason": "很" * 300})
    assert long_reason.status_code == 422
    assert status_of(app, shop["frank"]) == DistributorStatus.pending and audit_count(app) == before
    assert owner.post("/console/distributors/999999/decisions", {"action": "approve"}).status_code == 404
    # Freeze, unfreeze and disable alice, each with its reason shown on her record.
    for action, status in (("freeze", DistributorStatus.frozen), ("unfreeze", DistributorStatus.approved), ("disable", DistributorStatus.disabled)):
        response = owner.post(f"/console/distributors/{shop['alice']}/decisions", {"action": action, "reason": f"测试{action}"})
        assert response.status_code == 303, response.text
        assert status_of(app, shop["alice"]) == status
    record = owner.get(f"/console/distributors/{shop['alice']}").text
    assert "测试disable" in record and "distributor.disable" in record and "推广记录" in record


def test_finance_can_neither_decide_nor_appoint_and_nothing_changes(app: Flask, shop: dict[str, Any]) -> None:
    finance = login(app, "finance")
    before = audit_count(app)
    for path, data in (
        (f"/console/distributors/{shop['frank']}/decisions", {"action": "approve"}),
        ("/console/distributors", {"member_id": str(shop["grace_member"]), "real_name": "格蕾丝", "phone": "13100131000"}),
        ("/console/distributors/tiers/1", {"discount_bp": "100", "max_recruits": "1"}),
        ("/console/distributors/grades", {"name": "钻石", "min_sales": "9999"}),
    ):
        response = finance.post(path, data)
        assert response.status_code == 403 and "无权访问" in response.text, path
    assert status_of(app, shop["frank"]) == DistributorStatus.pending and audit_count(app) == before


def test_appointing_a_tier_one_distributor(app: Flask, shop: dict[str, Any]) -> None:
    ops = login(app, "ops")
    form = {"member_id": str(shop["grace_member"]), "real_name": "高格蕾", "phone": "13100131000", "reason": "老客户"}
    for bad, message in (
        ({"member_id": "abc"}, "请输入一位在用会员的会员 ID"),
        ({"member_id": "999999"}, "请输入一位在用会员的会员 ID"),
        ({"member_id": "9" * 40}, "请输入一位在用会员的会员 ID"),
        ({"phone": "call me"}, "请填写 5–20 位数字的手机号"),
        ({"real_name": ""}, "请填写真实姓名"),
        ({"real_name": "名" * 40}, "请填写真实姓名"),
    ):
        response = ops.post("/console/distributors", {**form, **bad})
        assert response.status_code == 422 and message in response.text, bad
    with app.app_context():
        assert db.session().scalar(select(Distributor.id).where(Distributor.member_id == shop["grace_member"])) is None
    response = ops.post("/console/distributors", form)
    assert response.status_code == 303
    with app.app_context():
        grace = db.session().scalars(select(Distributor).where(Distributor.member_id == shop["grace_member"])).one()
        assert (grace.tier, grace.status, grace.phone_masked) == (1, DistributorStatus.approved, "131****1000")
    again = ops.post("/console/distributors", form)
    assert again.status_code == 409 and "不能再任命" in again.text


def test_the_owner_edits_tiers_in_place_and_operations_only_read_them(app: Flask, shop: dict[str, Any]) -> None:
    owner = login(app, "owner")
    page = owner.get("/console/distributors/tiers").text
    assert 'hx-post="/console/distributors/tiers/1"' in page
    response = owner.post("/console/distributors/tiers/1", {"discount_bp": "800", "can_recruit": "1", "max_recruits": "10"})
    assert response.status_code == 303
    for bad, message in (
        ({"discount_bp": "abc"}, "自购折扣应为"),
        ({"discount_bp": "6000"}, "自购折扣应为"),
        ({"discount_bp": "-1"}, "自购折扣应为"),
        ({"max_recruits": "1e9"}, "招募名额应为"),
    ):
        refused = owner.post("/console/distributors/tiers/1", {"discount_bp": "800", "can_recruit": "1", "max_recruits": "10", **bad})
        assert refused.status_code == 422 and message in refused.text, bad
    third_tier = owner.post("/console/distributors/tiers/2", {"discount_bp": "100", "can_recruit": "1", "max_recruits": "0"})
    assert third_tier.status_code == 422 and "二级不能再招募" in third_tier.text
    assert owner.post("/console/distributors/tiers/3", {"discount_bp": "1"}).status_code == 404
    with app.app_context():
        tier1 = db.session().get(DistributorTier, 1)
        assert tier1 is not None and (tier1.discount_bp, tier1.can_recruit, tier1.max_recruits) == (800, True, 10)
        # Tier 2 was refused: still what the migration seeds (the row is written on its first change).
        tier2 = db.session().get(DistributorTier, 2)
        assert tier2 is None or not tier2.can_recruit
    ops = login(app, "ops")
    ops_page = ops.get("/console/distributors/tiers").text
    assert "hx-post" not in ops_page and "银牌" in ops_page
    assert ops.post("/console/distributors/tiers/1", {"discount_bp": "0", "max_recruits": "0"}).status_code == 403
    assert ops.post("/console/distributors/grades", {"name": "钻石", "min_sales": "5000"}).status_code == 403


def test_the_owner_creates_changes_and_deletes_grades(app: Flask, shop: dict[str, Any]) -> None:
    owner = login(app, "owner")
    assert owner.post("/console/distributors/grades", {"name": "钻石", "min_sales": "5,000.5", "perks": "年会邀请", "sort": "9"}).status_code == 303
    with app.app_context():
        diamond_id, threshold = db.session().execute(select(Grade.id, Grade.min_sales_fen).where(Grade.name == "钻石")).one()
        assert threshold == 500_050
        # Alice's own sales (¥200 or more) put her in silver.
        silver_id = db.session().scalars(select(Grade.id).where(Grade.name == "银牌")).one()
    for bad, status, message in (
        ({"name": "钻石", "min_sales": "1"}, 409, "已有同名或同门槛的等级"),
        ({"name": "翡翠", "min_sales": "200"}, 409, "已有同名或同门槛的等级"),
        ({"name": "翡翠", "min_sales": "12.345"}, 422, "门槛应为"),
        ({"name": "翡翠", "min_sales": "-5"}, 422, "门槛应为"),
        ({"name": "", "min_sales": "7"}, 422, "请填写等级名称"),
        ({"name": "翡翠", "min_sales": "7", "sort": "x"}, 422, "排序应为"),
    ):
        response = owner.post("/console/distributors/grades", bad)
        assert response.status_code == status and message in response.text, bad
    changed = owner.post(f"/console/distributors/grades/{diamond_id}", {"name": "钻石", "min_sales": "6000", "perks": "", "sort": "9"})
    assert changed.status_code == 303
    held = owner.post(f"/console/distributors/grades/{silver_id}", {"action": "delete"})
    assert held.status_code == 409 and "仍有分销员处于该等级" in held.text
    assert owner.post(f"/console/distributors/grades/{diamond_id}", {"action": "delete"}).status_code == 303
    assert owner.post("/console/distributors/grades/999999", {"action": "delete"}).status_code == 404
    with app.app_context():
        names = set(db.session().scalars(select(Grade.name)))
        assert names == {"铜牌", "银牌", "金牌"}
        actions = db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"grade:{diamond_id}").order_by(AuditEntry.id)).all()
        assert actions == ["grade.create", "grade.update", "grade.delete"]


@pytest.mark.parametrize("query", [{"status": "nope"}, {"tier": "9"}, {"page": "abc"}, {"page": "99999999999"}, {"q": "%" * 500}])
def test_list_filters_forgive_bad_input(app: Flask, shop: dict[str, Any], query: dict[str, str]) -> None:
    assert login(app, "ops").get("/console/distributors", query_string=query).status_code == 200
