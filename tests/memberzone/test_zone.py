"""The member zone as a member uses it: sign-in that returns to the page asked for, the redemption
shop's forms (once per form, refusals that change nothing), masked team and orders, recruits."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from sqlalchemy import func, select

from server import db
from server.accounts.models import Member
from server.memberzone import session
from server.points.models import Redemption
from server.points.queries import member_balances
from tests.memberzone.conftest import follow_oauth, form_fields
from tests.points import make_member, make_sku, pay, place
from tests.points.test_redemption import CONTACT, credit, make_item


def _redemptions(app, member_id: int) -> int:
    with app.app_context():
        return db.session().scalar(select(func.count()).select_from(Redemption).where(Redemption.member_id == member_id)) or 0


def _available(app, member_id: int) -> int:
    with app.app_context():
        return member_balances(db.session(), member_id).available


def test_sign_in_returns_to_the_page_asked_for_and_never_elsewhere(app, wx_login):
    wx_login("alice")
    browser = app.test_client()
    landed = follow_oauth(browser, browser.get("/h5/member/shop?page=1"), "alice")
    assert landed.status_code == 302 and urlsplit(landed.headers["Location"]).path == "/h5/member/shop"
    assert browser.get("/h5/member/shop").status_code == 200
    # What the nonce cookie remembers leads only to a page of the zone, never off the site or back to OAuth.
    for unsafe in ("//evil.example.com/x", "https://evil.example.com", "/h5/memberx", "/h5/member/oauth?code=1", "/h5/member/\\evil", ""):
        assert session._zone_path(unsafe) == "/h5/member", unsafe
    assert session._zone_path("/h5/member/team?level=indirect") == "/h5/member/team?level=indirect"


def test_redeeming_from_the_shop_spends_once_per_form(app, zone):
    browser, alice = zone("alice")
    me = alice["user"]["id"]
    credit(app, alice, 500_000)
    item = make_item(app, "goods", price=200_000, title="保温杯")
    shop = browser.get("/h5/member/shop").get_data(as_text=True)
    assert "保温杯" in shop and "5,000.00" in shop
    fields = form_fields(shop, f'id="item-{item}"')
    form = fields | {"quantity": "2", "name": CONTACT["name"], "phone": CONTACT["phone"], "address": CONTACT["address"]}

    first = browser.post("/h5/member/shop", data=form)
    assert first.status_code == 303 and "/h5/member/redemptions" in first.headers["Location"]
    again = browser.post("/h5/member/shop", data=form)  # a double tap, or the browser resending
    assert again.status_code == 303 and again.headers["Location"] == first.headers["Location"]
    assert _redemptions(app, me) == 1 and _available(app, me) == 100_000

    listed = browser.get(first.headers["Location"]).get_data(as_text=True)
    assert "兑换成功" in listed and "保温杯 × 2" in listed and "-4000.00" in listed


def test_refusals_show_the_shop_with_the_reason_and_change_nothing(app, zone):
    browser, alice = zone("alice")
    me = alice["user"]["id"]
    credit(app, alice, 5_000)
    goods = make_item(app, "goods", price=200_000, title="保温杯")
    cheap = make_item(app, "privilege", price=1_000, title="优先参加活动", stock=0)
    shop = browser.get("/h5/member/shop").get_data(as_text=True)
    assert re.search(rf'id="item-{goods}".*?积分不足', shop, re.S) and re.search(rf'id="item-{cheap}".*?已兑完', shop, re.S)

    goods_form = form_fields(shop, f'id="item-{goods}"') | {"name": "爱丽丝", "phone": "13800138000", "address": "上海"}
    poor = browser.post("/h5/member/shop", data=goods_form)
    assert poor.status_code == 409 and "可用积分不足" in poor.get_data(as_text=True)
    no_contact = browser.post("/h5/member/shop", data=form_fields(shop, f'id="item-{goods}"'))
    assert no_contact.status_code == 422 and "收货信息" in no_contact.get_data(as_text=True)
    bad_phone = browser.post("/h5/member/shop", data=goods_form | {"phone": "call me"})
    assert bad_phone.status_code == 422
    sold_out = browser.post("/h5/member/shop", data=form_fields(shop, f'id="item-{cheap}"'))
    assert sold_out.status_code == 409 and "已兑完" in sold_out.get_data(as_text=True)
    for bad in ({"item_id": "x"}, {"quantity": "0"}, {"quantity": "101"}, {"item_id": "999999999"}, {"idempotency_key": ""}):
        answer = browser.post("/h5/member/shop", data=form_fields(shop, f'id="item-{cheap}"') | bad)
        assert answer.status_code in (400, 404, 422), (bad, answer.status_code)
    assert _redemptions(app, me) == 0 and _available(app, me) == 5_000


def test_a_form_only_counts_with_this_visitors_token(app, zone):
    browser, alice = zone("alice")
    credit(app, alice, 50_000)
    item = make_item(app, price=1_000)
    fields = form_fields(browser.get("/h5/member/shop").get_data(as_text=True), f'id="item-{item}"')
    other, _ = zone("bob")
    bob_token = form_fields(other.get("/h5/member/shop").get_data(as_text=True), f'id="item-{item}"')["form_token"]
    for token in ("", "forged", bob_token):
        answer = browser.post("/h5/member/shop", data=fields | {"form_token": token})
        assert answer.status_code == 400 and "页面已过期" in answer.get_data(as_text=True)
    stranger = app.test_client()  # no zone cookie at all
    assert stranger.post("/h5/member/shop", data=fields).status_code == 400
    assert _redemptions(app, alice["user"]["id"]) == 0


def test_team_and_orders_show_people_masked(app, zone, sess):
    browser, alice = zone("alice")
    with sess() as s:
        me = s.get(Member, alice["user"]["id"])
        buyer = make_member(s, "王大锤", inviter=me)
        pay(s, place(s, buyer, make_sku(s, price_fen=8_800)))
        make_member(s, "李四", inviter=buyer, upline=me)  # her level 2
        db.commit()
    team = browser.get("/h5/member/team").get_data(as_text=True)
    assert "王*锤" in team and "王大锤" not in team and "¥88.00" in team
    indirect = browser.get("/h5/member/team?level=indirect").get_data(as_text=True)
    assert "李*" in indirect and "李四" not in indirect
    orders = browser.get("/h5/member/orders").get_data(as_text=True)
    assert "王*锤" in orders and "王大锤" not in orders and "1 级" in orders and "¥88.00" in orders


def test_a_recruiter_sees_recruits_and_places_left(app, zone, distributor, share_scene, wx_login, apply, owner, client):
    assert client.patch("/admin/api/v1/distributor-tiers/1", json={"max_recruits": 5}, headers=owner).status_code == 200
    alice = distributor("alice")
    bob = wx_login("bob", scene=share_scene(alice["user"]["id"]))
    assert apply(bob).get_json()["data"]["tier"] == 2
    browser = app.test_client()
    follow_oauth(browser, browser.get("/h5/member/recruits"), "alice")
    page = browser.get("/h5/member/recruits").get_data(as_text=True)
    assert 'id="recruits-remaining">4<' in page and "审核中" in page and "本人销售额" in page
    member_only, _ = zone("carol")
    assert 'id="not-distributor"' in member_only.get("/h5/member/recruits").get_data(as_text=True)


def test_another_members_statement_is_not_found(app, zone):
    browser, _ = zone("alice")
    page = browser.get("/h5/member/statements/123456")
    assert page.status_code == 404 and "没有找到这张结算单" in page.get_data(as_text=True)


def test_points_page_lists_entries_of_the_chosen_account(app, zone):
    browser, alice = zone("alice")
    credit(app, alice, 12_345)
    page = browser.get("/h5/member/points").get_data(as_text=True)
    assert 'id="points-available">123.45<' in page and "+123.45" in page
    assert "+123.45" not in browser.get("/h5/member/points?account=pending").get_data(as_text=True)
    assert browser.get("/h5/member/points?account=bogus&page=zzz").status_code == 200
