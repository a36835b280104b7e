"""Each notifying event, end to end: the event's own service, the outbox, the sandbox's subscribeMessage.send."""
from __future__ import annotations

from flask import Flask

from server import db
from server.accounts.models import Member
from tests.notifications.conftest import TEMPLATES, outbox
from tests.points import make_sku, pay, place, ship


def test_an_order_shipped_reaches_the_buyer_within_their_allowance(app: Flask, notify, person, subscribe, sandbox_messages) -> None:
    notify("order_shipped")
    buyer = person()
    subscribe(buyer, "order_shipped")
    with app.app_context():
        sess = db.session()
        order = pay(sess, place(sess, sess.get(Member, buyer.id), make_sku(sess, price_fen=12_345)))
        db.commit()
        ship(sess, order)
        db.commit()
        out_trade_no = order.out_trade_no
    [message] = sandbox_messages.messages(buyer.openid)
    assert message["template_id"] == TEMPLATES["order_shipped"]
    assert message["page"] == "pages/orders/detail"
    data = message["data"]
    assert data["character_string1"] == out_trade_no
    assert data["thing2"] == "有机茶叶礼盒"
    assert data["amount3"] == "¥123.45"
    assert data["phrase4"] == "已发货"
    [row] = outbox(app, event="order_shipped")
    assert row.state.value == "sent" and row.channel.value == "subscribe" and row.msgid == message["msgid"]


def _messages_of(sandbox_messages, who) -> list[dict]:
    return [m["data"] for m in sandbox_messages.messages(who.openid)]


def test_points_earned_reach_the_inviter_as_pending(app: Flask, notify, person, subscribe, sandbox_messages, scene_of) -> None:
    notify("points_pending")
    alice = person()
    subscribe(alice, "points_pending")
    bob = person(scene=scene_of({"headers": alice.headers}))
    with app.app_context():
        sess = db.session()
        order = pay(sess, place(sess, sess.get(Member, bob.id), make_sku(sess, price_fen=100_000)))
        db.commit()
        out_trade_no = order.out_trade_no
    [data] = _messages_of(sandbox_messages, alice)
    # Level 1 earns 0.5% of a first order: ¥1000 → 5 points.
    assert data == {"thing1": "有机茶叶礼盒", "number2": "5", "phrase3": "待结算", "date4": data["date4"], "character_string5": out_trade_no}
    assert data["date4"].startswith("20") and "年" in data["date4"]
    assert sandbox_messages.messages(alice.openid)[0]["page"] == "pages/points/index"
    assert _messages_of(sandbox_messages, bob) == []


def test_settled_points_reach_the_member_as_available(app: Flask, notify, person, subscribe, sandbox_messages, scene_of) -> None:
    from server.points import settlement
    from tests.points import completed_order

    notify("points_available")
    alice = person()
    subscribe(alice, "points_available")
    bob = person(scene=scene_of({"headers": alice.headers}))
    with app.app_context():
        sess = db.session()
        completed_order(sess, sess.get(Member, bob.id), make_sku(sess, price_fen=200_000))
        db.commit()
        settlement.settle(sess, period="manual:notify", mode="weekly", actor="test")
        db.commit()
    [data] = _messages_of(sandbox_messages, alice)
    assert data["number1"] == "10" and data["number2"] == "10" and data["thing3"] == "积分已可兑换"


def test_a_refund_result_reaches_the_buyer(app: Flask, notify, person, subscribe, sandbox_messages) -> None:
    from server.orders import services as orders

    notify("refund_result")
    buyer = person()
    subscribe(buyer, "refund_result", times=2)
    with app.app_context():
        sess = db.session()
        order = pay(sess, place(sess, sess.get(Member, buyer.id), make_sku(sess, price_fen=5_000)))
        db.commit()
        asked = orders.request_member_refund(sess, order, 1_000, "不想要了", actor="member")
        db.commit()
        orders.reject_refund(sess, asked.id, reason="已超过售后期", actor="staff:1")
        db.commit()
        again = orders.request_member_refund(sess, order, 2_000, "质量问题", actor="member")
        db.commit()
        orders.finish_refund(sess, order, again, succeeded=True, actor="wechat", refund_id="50300000001")
        db.commit()
        out_trade_no = order.out_trade_no
    rejected, succeeded = _messages_of(sandbox_messages, buyer)
    assert rejected["character_string1"] == out_trade_no and rejected["amount2"] == "¥10.00"
    assert rejected["phrase3"] == "退款被拒" and rejected["thing4"] == "已超过售后期"
    assert succeeded["amount2"] == "¥20.00" and succeeded["phrase3"] == "退款成功" and succeeded["thing4"] == "退款已原路退回"


def test_a_distributor_application_decided_reaches_the_applicant(app: Flask, client, notify, person, subscribe, sandbox_messages, staff_login) -> None:
    notify("distributor_decided")
    ops = staff_login("operations")
    decisions = {}
    for action, reason in (("approve", ""), ("reject", "资料不完整，请补充身份证明和联系方式后重新提交申请")):
        applicant = person()
        subscribe(applicant, "distributor_decided")
        applied = client.post("/api/v1/distributors/apply", headers=applicant.headers, json={"real_name": "张三丰", "phone": "13800138000"})
        assert applied.status_code in (200, 201), applied.get_json()
        distributor_id = applied.get_json()["data"]["id"]
        decided = client.post(f"/admin/api/v1/distributors/{distributor_id}/decisions", headers=ops, json={"action": action, "reason": reason})
        assert decided.status_code == 200, decided.get_json()
        [decisions[action]] = _messages_of(sandbox_messages, applicant)
    assert decisions["approve"]["phrase1"] == "已通过" and decisions["approve"]["name4"] == "张三丰"
    assert decisions["reject"]["phrase1"] == "未通过"
    assert decisions["reject"]["thing2"] == "资料不完整，请补充身份证明和联系方式后…"  # 20 characters, the last one the mark
    assert len(decisions["reject"]["thing2"]) == 20


def test_a_valid_lead_reaches_its_sharer(app: Flask, client, notify, person, subscribe, sandbox_messages, scene_of, staff_login) -> None:
    notify("lead_valid")
    alice = person()
    subscribe(alice, "lead_valid")
    bob = person(scene=scene_of({"headers": alice.headers}))
    client.post("/api/v1/referral/leads", headers=bob.headers, json={"contact_name": "王先生", "phone": "13912345678", "note": "想要团购报价"})
    ops = staff_login("operations")
    leads = client.get("/admin/api/v1/leads", headers=ops, query_string={"source": "contact"}).get_json()["data"]["items"]
    assert client.post(f"/admin/api/v1/leads/{leads[0]['id']}/review", headers=ops, json={"status": "valid"}).status_code == 200
    [data] = _messages_of(sandbox_messages, alice)
    assert data["number2"] == "10" and data["phrase3"] == "有效" and data["thing1"].startswith("线索 #")
    assert ":" in data["time4"]


def test_a_fulfilled_redemption_reaches_the_member(app: Flask, client, notify, person, subscribe, sandbox_messages, staff_login) -> None:
    import uuid

    from server.points import redemption
    from server.points.models import AccountKind, ItemKind
    from tests.points import post_to

    notify("redemption_fulfilled")
    alice = person()
    subscribe(alice, "redemption_fulfilled")
    with app.app_context():
        sess = db.session()
        post_to(sess, sess.get(Member, alice.id), AccountKind.available, 30_000)
        item = redemption.create_item(sess, kind=ItemKind.privilege, title="线下品鉴会入场资格（限上海站）", price=10_000, stock=None, per_member_limit=None)
        db.commit()
        item_id = item.id
    placed = client.post("/api/v1/points/redemptions", headers=alice.headers | {"Idempotency-Key": uuid.uuid4().hex}, json={"item_id": item_id, "quantity": 2})
    assert placed.status_code in (200, 201), placed.get_json()
    ops = staff_login("operations")
    fulfilled = client.post(f"/admin/api/v1/points/redemptions/{placed.get_json()['data']['id']}/fulfil", headers=ops, json={"note": "已发送电子票"})
    assert fulfilled.status_code == 200
    [data] = _messages_of(sandbox_messages, alice)
    assert data == {"thing1": "线下品鉴会入场资格（限上海站）", "number2": "200", "phrase3": "已发放", "date4": data["date4"], "thing5": "已发送电子票"}
