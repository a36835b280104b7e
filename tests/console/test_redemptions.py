"""The redemption pages: the fulfilment queue (ship with tracking, grant, cancel returning the points),
the catalog (create, edit, on and off sale) and the invite codes, for every role."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry, Member
from server.points.models import InviteCode, ItemKind, Redemption, RedemptionItem, RedemptionStatus
from server.points.queries import member_balances
from server.points.redemption import redeem
from server.referral.services import bind_member
from tests.console.conftest import Console
from tests.console.test_pages import demo  # noqa: F401  (fixture)


def _login(app: Flask, username: str) -> Console:
    browser = Console(app.test_client())
    assert browser.login(username, "demo-pass-2026").status_code == 303
    return browser


def _ids(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {m.openid.removeprefix("demo-"): m.id for m in db.session().scalars(select(Member))}


def _redemption(app: Flask) -> Redemption:
    with app.app_context():
        row = db.session().scalars(select(Redemption).order_by(Redemption.id)).first()
        assert row is not None
        db.session().expunge(row)
        return row


def _item(app: Flask, kind: ItemKind) -> int:
    with app.app_context():
        item_id = db.session().scalars(select(RedemptionItem.id).where(RedemptionItem.kind == kind)).first()
        assert item_id is not None
        return item_id


@pytest.mark.parametrize("username,catalog", [("owner", True), ("ops", True), ("finance", False)])
def test_each_role_reaches_its_redemption_pages(app: Flask, demo: dict[str, Any], username: str, catalog: bool) -> None:  # noqa: F811
    browser = _login(app, username)
    queue = browser.get("/console/redemptions")
    assert queue.status_code == 200 and "蓝牙降噪耳机" in queue.text and "杭州市西湖区" in queue.text
    assert ("发货" in queue.text) == catalog and ("取消并退积分" in queue.text) == catalog
    assert browser.get("/console/redemptions/invite-codes").status_code == 200
    assert browser.get("/console/redemptions/items").status_code == (200 if catalog else 403)
    assert browser.get(f"/console/redemptions/items/{_item(app, ItemKind.goods)}").status_code == (200 if catalog else 403)


def test_the_dashboard_links_to_the_queue(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    page = _login(app, "ops").get("/console/").text
    assert 'href="/console/redemptions?status=placed"' in page
    queue = _login(app, "ops").get("/console/redemptions?status=placed").text
    assert "蓝牙降噪耳机" in queue
    assert "蓝牙降噪耳机" not in _login(app, "ops").get("/console/redemptions?status=fulfilled").text


def test_goods_are_shipped_with_carrier_and_tracking(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ops = _login(app, "ops")
    row = _redemption(app)
    missing = ops.post(f"/console/redemptions/{row.id}/fulfil", {"carrier": "顺丰", "tracking_no": ""})
    assert missing.status_code == 422 and "快递公司和运单号" in missing.text
    shipped = ops.post(f"/console/redemptions/{row.id}/fulfil", {"carrier": "顺丰", "tracking_no": "SF1234567890", "note": "周一发出", "back": "/console/redemptions?status=placed"})
    assert shipped.status_code == 303 and shipped.location.endswith("/console/redemptions?status=placed")
    with app.app_context():
        done = db.session().get(Redemption, row.id)
        assert done is not None and done.status == RedemptionStatus.fulfilled and done.staff_note == "顺丰 SF1234567890；周一发出"
        assert db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"redemption:{row.id}")).all() == ["redemption.fulfil"]
    assert "SF1234567890" in ops.get("/console/redemptions").text
    again = ops.post(f"/console/redemptions/{row.id}/fulfil", {"carrier": "顺丰", "tracking_no": "SF1"})
    assert again.status_code == 409 and "已处理过" in again.text
    assert ops.post(f"/console/redemptions/{row.id}/cancel", {"note": "x"}).status_code == 409
    # An open redirect is not followed.
    assert ops.post("/console/redemptions/999999/fulfil", {}).status_code == 404


def test_cancelling_returns_the_points_and_the_stock(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    owner = _login(app, "owner")
    row = _redemption(app)
    with app.app_context():
        before = member_balances(db.session(), row.member_id).available
        stock = db.session().get(RedemptionItem, row.item_id).stock  # type: ignore[union-attr]
    assert owner.post(f"/console/redemptions/{row.id}/cancel", {"note": "长" * 300}).status_code == 422
    response = owner.post(f"/console/redemptions/{row.id}/cancel", {"note": "缺货", "back": "https://evil.example/"})
    assert response.status_code == 303 and response.location.endswith("/console/redemptions")
    with app.app_context():
        assert member_balances(db.session(), row.member_id).available == before + row.total
        assert db.session().get(RedemptionItem, row.item_id).stock == stock + row.quantity  # type: ignore[union-attr]
        assert db.session().get(Redemption, row.id).status == RedemptionStatus.cancelled  # type: ignore[union-attr]


def test_finance_cannot_decide(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    finance = _login(app, "finance")
    row = _redemption(app)
    assert finance.post(f"/console/redemptions/{row.id}/fulfil", {"carrier": "顺丰", "tracking_no": "SF1"}).status_code == 403
    assert finance.post(f"/console/redemptions/{row.id}/cancel", {}).status_code == 403
    assert finance.post("/console/redemptions/items", {"kind": "privilege", "title": "x", "price": "10"}).status_code == 403
    assert _redemption(app).status == RedemptionStatus.placed


def test_invite_codes_show_who_used_them_and_privileges_are_granted(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ids = _ids(app)
    with app.app_context():
        sess = db.session()
        item_id = sess.scalars(select(RedemptionItem.id).where(RedemptionItem.kind == ItemKind.invite_code)).one()
        result = redeem(sess, ids["bob"], item_id=item_id, quantity=2, idempotency_key="test-codes")
        codes = sess.scalars(select(InviteCode).where(InviteCode.redemption_id == result.redemption.id).order_by(InviteCode.id)).all()
        newcomer = Member(openid="newcomer", nickname="新朋友")
        sess.add(newcomer)
        sess.flush()
        bind_member(sess, newcomer, codes[0].scene_code)
        redemption_id, used_code, unused_code = result.redemption.id, codes[0].scene_code, codes[1].scene_code
        db.commit()
    ops = _login(app, "ops")
    page = ops.get("/console/redemptions/invite-codes").text
    assert used_code in page and unused_code in page and "新朋友" in page
    used_only = ops.get("/console/redemptions/invite-codes", query_string={"used": "1"}).text
    assert used_code in used_only and unused_code not in used_only
    assert "会员 ID 应为数字" in ops.get("/console/redemptions/invite-codes", query_string={"owner": "abc"}).text
    queue = ops.get("/console/redemptions", query_string={"kind": "invite_code"}).text
    assert used_code in queue and "已被" in queue and "蓝牙降噪耳机" not in queue
    refused = ops.post(f"/console/redemptions/{redemption_id}/cancel", {"note": "x"})
    assert refused.status_code == 409 and "邀请码已被使用" in refused.text
    assert ops.post(f"/console/redemptions/{redemption_id}/fulfil", {"note": "已发放"}).status_code == 303


def test_queue_filters_refuse_bad_values_gently(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ops = _login(app, "ops")
    for args, message in (({"status": "lost"}, "未知的状态"), ({"kind": "cash"}, "未知的类型"), ({"member": "x" * 50}, "会员 ID 应为数字"), ({"page": "abc"}, "")):
        response = ops.get("/console/redemptions", query_string=args)
        assert response.status_code == 200 and message in response.text


def test_catalog_items_are_created_edited_and_switched(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ops = _login(app, "ops")
    created = ops.post("/console/redemptions/items", {"kind": "privilege", "title": "VIP 沙龙", "price": "300", "stock": "", "per_member_limit": "1", "sort": "5"})
    assert created.status_code == 303
    with app.app_context():
        item = db.session().scalars(select(RedemptionItem).where(RedemptionItem.title == "VIP 沙龙")).one()
        assert (item.price, item.stock, item.per_member_limit, item.sort, item.active) == (30_000, None, 1, 5, True)
        item_id = item.id
    assert "VIP 沙龙" in ops.get("/console/redemptions/items").text
    edited = ops.post(f"/console/redemptions/items/{item_id}", {"title": "VIP 沙龙（周六）", "price": "350.5", "per_member_limit": "", "sort": "1", "description": "名额有限"})
    assert edited.status_code == 303
    assert ops.post(f"/console/redemptions/items/{item_id}", {"action": "toggle", "active": "0"}).status_code == 303
    with app.app_context():
        item = db.session().get(RedemptionItem, item_id)
        assert item is not None and (item.title, item.price, item.per_member_limit, item.active, item.description) == ("VIP 沙龙（周六）", 35_050, None, False, "名额有限")
        actions = db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"redemption_item:{item_id}")).all()
        assert sorted(actions) == ["redemption_item.create", "redemption_item.update", "redemption_item.update"]
    assert ">VIP 沙龙（周六）</a>" not in ops.get("/console/redemptions/items", query_string={"active": "1"}).text
    assert ">VIP 沙龙（周六）</a>" in ops.get("/console/redemptions/items", query_string={"active": "0"}).text
    # Goods: stock is added to, never overwritten, and never below zero.
    goods = _item(app, ItemKind.goods)
    assert ops.post(f"/console/redemptions/items/{goods}", {"title": "蓝牙降噪耳机", "price": "2000", "stock_delta": "5"}).status_code == 303
    with app.app_context():
        assert db.session().get(RedemptionItem, goods).stock == 24  # type: ignore[union-attr]  # 20, one redeemed, 5 more
    low = ops.post(f"/console/redemptions/items/{goods}", {"title": "蓝牙降噪耳机", "price": "2000", "stock_delta": "-1000"})
    assert low.status_code == 422 and "库存不能减到 0 以下" in low.text


#: Bad item forms and what the page says about each.
BAD_ITEMS = (
    ({"kind": "goods", "title": "便宜货", "price": "10"}, "最低兑换价"),
    ({"kind": "invite_code", "title": "贵邀请码", "price": "500"}, "invite_code_points"),
    ({"kind": "cash", "title": "现金", "price": "10"}, "请选择类型"),
    ({"kind": "privilege", "title": "", "price": "10"}, "请填写名称"),
    ({"kind": "privilege", "title": "x" * 200, "price": "10"}, "请填写名称"),
    ({"kind": "privilege", "title": "x", "price": "-5"}, "请输入价格"),
    ({"kind": "privilege", "title": "x", "price": "1.001"}, "请输入价格"),
    ({"kind": "privilege", "title": "x"}, "请输入价格"),
    ({"kind": "privilege", "title": "x", "price": "1", "stock": "abc"}, "库存应为"),
    ({"kind": "privilege", "title": "x", "price": "1", "per_member_limit": "0"}, "每人限兑"),
    ({"kind": "privilege", "title": "x", "price": "1", "image_url": "javascript:alert(1)"}, "图片地址"),
)


def test_bad_items_are_refused_and_nothing_is_created(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ops = _login(app, "ops")
    with app.app_context():
        before = db.session().scalar(select(func.count()).select_from(RedemptionItem))
    for form, message in BAD_ITEMS:
        response = ops.post("/console/redemptions/items", form)
        assert response.status_code == 422 and message in response.text, form
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(RedemptionItem)) == before


def test_an_invite_code_item_takes_the_set_price(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ops = _login(app, "ops")
    assert ops.post("/console/redemptions/items", {"kind": "invite_code", "title": "邀请码（新）"}).status_code == 303
    with app.app_context():
        assert db.session().scalars(select(RedemptionItem.price).where(RedemptionItem.title == "邀请码（新）")).one() == 10_000
    assert ops.get("/console/redemptions/items/999999").status_code == 404
