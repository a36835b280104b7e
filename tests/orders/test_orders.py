"""Catalog, placing orders, stock under concurrency, the state machine and the order timeline."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from server import db
from server.orders import services
from server.orders.errors import IllegalTransitionError
from server.orders.models import Order, OrderEvent, OrderStatus, Sku


@pytest.fixture
def product(client, staff_login):
    """A product on sale with one SKU at ¥100 (10000 fen) and the given stock."""

    def make(stock: int = 10, price_fen: int = 10_000, title: str = "有机茶叶礼盒") -> dict:
        ops = staff_login("operations") if not hasattr(make, "ops") else make.ops
        make.ops = ops
        created = client.post("/admin/api/v1/products", headers=ops, json={"title": title})
        assert created.status_code == 201, created.get_json()
        pid = created.get_json()["data"]["id"]
        sku = client.post(f"/admin/api/v1/products/{pid}/skus", headers=ops, json={"name": "500g", "price_fen": price_fen, "stock": stock})
        assert sku.status_code == 201, sku.get_json()
        return {"id": pid, "sku_id": sku.get_json()["data"]["id"], "ops": ops}

    return make


def order(client, member, sku_id, quantity=1, **extra):
    return client.post("/api/v1/orders", headers=member["headers"], json={"items": [{"sku_id": sku_id, "quantity": quantity}], **extra})


def test_catalog_is_public_and_hides_what_is_off_sale(client, product):
    p = product()
    listed = client.get("/api/v1/products").get_json()["data"]
    assert listed["total"] == 1 and listed["items"][0]["skus"][0]["price_fen"] == 10_000
    client.patch(f"/admin/api/v1/products/{p['id']}", headers=p["ops"], json={"status": "off_sale"})
    assert client.get("/api/v1/products").get_json()["data"]["total"] == 0
    assert client.get(f"/api/v1/products/{p['id']}").status_code == 404
    presale = client.post("/admin/api/v1/products", headers=p["ops"], json={"title": "新茶预售", "presale": True})
    assert presale.status_code == 422


def test_order_reserves_stock_and_stamps_inviter_and_upline(app, client, wx_login, product):
    p = product(stock=5)
    zoe = wx_login("zoe")
    zoe_scene = client.post("/api/v1/referral/scenes", headers=zoe["headers"], json={"channel": "miniprogram_code"}).get_json()["data"]["scene"]
    alice = wx_login("alice", scene=zoe_scene)
    alice_scene = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={"channel": "miniprogram_code"}).get_json()["data"]["scene"]
    bob = wx_login("bob", scene=alice_scene)
    response = order(client, bob, p["sku_id"], 2)
    assert response.status_code == 201, response.get_json()
    data = response.get_json()["data"]
    assert data["status"] == "created" and data["total_fee"] == 20_000 and len(data["out_trade_no"]) <= 32
    assert [e["event"] for e in data["timeline"]] == ["created"]
    with app.app_context():
        sess = db.session()
        row = sess.get(Order, data["id"])
        assert (row.inviter_id, row.upline_id) == (alice["user"]["id"], zoe["user"]["id"])
        assert sess.get(Sku, p["sku_id"]).stock == 3
    assert order(client, bob, p["sku_id"], 4).status_code == 409  # only 3 left


def test_rebinding_never_moves_an_existing_orders_referrers(app, client, wx_login, product, staff_login):
    p = product()
    owner = staff_login("owner")
    client.put("/admin/api/v1/settings/binding_policy", headers=owner, json={"value": "last_touch"})
    alice, zoe = wx_login("alice"), wx_login("zoe")
    scene = lambda m: client.post("/api/v1/referral/scenes", headers=m["headers"], json={}).get_json()["data"]["scene"]
    bob = wx_login("bob", scene=scene(alice))
    first = order(client, bob, p["sku_id"]).get_json()["data"]["id"]
    assert client.post("/api/v1/referral/bind", headers=bob["headers"], json={"scene": scene(zoe)}).get_json()["data"]["bound"]
    second = order(client, bob, p["sku_id"]).get_json()["data"]["id"]
    with app.app_context():
        sess = db.session()
        assert sess.get(Order, first).inviter_id == alice["user"]["id"]
        assert sess.get(Order, second).inviter_id == zoe["user"]["id"]


def test_bad_order_bodies(client, wx_login, product):
    p = product()
    bob = wx_login("bob")
    for body in ({"items": []}, {"items": [{"sku_id": p["sku_id"], "quantity": 0}]}, {"items": [{"sku_id": "x", "quantity": 1}]}, {}):
        assert client.post("/api/v1/orders", headers=bob["headers"], json=body).status_code == 422, body
    assert order(client, bob, 999_999).status_code == 409


def test_cancel_releases_stock_and_illegal_moves_are_refused(app, client, wx_login, product):
    p = product(stock=1)
    bob = wx_login("bob")
    oid = order(client, bob, p["sku_id"]).get_json()["data"]["id"]
    assert client.post(f"/api/v1/orders/{oid}/receive", headers=bob["headers"]).status_code == 409
    cancelled = client.post(f"/api/v1/orders/{oid}/cancel", headers=bob["headers"])
    assert cancelled.get_json()["data"]["status"] == "closed"
    assert client.post(f"/api/v1/orders/{oid}/cancel", headers=bob["headers"]).status_code == 409
    carol = wx_login("carol")
    assert client.get(f"/api/v1/orders/{oid}", headers=carol["headers"]).status_code == 404
    assert order(client, carol, p["sku_id"]).status_code == 201  # the released unit


def test_state_machine_table_refuses_every_illegal_move(app, wx_login, client, product):
    p = product()
    bob = wx_login("bob")
    oid = order(client, bob, p["sku_id"]).get_json()["data"]["id"]
    with app.app_context():
        sess = db.session()
        row = sess.get(Order, oid)
        for target in OrderStatus:
            if target not in services.TRANSITIONS[OrderStatus.created]:
                with pytest.raises(IllegalTransitionError):
                    services.transition(sess, row, target, actor="test")
        assert row.status == OrderStatus.created


def test_full_lifecycle_with_timeline(app, client, wx_login, product, staff_login):
    p = product()
    bob = wx_login("bob")
    data = order(client, bob, p["sku_id"]).get_json()["data"]
    with app.app_context():
        sess = db.session()
        services.apply_payment(sess, out_trade_no=data["out_trade_no"], transaction_id="4200000001", amount_fen=data["total_fee"], api="v3")
        db.commit()
    ops = p["ops"]
    shipped = client.post(f"/admin/api/v1/orders/{data['id']}/ship", headers=ops, json={"carrier": "顺丰", "tracking_no": "SF123"})
    assert shipped.get_json()["data"]["status"] == "shipped"
    received = client.post(f"/api/v1/orders/{data['id']}/receive", headers=bob["headers"]).get_json()["data"]
    assert received["status"] == "received"
    assert [e["event"] for e in received["timeline"]] == ["created", "paid", "shipped", "received"]
    assert all(e["time"] and e["actor"] for e in received["timeline"])


def test_thirty_buyers_race_for_ten_units(app, client, wx_login, product):
    """Stock is taken by a conditional UPDATE: exactly ten orders get a unit, none oversold."""
    p = product(stock=10)
    buyers = [wx_login(f"buyer{i}") for i in range(30)]
    statuses: list[int] = []
    barrier = threading.Barrier(30)

    def buy(member):
        local = app.test_client()
        barrier.wait()
        statuses.append(local.post("/api/v1/orders", headers=member["headers"], json={"items": [{"sku_id": p["sku_id"], "quantity": 1}]}).status_code)

    threads = [threading.Thread(target=buy, args=(m,)) for m in buyers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] * 10 + [409] * 20
    with app.app_context():
        sess = db.session()
        assert sess.get(Sku, p["sku_id"]).stock == 0
        assert sess.scalar(select(func.count()).select_from(Order)) == 10
        assert sess.scalar(select(func.count()).select_from(OrderEvent).where(OrderEvent.event == "created")) == 10


def test_distributor_sees_orders_brought_with_buyer_masked(client, wx_login, product):
    p = product()
    alice = wx_login("alice")
    scene = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={}).get_json()["data"]["scene"]
    bob = wx_login("bob", scene=scene)
    client.patch("/api/v1/me", headers=bob["headers"], json={"nickname": "鲍勃先生"})
    order(client, bob, p["sku_id"])
    brought = client.get("/api/v1/referral/orders", headers=alice["headers"]).get_json()["data"]
    assert brought["total"] == 1 and brought["items"][0]["buyer"]["nickname"] == "鲍**生" and brought["items"][0]["level"] == 1
    assert client.get("/api/v1/referral/orders", headers=bob["headers"]).get_json()["data"]["total"] == 0


def test_product_bodies_are_strict_and_dates_bounded(client, product):
    p = product()
    ops = p["ops"]
    for body in ({"title": "t", "ship_date": "9999-12-31T23:00:00-05:00"}, {"title": "t", "presale": "yes"}, {"title": "t", "sort": True}):
        assert client.post("/admin/api/v1/products", headers=ops, json=body).status_code == 422, body
    kept = client.patch(f"/admin/api/v1/products/{p['id']}", headers=ops, json={"presale": None, "title": None, "sort": 3})
    assert kept.status_code == 200 and kept.get_json()["data"]["title"] == "有机茶叶礼盒" and kept.get_json()["data"]["sort"] == 3
    dated = client.post("/admin/api/v1/products", headers=ops, json={"title": "新茶", "presale": True, "ship_date": "2027-03-01T00:00:00+08:00"})
    assert dated.status_code == 201 and dated.get_json()["data"]["ship_date"] == "2027-02-28T16:00:00+00:00"
