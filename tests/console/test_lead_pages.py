"""The lead pool, contracts and partners pages for every role: what each sees, does and is refused, and bad input."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry, Member, Staff
from server.clock import local
from server.db import utcnow
from server.orders.models import Installment, Order, OrderKind, OrderStatus
from server.referral.models import Lead, LeadFollowUp, LeadNote, LeadSource, LeadStatus, Partner, PartnerPayout, Scene
from tests.conftest import DemoShop
from tests.console.conftest import Console

ROLES = ("owner", "ops", "finance")


@pytest.fixture
def shop(app: Flask, demo_shop: DemoShop) -> dict[str, Any]:
    """The demo shop, and the ids its leads, contract and partner have."""
    demo_shop.load(app)
    with app.app_context():
        sess = db.session()
        ids = {
            "zhou": sess.scalars(select(Lead.id).where(Lead.contact_name == "周先生")).one(),
            "wu": sess.scalars(select(Lead.id).where(Lead.contact_name == "吴女士")).one(),
            "eve_lead": sess.scalars(select(Lead.id).where(Lead.contact_name == "伊娃")).one(),
            "contract": sess.scalars(select(Order.id).where(Order.kind == OrderKind.contract)).one(),
            "partner": sess.scalars(select(Partner.id)).one(),
            "grace": sess.scalars(select(Member.id).where(Member.openid == "demo-grace")).one(),
            "carol": sess.scalars(select(Member.id).where(Member.openid == "demo-carol")).one(),
            "ops": sess.scalars(select(Staff.id).where(Staff.username == "ops")).one(),
            "finance": sess.scalars(select(Staff.id).where(Staff.username == "finance")).one(),
        }
        return ids


def login(app: Flask, username: str) -> Console:
    browser = Console(app.test_client())
    assert browser.login(username, "demo-pass-2026").status_code == 303
    return browser


def audit_count(app: Flask, action: str | None = None) -> int:
    with app.app_context():
        stmt = select(func.count()).select_from(AuditEntry)
        if action:
            stmt = stmt.where(AuditEntry.action == action)
        return int(db.session().scalar(stmt) or 0)


PAGES = {
    "/console/leads": {"owner", "ops"},
    "/console/leads/{zhou}": {"owner", "ops"},
    "/console/contracts": {"owner", "ops", "finance"},
    "/console/contracts?queue=confirm": {"owner", "ops", "finance"},
    "/console/contracts/{contract}": {"owner", "ops", "finance"},
    "/console/partners": {"owner", "ops", "finance"},
    "/console/partners/{partner}": {"owner", "ops", "finance"},
}


@pytest.mark.parametrize("username", ROLES)
def test_each_role_reaches_exactly_its_pages_and_nav(app: Flask, shop: dict[str, Any], username: str) -> None:
    browser = login(app, username)
    for template, allowed in PAGES.items():
        response = browser.get(template.format(**shop))
        assert response.status_code == (200 if username in allowed else 403), (template, response.status_code)
    nav = browser.get("/console/").text
    nav = nav[nav.index('<nav class="nav"'):nav.index("</nav>")]
    assert (">线索</a>" in nav) == (username != "finance")
    assert ">合同</a>" in nav and ">渠道</a>" in nav


def test_the_lead_pool_filters_and_never_shows_a_full_phone(app: Flask, shop: dict[str, Any]) -> None:
    ops = login(app, "ops")
    page = ops.get("/console/leads").text
    assert "周先生" in page and "吴女士" in page and "郑经理" in page
    assert "13600136000" not in page and "136****6000" in page
    assert "周先生" in ops.get("/console/leads", query_string={"follow_up": "contacted"}).text
    assert "吴女士" not in ops.get("/console/leads", query_string={"follow_up": "contacted"}).text
    assigned = ops.get("/console/leads", query_string={"assignee": str(shop["ops"])}).text
    assert "周先生" in assigned and "吴女士" not in assigned
    assert "周先生" not in ops.get("/console/leads", query_string={"assignee": "none"}).text
    assert "郑经理" in ops.get("/console/leads", query_string={"channel": "partner"}).text
    assert "周先生" not in ops.get("/console/leads", query_string={"channel": "partner"}).text
    assert "郑经理" not in ops.get("/console/leads", query_string={"status": "new"}).text
    by_sharer = ops.get("/console/leads", query_string={"sharer": str(shop["carol"])}).text
    assert "周先生" in by_sharer and "郑经理" not in by_sharer
    today = local(utcnow()).date()
    recent = ops.get("/console/leads", query_string={"from": (today - timedelta(days=3)).isoformat(), "to": today.isoformat()}).text
    assert "周先生" in recent and "郑经理" not in recent
    for bad in ({"from": "2026-13-45"}, {"sharer": "abc"}, {"status": "nope", "follow_up": "x" * 500, "channel": "<b>", "assignee": "-1"}, {"page": "99999999999"}):
        response = ops.get("/console/leads", query_string=bad)
        assert response.status_code == 200 and "<b>" not in response.text
    assert "日期格式应为" in ops.get("/console/leads", query_string={"from": "2026-13-45"}).text
    assert "分享人请填写会员 ID" in ops.get("/console/leads", query_string={"sharer": "abc"}).text


def test_owner_reviews_follows_up_assigns_and_reveals(app: Flask, shop: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    owner = login(app, "owner")
    url = f"/console/leads/{shop['wu']}"
    assert owner.post(f"{url}/review", {"status": "maybe"}).status_code == 422
    assert owner.post(f"{url}/review", {"status": "valid", "note": "已确认"}).status_code == 303
    again = owner.post(f"{url}/review", {"status": "invalid"})
    assert again.status_code == 409 and "已经审核过" in again.text
    assert owner.post(f"{url}/follow-up", {"state": "converted", "note": "直接成交"}).status_code == 409
    assert owner.post(f"{url}/follow-up", {"state": "contacted", "note": "  "}).status_code == 422
    assert owner.post(f"{url}/follow-up", {"state": "bogus", "note": "x"}).status_code == 422
    assert owner.post(f"{url}/follow-up", {"note": "x" * 1001}).status_code == 422
    assert owner.post(f"{url}/follow-up", {"state": "contacted", "note": "约了周五"}).status_code == 303
    assert owner.post(f"{url}/assign", {"assignee_id": str(shop["finance"])}).status_code == 422
    assert owner.post(f"{url}/assign", {"assignee_id": "abc"}).status_code == 422
    assert owner.post(f"{url}/assign", {"assignee_id": str(shop["ops"])}).status_code == 303
    page = owner.get(url).text
    assert "约了周五" in page and "已联系" in page and "有效" in page and "13500135000" not in page
    caplog.set_level(logging.DEBUG)
    revealed = owner.post(f"{url}/phone", headers={"HX-Request": "true"})
    assert revealed.status_code == 200 and "13500135000" in revealed.text and "<html" not in revealed.text
    plain = owner.post(f"{url}/phone")
    assert plain.status_code == 200 and "13500135000" in plain.text and "<html" in plain.text
    assert "13500135000" not in caplog.text
    assert audit_count(app, "lead.reveal_phone") == 2
    assert "13500135000" not in owner.get("/console/audit").text
    with app.app_context():
        found = db.session().get(Lead, shop["wu"])
        assert found is not None and found.status == LeadStatus.valid and found.follow_up == LeadFollowUp.contacted
        assert found.assignee_id == shop["ops"]


def test_an_arrival_lead_cannot_be_marked_valid_and_the_page_says_why(app: Flask, shop: dict[str, Any]) -> None:
    owner = login(app, "owner")
    with app.app_context():
        # Grace arrived through carol's share: a sign-in, with no phone and no need.
        row = Lead(source=LeadSource.arrival, member_id=shop["grace"], arrival_member_id=shop["grace"], sharer_id=shop["carol"], channel="miniprogram_code")
        db.session().add(row)
        db.commit()
        arrival = row.id
    refused = owner.post(f"/console/leads/{arrival}/review", {"status": "valid"})
    assert refused.status_code == 422 and "只有留了手机号" in refused.text
    assert owner.post(f"/console/leads/{arrival}/phone").status_code == 404


def test_link_to_member_then_sign_a_contract(app: Flask, shop: dict[str, Any]) -> None:
    ops = login(app, "ops")
    url = f"/console/leads/{shop['zhou']}"
    assert "只能关联一次" in ops.get(url).text
    assert ops.post(f"{url}/member", {"member_id": "x"}).status_code == 422
    assert "找不到该会员" in ops.post(f"{url}/member", {"member_id": "999999"}).text
    own = ops.post(f"{url}/member", {"member_id": str(shop["carol"])})
    assert own.status_code == 422 and "分享人" in own.text
    assert ops.post(f"{url}/member", {"member_id": str(shop["grace"])}).status_code == 303
    assert ops.post(f"{url}/member", {"member_id": str(shop["carol"])}).status_code == 409
    assert audit_count(app, "lead.link_member") == 1
    # Not reviewed yet: no contract form, and the service refuses a posted one.
    assert "contract-form" not in ops.get(url).text
    refused = ops.post(f"{url}/contract", {"title": "采购", "amount": "100", "installments": "100"})
    assert refused.status_code == 422 and "审核为有效" in refused.text
    ops.post(f"{url}/review", {"status": "valid"})
    assert "contract-form" in ops.get(url).text
    for bad in (
        {"title": "", "amount": "100", "installments": "100"},
        {"title": "采购", "amount": "-5", "installments": "100"},
        {"title": "采购", "amount": "1.234", "installments": "100"},
        {"title": "采购", "amount": "100", "installments": "abc"},
        {"title": "采购", "amount": "100", "installments": ", ".join(["1"] * 61)},
        {"title": "采购", "amount": "100", "installments": "100", "parent_order_id": "x"},
        {"title": "采购", "amount": "nan", "installments": "100"},
        {"title": "采购", "amount": "1e999", "installments": "100"},
    ):
        assert ops.post(f"{url}/contract", bad).status_code == 422, bad
    mismatch = ops.post(f"{url}/contract", {"title": "采购", "amount": "100", "installments": "30, 60"})
    assert mismatch.status_code == 422 and "之和必须等于" in mismatch.text
    created = ops.post(f"{url}/contract", {"title": "企业采购", "amount": "1,000.50", "installments": "400, 600.50"})
    assert created.status_code == 303 and "/console/contracts/" in created.location
    with app.app_context():
        order = db.session().scalars(select(Order).where(Order.lead_id == shop["zhou"])).one()
        assert order.total_fee == 100_050 and order.member_id == shop["grace"]
        assert [i.amount_fen for i in db.session().scalars(select(Installment).where(Installment.order_id == order.id).order_by(Installment.seq))] == [40_000, 60_050]


def test_finance_records_installments_and_confirms_the_final_payment(app: Flask, shop: dict[str, Any]) -> None:
    # A fresh contract from the demo's valid lead, with two installments.
    ops = login(app, "ops")
    assert ops.post(f"/console/leads/{shop['eve_lead']}/contract", {"title": "二期", "amount": "200", "installments": "100, 100"}).status_code == 303
    with app.app_context():
        order_id = db.session().scalars(select(Order.id).where(Order.kind == OrderKind.contract).order_by(Order.id.desc())).first()
    url = f"/console/contracts/{order_id}"
    # Operations neither records money nor confirms; finance does not cancel.
    assert ops.post(f"{url}/installments/1/receive", {}).status_code == 403
    assert ops.post(f"{url}/confirm-final", {}).status_code == 403
    assert "confirm-final" not in ops.get(f"/console/contracts/{shop['contract']}").text
    finance = login(app, "finance")
    assert finance.post(f"{url}/cancel", {}).status_code == 403
    assert finance.post(f"{url}/confirm-final", {}).status_code == 409  # nothing received yet
    assert finance.post(f"{url}/installments/1/receive", {"received_on": "2999-01-01"}).status_code == 422
    assert finance.post(f"{url}/installments/1/receive", {"received_on": "yesterday"}).status_code == 422
    assert finance.post(f"{url}/installments/9/receive", {}).status_code == 404
    assert finance.post(f"{url}/installments/1/receive", {"received_on": local(utcnow()).date().isoformat(), "note": "首付"}).status_code == 303
    again = finance.post(f"{url}/installments/1/receive", {})
    assert again.status_code == 409 and "已经登记到账" in again.text
    early = finance.post(f"{url}/confirm-final", {})
    assert early.status_code == 409 and "未到账" in early.text
    assert finance.post(f"{url}/installments/2/receive", {}).status_code == 303
    assert str(order_id) in finance.get("/console/contracts?queue=confirm").text
    assert finance.post(f"{url}/confirm-final", {}).status_code == 303
    assert finance.post(f"{url}/confirm-final", {}).status_code == 409
    with app.app_context():
        order = db.session().get(Order, order_id)
        assert order is not None and order.status == OrderStatus.completed and order.finance_confirmed_by == shop["finance"]
    assert audit_count(app, "contract.confirm_final") == 1
    assert finance.get("/console/contracts/999999").status_code == 404


def test_operations_cancels_an_unpaid_contract(app: Flask, shop: dict[str, Any]) -> None:
    ops = login(app, "ops")
    ops.post(f"/console/leads/{shop['eve_lead']}/contract", {"title": "三期", "amount": "50", "installments": "50"})
    with app.app_context():
        order_id = db.session().scalars(select(Order.id).where(Order.kind == OrderKind.contract).order_by(Order.id.desc())).first()
    assert ops.post(f"/console/contracts/{order_id}/cancel", {"reason": "客户取消"}).status_code == 303
    assert ops.post(f"/console/contracts/{order_id}/cancel", {}).status_code == 409
    assert ops.post(f"/console/contracts/{shop['contract']}/cancel", {}).status_code == 409  # money arrived: it stays


def test_contract_list_filters(app: Flask, shop: dict[str, Any]) -> None:
    finance = login(app, "finance")
    assert "年度礼盒采购" in finance.get("/console/contracts", query_string={"status": "paid"}).text
    assert "年度礼盒采购" not in finance.get("/console/contracts", query_string={"status": "completed"}).text
    assert "年度礼盒采购" in finance.get("/console/contracts", query_string={"queue": "confirm"}).text
    for bad in ({"status": "x" * 300}, {"member": "abc"}, {"page": "-1"}):
        assert finance.get("/console/contracts", query_string=bad).status_code == 200
    assert "/console/contracts?queue=confirm" in login(app, "owner").get("/console/").text


def test_partners_are_created_edited_and_paid_by_the_right_roles(app: Flask, shop: dict[str, Any]) -> None:
    ops, finance = login(app, "ops"), login(app, "finance")
    assert finance.post("/console/partners", {"name": "微博", "commission_mode": "per_deal", "deal_rate": "2"}).status_code == 403
    assert ops.post("/console/partners", {"name": "", "commission_mode": "per_deal"}).status_code == 422
    assert ops.post("/console/partners", {"name": "微博", "commission_mode": "bogus"}).status_code == 422
    assert ops.post("/console/partners", {"name": "微博", "commission_mode": "per_deal", "deal_rate": "101"}).status_code == 422
    assert ops.post("/console/partners", {"name": "微博", "commission_mode": "per_lead", "per_lead": "-1"}).status_code == 422
    created = ops.post("/console/partners", {"name": "微博·职场", "commission_mode": "per_deal", "deal_rate": "1.5"})
    assert created.status_code == 303
    assert ops.post("/console/partners", {"name": "微博·职场", "commission_mode": "per_deal"}).status_code == 409
    with app.app_context():
        partner = db.session().scalars(select(Partner).where(Partner.name == "微博·职场")).one()
        assert partner.deal_rate_bp == 150
        partner_id = partner.id
    url = f"/console/partners/{partner_id}"
    assert ops.post(f"{url}/scenes", {"content_id": "autumn"}).status_code == 303
    assert ops.post(url, {"platform": "weibo", "contact": "小王", "per_lead": "0", "deal_rate": "2", "active": "0"}).status_code == 303
    assert ops.post(f"{url}/scenes", {}).status_code == 422  # inactive: no new links
    assert finance.post(url, {"deal_rate": "3"}).status_code == 403
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(Scene).where(Scene.partner_id == partner_id)) == 1
        assert db.session().get(Partner, partner_id).deal_rate_bp == 200  # type: ignore[union-attr]
    assert "/s/" in ops.get(url).text and ops.get("/console/partners/999999").status_code == 404


def test_finance_marks_last_months_commission_paid_once(app: Flask, shop: dict[str, Any]) -> None:
    finance = login(app, "finance")
    url = f"/console/partners/{shop['partner']}"
    page = finance.get(url).text
    assert "¥50.00" in page and "payout-form" in page
    assert login(app, "ops").post(f"{url}/payouts", {"from": "2020-01-01", "to": "2020-01-31"}).status_code == 403
    assert "payout-form" not in login(app, "ops").get(url).text
    today = local(utcnow()).date()
    start = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    end = today.replace(day=1) - timedelta(days=1)
    assert finance.post(f"{url}/payouts", {"from": "bad", "to": end.isoformat()}).status_code == 422
    assert finance.post(f"{url}/payouts", {"from": end.isoformat(), "to": start.isoformat()}).status_code == 422
    assert finance.post(f"{url}/payouts", {"from": start.isoformat(), "to": today.isoformat()}).status_code == 422  # not over yet
    paid = finance.post(f"{url}/payouts", {"from": start.isoformat(), "to": end.isoformat(), "reference": "转账 0001"})
    assert paid.status_code == 303
    again = finance.post(f"{url}/payouts", {"from": start.isoformat(), "to": end.isoformat()})
    assert again.status_code == 303
    assert "未重复记录" in finance.get(again.location).text
    nothing = finance.post(f"{url}/payouts", {"from": (start - timedelta(days=60)).isoformat(), "to": end.isoformat()})
    assert nothing.status_code == 409 and "没有未付" in nothing.text
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(PartnerPayout)) == 1
    assert audit_count(app, "partner.payout") == 1
    shown = finance.get(url, query_string={"from": start.isoformat(), "to": end.isoformat()}).text
    assert "转账 0001" in shown and "已付" in shown
    for bad in ({"from": "x"}, {"to": "1999-01-01"}, {"from": "2026-01-10", "to": "2026-01-01"}):
        assert finance.get(url, query_string=bad).status_code == 200


def test_operations_cannot_reach_finance_actions_and_finance_cannot_reach_leads(app: Flask, shop: dict[str, Any]) -> None:
    before = audit_count(app)
    ops, finance = login(app, "ops"), login(app, "finance")
    for path in (
        f"/console/contracts/{shop['contract']}/installments/1/receive",
        f"/console/contracts/{shop['contract']}/confirm-final",
        f"/console/partners/{shop['partner']}/payouts",
    ):
        response = ops.post(path, {"from": "2020-01-01", "to": "2020-01-31"})
        assert response.status_code == 403 and "无权访问" in response.text, path
    for path in (
        f"/console/leads/{shop['zhou']}/review",
        f"/console/leads/{shop['zhou']}/phone",
        f"/console/leads/{shop['zhou']}/assign",
        f"/console/leads/{shop['zhou']}/follow-up",
        f"/console/leads/{shop['zhou']}/member",
        f"/console/leads/{shop['zhou']}/contract",
        f"/console/contracts/{shop['contract']}/cancel",
        "/console/partners",
        f"/console/partners/{shop['partner']}/scenes",
    ):
        response = finance.post(path, {"status": "valid", "note": "x", "member_id": "1", "name": "x"})
        assert response.status_code == 403, path
    assert audit_count(app) == before
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(LeadNote)) == 3


def test_forms_without_the_csrf_token_are_refused(app: Flask, shop: dict[str, Any]) -> None:
    owner = login(app, "owner")
    response = owner.post(f"/console/leads/{shop['wu']}/phone", csrf=False)
    assert response.status_code == 400 and "CSRF" in response.text
    assert audit_count(app, "lead.reveal_phone") == 0


def test_reading_the_pages_writes_no_audit_entry(app: Flask, shop: dict[str, Any]) -> None:
    before = audit_count(app)
    owner = login(app, "owner")
    for template in PAGES:
        assert owner.get(template.format(**shop)).status_code == 200
    assert audit_count(app) == before
