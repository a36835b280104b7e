"""A distributor's tier discount: the prices they see, the order they pay, refunds and the rewards on it."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from server import db
from server.orders import services as orders
from server.orders.errors import RefundTooLargeError
from server.orders.models import Order, Product, Sku
from server.points import services as points
from server.points.models import OrderReward

LIST_PRICE = 12_345


@pytest.fixture
def sku_id(sess):
    with sess() as s:
        product = Product(title="茶具")
        s.add(product)
        s.flush()
        sku = Sku(product_id=product.id, price_fen=LIST_PRICE, stock=10)
        s.add(sku)
        db.commit()
        return sku.id


def _skus(client, headers=None):
    page = client.get("/api/v1/products", headers=headers or {}).get_json()["data"]
    return {s["id"]: s for p in page["items"] for s in p["skus"]}, page["items"][0]["discount_bp"]


def _order(client, member, sku_id, quantity=3):
    response = client.post("/api/v1/orders", json={"items": [{"sku_id": sku_id, "quantity": quantity}]}, headers=member["headers"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()["data"]


def _pay(sess, order_id):
    with sess() as s:
        order = s.get(Order, order_id)
        orders.apply_payment(s, out_trade_no=order.out_trade_no, transaction_id=f"42{order_id:016d}", amount_fen=order.total_fee, api="v3")
        points.process_order(s, order)
        db.commit()


def test_tier_one_distributor_sees_and_pays_the_discounted_price(client, distributor, wx_login, share_scene, sku_id, sess):
    zoe = distributor("zoe")
    alice = distributor("alice", scene=share_scene(zoe["user"]["id"]))
    assert alice["distributor"]["tier"] == 2  # zoe recruits her; tier 2 has 2% by default
    bob = distributor("bob")
    assert bob["distributor"]["tier"] == 1  # 5% by default
    unit = LIST_PRICE * 9_500 // 10_000  # 11727.75 floored: the rounding is the buyer's

    skus, discount = _skus(client, bob["headers"])
    assert discount == 500 and skus[sku_id]["price_fen"] == LIST_PRICE and skus[sku_id]["pay_price_fen"] == unit
    product_id = client.get("/api/v1/products").get_json()["data"]["items"][0]["id"]
    one = client.get(f"/api/v1/products/{product_id}", headers=bob["headers"]).get_json()["data"]
    assert one["skus"][0]["pay_price_fen"] == unit

    order = _order(client, bob, sku_id)
    assert order["total_fee"] == unit * 3 == 35_181
    assert (order["discount_bp"], order["discount_fen"]) == (500, LIST_PRICE * 3 - 35_181)
    detail = client.get(f"/api/v1/orders/{order['id']}", headers=bob["headers"]).get_json()["data"]
    assert [(i["price_fen"], i["list_price_fen"]) for i in detail["items"]] == [(unit, LIST_PRICE)]

    two = _order(client, alice, sku_id, quantity=1)
    assert two["total_fee"] == LIST_PRICE * 9_800 // 10_000 and two["discount_bp"] == 200


def test_everyone_else_pays_the_catalog_price(client, distributor, wx_login, sku_id, owner):
    carol = wx_login("carol")
    pending = distributor("dave", approve=False)
    for headers in (None, carol["headers"], pending["headers"], {"Authorization": "Bearer not-a-token"}):
        skus, discount = _skus(client, headers)
        assert discount == 0 and skus[sku_id]["pay_price_fen"] == LIST_PRICE
    for member in (carol, pending):
        order = _order(client, member, sku_id, quantity=1)
        assert (order["total_fee"], order["discount_bp"], order["discount_fen"]) == (LIST_PRICE, 0, 0)


def test_a_tier_change_never_reprices_a_placed_order(client, distributor, sku_id, owner):
    bob = distributor("bob")
    order = _order(client, bob, sku_id, quantity=1)
    assert client.patch("/admin/api/v1/distributor-tiers/1", json={"discount_bp": 1_000}, headers=owner).status_code == 200
    again = client.get(f"/api/v1/orders/{order['id']}", headers=bob["headers"]).get_json()["data"]
    assert again["total_fee"] == order["total_fee"] == LIST_PRICE * 9_500 // 10_000
    assert _order(client, bob, sku_id, quantity=1)["total_fee"] == LIST_PRICE * 9_000 // 10_000


def test_rewards_and_refunds_follow_what_was_paid(client, distributor, wx_login, share_scene, sku_id, owner, sess):
    """zoe brought bob; bob, a tier-1 distributor, buys at 5% off: zoe's points are on what he paid."""
    client.patch("/admin/api/v1/distributor-tiers/1", json={"discount_bp": 5_000}, headers=owner)
    zoe = wx_login("zoe")
    bob = wx_login("bob", scene=share_scene(zoe["user"]["id"]))
    with sess() as s:
        from server.distribution import services as distribution

        distribution.appoint(s, bob["user"]["id"], real_name="Bob", phone="13800138001", staff=_owner_staff(s))
        db.commit()
    order = _order(client, bob, sku_id, quantity=2)
    paid = (LIST_PRICE // 2) * 2  # 6172.5 floored, twice
    assert order["total_fee"] == paid == 12_344
    _pay(sess, order["id"])
    with sess() as s:
        reward = s.scalar(select(OrderReward).where(OrderReward.order_id == order["id"], OrderReward.level == 1))
        assert reward.member_id == zoe["user"]["id"] and reward.amount == paid * 50 // 10_000  # 0.5% of ¥123.44, not of ¥246.90
        o = s.get(Order, order["id"])
        # The buyer can have back what he paid, never the catalog price.
        assert orders.refundable(s, o) == paid
        with pytest.raises(RefundTooLargeError):
            orders.request_refund(s, o, paid + 1, "多退", actor="staff:1", approved=True)
        refund = orders.request_refund(s, o, paid // 2, "退一件", actor="staff:1", approved=True)
        orders.finish_refund(s, o, refund, succeeded=True, actor="wechat", refund_id="5030000009")
        points.process_order(s, o)
        s.refresh(reward)
        assert reward.amount - reward.reversed_amount == (paid - paid // 2) * 50 // 10_000
        db.commit()


def _owner_staff(s):
    from server.accounts.models import Staff, StaffRole

    return s.scalar(select(Staff).where(Staff.role == StaffRole.owner))
