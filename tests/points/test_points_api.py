"""The points API: the catalog and its console, balances, entries and statements, adjustments and the ledger views."""
from __future__ import annotations

import uuid

from sqlalchemy import select

from server import db
from server.accounts.models import AuditEntry, Member
from server.demo import seed_demo
from server.points import settlement
from server.points.checks import check_ledger
from server.points.models import RedemptionItem
from tests.points import completed_order, make_member, make_sku
from tests.points.test_redemption import credit, redeem

ITEMS = "/admin/api/v1/points/items"


def test_catalog_crud_with_the_minimum_goods_price(client, staff_login):
    ops = staff_login("operations")
    too_cheap = client.post(ITEMS, headers=ops, json={"kind": "goods", "title": "保温杯", "price": 199_999, "stock": 5})
    assert too_cheap.status_code == 422 and too_cheap.get_json()["data"]["errors"][0]["field"] == "price"
    assert "2000.00" in too_cheap.get_json()["message"]

    goods = client.post(ITEMS, headers=ops, json={"kind": "goods", "title": "蓝牙降噪耳机", "price": 200_000, "stock": 5, "sort": 2})
    assert goods.status_code == 201, goods.get_json()
    goods = goods.get_json()["data"]
    assert (goods["price"], goods["price_points"], goods["stock"], goods["active"]) == (200_000, "2000.00", 5, True)
    code = client.post(ITEMS, headers=ops, json={"kind": "invite_code", "title": "邀请码", "sort": 1}).get_json()["data"]
    assert (code["price"], code["price_points"], code["stock"]) == (10_000, "100.00", None)  # seed 003: 100 points a code
    event = client.post(ITEMS, headers=ops, json={"kind": "privilege", "title": "线下活动入场资格", "price": 50_000, "per_member_limit": 1, "sort": 3})
    assert event.status_code == 201
    assert client.post(ITEMS, headers=ops, json={"kind": "privilege", "title": "无价格"}).status_code == 422

    catalog = client.get("/api/v1/points/catalog").get_json()["data"]  # no sign-in needed
    assert [i["title"] for i in catalog["items"]] == ["邀请码", "蓝牙降噪耳机", "线下活动入场资格"]
    assert "active" not in catalog["items"][0]
    assert [i["kind"] for i in client.get("/api/v1/points/catalog?kind=goods").get_json()["data"]["items"]] == ["goods"]

    assert client.patch(f"{ITEMS}/{goods['id']}", headers=ops, json={"price": 150_000}).status_code == 422
    patched = client.patch(f"{ITEMS}/{goods['id']}", headers=ops, json={"title": "降噪耳机 Pro", "stock_delta": -2, "active": False})
    assert patched.status_code == 200, patched.get_json()
    assert (patched.get_json()["data"]["title"], patched.get_json()["data"]["stock"]) == ("降噪耳机 Pro", 3)
    assert client.patch(f"{ITEMS}/{goods['id']}", headers=ops, json={"stock_delta": -4}).status_code == 422
    assert client.patch(f"{ITEMS}/{code['id']}", headers=ops, json={"stock_delta": 1}).status_code == 422  # unlimited
    limit_removed = client.patch(f"{ITEMS}/{event.get_json()['data']['id']}", headers=ops, json={"per_member_limit": None})
    assert limit_removed.get_json()["data"]["per_member_limit"] is None
    assert client.get("/api/v1/points/catalog").get_json()["data"]["total"] == 2
    assert client.get(f"{ITEMS}?active=false", headers=ops).get_json()["data"]["total"] == 1
    assert client.get(f"{ITEMS}/{goods['id']}", headers=ops).get_json()["data"]["active"] is False

    assert client.delete(f"{ITEMS}/{goods['id']}", headers=ops).status_code == 200
    assert client.get(f"{ITEMS}/{goods['id']}", headers=ops).get_json()["code"] == 40440
    finance = staff_login("finance")
    assert client.post(ITEMS, headers=finance, json={"kind": "invite_code", "title": "邀请码"}).status_code == 403


def test_the_minimum_goods_price_is_a_merchant_setting(client, staff_login):
    owner = staff_login("owner")
    assert client.put("/admin/api/v1/settings/min_goods_price", headers=owner, json={"value": 300_000}).status_code == 200
    assert client.post(ITEMS, headers=owner, json={"kind": "goods", "title": "耳机", "price": 200_000}).status_code == 422
    assert client.post(ITEMS, headers=owner, json={"kind": "goods", "title": "耳机", "price": 300_000}).status_code == 201
    assert client.post(ITEMS, headers=owner, json={"kind": "privilege", "title": "活动", "price": 100}).status_code == 201


def test_an_item_with_redemptions_cannot_be_deleted(app, client, wx_login, staff_login):
    ops = staff_login("operations")
    item = client.post(ITEMS, headers=ops, json={"kind": "invite_code", "title": "邀请码"}).get_json()["data"]["id"]
    alice = wx_login("alice")
    credit(app, alice, 10_000)
    assert redeem(client, alice, item).status_code == 201
    refused = client.delete(f"{ITEMS}/{item}", headers=ops)
    assert refused.status_code == 409 and refused.get_json()["code"] == 40947


def test_entries_and_statements_explain_order_rewards(app, client, wx_login):
    alice = wx_login("alice")
    with app.app_context():
        sess = db.session()
        bob = make_member(sess, "bob", inviter=sess.get(Member, alice["user"]["id"]))
        order = completed_order(sess, bob, make_sku(sess, price_fen=100_000))
        run = settlement.settle(sess, period="weekly:2026-W47", mode="weekly", actor="test")
        db.commit()
        out_trade_no, period = order.out_trade_no, run.period

    assert client.get("/api/v1/points", headers=alice["headers"]).get_json()["data"]["points"]["available"] == "5.00"
    entries = client.get("/api/v1/points/entries?account=pending", headers=alice["headers"]).get_json()["data"]
    credited = entries["items"][-1]
    assert (credited["amount"], credited["account"]) == (500, "pending")
    assert credited["transaction"]["kind"] == "order_reward" and credited["transaction"]["out_trade_no"] == out_trade_no
    assert credited["transaction"]["level"] == 1 and credited["transaction"]["rule"].startswith("level 1")
    assert out_trade_no in credited["transaction"]["reason"]

    statements = client.get("/api/v1/points/statements", headers=alice["headers"]).get_json()["data"]
    assert statements["total"] == 1
    listed = statements["items"][0]
    assert (listed["period"], listed["settled"], listed["credited"], listed["points"]["credited"]) == (period, 500, 500, "5.00")
    detail = client.get(f"/api/v1/points/statements/{listed['id']}", headers=alice["headers"]).get_json()["data"]
    assert detail["lines"][0]["out_trade_no"] == out_trade_no
    carol = wx_login("carol")
    assert client.get(f"/api/v1/points/statements/{listed['id']}", headers=carol["headers"]).get_json()["code"] == 40442


def test_adjustments_are_owner_only_idempotent_and_audited(app, client, wx_login, staff_login):
    alice = wx_login("alice")
    member_id = alice["user"]["id"]
    body = {"member_id": member_id, "amount": 12_345, "reason": "活动补发积分"}
    for role in ("operations", "finance"):
        headers = staff_login(role) | {"Idempotency-Key": uuid.uuid4().hex}
        assert client.post("/admin/api/v1/points/adjustments", headers=headers, json=body).status_code == 403
    owner = staff_login("owner")
    assert client.post("/admin/api/v1/points/adjustments", headers=owner, json=body).get_json()["code"] == 40040

    headers = owner | {"Idempotency-Key": "adj-1"}
    first = client.post("/admin/api/v1/points/adjustments", headers=headers, json=body)
    assert first.status_code == 201, first.get_json()
    data = first.get_json()["data"]
    assert data["balances"]["available"] == 12_345 and data["transaction"]["kind"] == "adjust" and data["transaction"]["reason"] == "活动补发积分"
    assert sorted(e["amount"] for e in data["transaction"]["entries"]) == [-12_345, 12_345]
    replay = client.post("/admin/api/v1/points/adjustments", headers=headers, json=body)
    assert replay.status_code == 200 and replay.get_json()["data"]["transaction"]["id"] == data["transaction"]["id"]
    assert client.post("/admin/api/v1/points/adjustments", headers=headers, json=body | {"amount": 1}).get_json()["code"] == 40941

    too_much = client.post("/admin/api/v1/points/adjustments", headers=owner | {"Idempotency-Key": "adj-2"}, json=body | {"amount": -20_000})
    assert too_much.status_code == 409 and too_much.get_json()["code"] == 40940
    debit = client.post("/admin/api/v1/points/adjustments", headers=owner | {"Idempotency-Key": "adj-3"}, json=body | {"amount": -345, "reason": "误发"})
    assert debit.status_code == 201 and debit.get_json()["data"]["balances"]["available"] == 12_000

    for wrong in ({"amount": 0}, {"reason": ""}, {"member_id": 999_999}):
        response = client.post("/admin/api/v1/points/adjustments", headers=owner | {"Idempotency-Key": uuid.uuid4().hex}, json=body | wrong)
        assert response.status_code == 422, wrong
    with app.app_context():
        sess = db.session()
        audits = sess.scalars(select(AuditEntry).where(AuditEntry.action == "points.grant").order_by(AuditEntry.id)).all()
        assert [(a.target, a.detail["amount"], a.detail["reason"]) for a in audits] == [(f"member:{member_id}", 12_345, "活动补发积分"), (f"member:{member_id}", -345, "误发")]
        assert all(a.staff_id is not None for a in audits)
        assert check_ledger(sess).ok


def test_console_sees_member_points_transactions_and_redemptions(app, client, wx_login, staff_login):
    alice = wx_login("alice")
    credit(app, alice, 30_000)
    ops = staff_login("operations")
    item = client.post(ITEMS, headers=ops, json={"kind": "invite_code", "title": "邀请码"}).get_json()["data"]["id"]
    placed = redeem(client, alice, item).get_json()["data"]
    finance = staff_login("finance")

    member = client.get(f"/admin/api/v1/points/members/{alice['user']['id']}", headers=finance).get_json()["data"]
    assert member["balances"]["available"] == 20_000 and member["entries_total"] == 2
    assert [e["transaction"]["kind"] for e in member["recent_entries"]] == ["redeem", "adjust"]
    assert client.get("/admin/api/v1/points/members/999999", headers=finance).status_code == 404

    txs = client.get(f"/admin/api/v1/points/transactions?member_id={alice['user']['id']}&kind=redeem", headers=finance).get_json()["data"]
    assert txs["total"] == 1
    tx = txs["items"][0]
    assert {(e["account"], e["amount"]) for e in tx["entries"]} == {("available", -10_000), ("redemption", 10_000)}
    assert tx["detail"]["redemption_id"] == placed["id"] and tx["actor"] == f"member:{alice['user']['id']}"

    listed = client.get(f"/admin/api/v1/points/redemptions?member_id={alice['user']['id']}&kind=invite_code&status=placed", headers=finance).get_json()["data"]
    assert listed["total"] == 1 and listed["items"][0]["member_id"] == alice["user"]["id"]
    assert listed["items"][0]["invite_codes"][0]["used_by"] is None
    assert client.get("/admin/api/v1/points/redemptions?kind=goods", headers=finance).get_json()["data"]["total"] == 0
    assert client.get(f"/admin/api/v1/points/redemptions/{placed['id']}", headers=ops).get_json()["data"]["idempotency_key"]
    bob = wx_login("bob")
    assert client.get(f"/api/v1/points/redemptions/{placed['id']}", headers=bob["headers"]).get_json()["code"] == 40441
    assert client.get("/api/v1/points", headers=ops).status_code == 401  # staff tokens do not open member routes


def test_seed_demo_stocks_one_item_of_each_kind_once(app):
    with app.app_context():
        sess = db.session()
        list(seed_demo(sess))
        db.commit()
        again = list(seed_demo(sess))
        db.commit()
        items = sess.scalars(select(RedemptionItem)).all()
        assert sorted(i.kind.value for i in items) == ["goods", "invite_code", "privilege"]
        assert sum("already there" in line for line in again if line.startswith("redemption item")) == 3
