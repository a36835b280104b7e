"""Invite codes cost exactly the invite_code_points setting; goods never drop below min_goods_price."""
from __future__ import annotations

from server import db
from server.points.models import ItemKind, RedemptionItem
from tests.points.test_redemption import credit, redeem

ITEMS = "/admin/api/v1/points/items"
SETTINGS = "/admin/api/v1/settings"


def test_an_invite_code_costs_exactly_the_setting(client, staff_login):
    ops, owner = staff_login("operations"), staff_login("owner")
    cheap = client.post(ITEMS, headers=ops, json={"kind": "invite_code", "title": "邀请码", "price": 5_000})
    assert cheap.status_code == 422 and cheap.get_json()["data"]["errors"][0]["field"] == "price"
    dear = client.post(ITEMS, headers=ops, json={"kind": "invite_code", "title": "邀请码", "price": 20_000})
    assert dear.status_code == 422
    exact = client.post(ITEMS, headers=ops, json={"kind": "invite_code", "title": "邀请码", "price": 10_000})
    assert exact.status_code == 201 and exact.get_json()["data"]["price"] == 10_000
    default = client.post(ITEMS, headers=ops, json={"kind": "invite_code", "title": "邀请码"}).get_json()["data"]
    assert default["price"] == 10_000
    assert client.patch(f"{ITEMS}/{default['id']}", headers=ops, json={"price": 5_000}).status_code == 422
    assert client.get(f"{ITEMS}/{default['id']}", headers=ops).get_json()["data"]["price"] == 10_000

    # The owner changes the price of an invite code: every invite-code item follows, nothing else does.
    event = client.post(ITEMS, headers=ops, json={"kind": "privilege", "title": "活动", "price": 5_000}).get_json()["data"]
    assert client.put(f"{SETTINGS}/invite_code_points", headers=owner, json={"value": 150}).status_code == 200
    assert client.get(f"{ITEMS}/{default['id']}", headers=ops).get_json()["data"]["price"] == 15_000
    assert client.get(f"{ITEMS}/{exact.get_json()['data']['id']}", headers=ops).get_json()["data"]["price"] == 15_000
    assert client.get(f"{ITEMS}/{event['id']}", headers=ops).get_json()["data"]["price"] == 5_000
    for bad in (0, -1, "x", 100_001):
        refused = client.put(f"{SETTINGS}/invite_code_points", headers=owner, json={"value": bad})
        assert refused.status_code == 422 and refused.get_json()["data"]["errors"]
    assert client.get(f"{ITEMS}/{default['id']}", headers=ops).get_json()["data"]["price"] == 15_000


def test_a_member_pays_the_set_price_for_an_invite_code(app, client, wx_login, staff_login):
    ops, owner = staff_login("operations"), staff_login("owner")
    item = client.post(ITEMS, headers=ops, json={"kind": "invite_code", "title": "邀请码"}).get_json()["data"]["id"]
    client.put(f"{SETTINGS}/invite_code_points", headers=owner, json={"value": 120})
    alice = wx_login("alice")
    credit(app, alice, 12_000)
    response = redeem(client, alice, item)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["data"]["total"] == 12_000


def test_the_goods_minimum_cannot_rise_above_goods_on_sale(app, client, staff_login):
    ops, owner = staff_login("operations"), staff_login("owner")
    goods = client.post(ITEMS, headers=ops, json={"kind": "goods", "title": "耳机", "price": 200_000, "stock": 1}).get_json()["data"]
    refused = client.put(f"{SETTINGS}/min_goods_price", headers=owner, json={"value": 250_000})
    assert refused.status_code == 422 and str(goods["id"]) in refused.get_json()["data"]["errors"][0]["error"]
    assert client.get(f"{SETTINGS}", headers=owner).get_json()["data"]
    client.patch(f"{ITEMS}/{goods['id']}", headers=ops, json={"active": False})
    assert client.put(f"{SETTINGS}/min_goods_price", headers=owner, json={"value": 250_000}).status_code == 200
    # Below the new minimum, it can neither be repriced under it nor put back on sale at its old price.
    with app.app_context():
        assert db.session().get(RedemptionItem, goods["id"]).kind == ItemKind.goods
    assert client.patch(f"{ITEMS}/{goods['id']}", headers=ops, json={"price": 240_000}).status_code == 422
    back = client.patch(f"{ITEMS}/{goods['id']}", headers=ops, json={"active": True})
    assert back.status_code == 422 and back.get_json()["data"]["errors"][0]["field"] == "price"
    assert client.get(f"{ITEMS}/{goods['id']}", headers=ops).get_json()["data"]["active"] is False
    repriced = client.patch(f"{ITEMS}/{goods['id']}", headers=ops, json={"active": True, "price": 250_000})
    assert repriced.status_code == 200 and repriced.get_json()["data"]["active"] is True
