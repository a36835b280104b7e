"""Redeeming points: balances, stock, idempotency, invite codes, fulfilment and cancellation."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from server import db
from server.accounts.models import Member
from server.points import ledger
from server.points import redemption as services
from server.points.checks import check_ledger
from server.points.models import AccountKind, InviteCode, ItemKind, LedgerTransaction, Redemption, RedemptionItem, RedemptionStatus, TxKind
from server.points.queries import member_balances
from server.referral.models import Binding
from tests.points import post_to

K = AccountKind
CONTACT = {"name": "爱丽丝", "phone": "13800138000", "address": "上海市浦东新区世纪大道 100 号"}


def credit(app, member: dict[str, Any], amount: int) -> None:
    """Put ``amount`` hundredths on a signed-in member's available balance, from issuance."""
    with app.app_context():
        sess = db.session()
        post_to(sess, sess.get(Member, member["user"]["id"]), K.available, amount)
        db.commit()


def make_item(app, kind: str = "privilege", *, price: int = 10_000, stock: int | None = None, limit: int | None = None, title: str = "线下活动入场资格") -> int:
    with app.app_context():
        sess = db.session()
        item = services.create_item(sess, kind=ItemKind(kind), title=title, price=price, stock=stock, per_member_limit=limit)
        db.commit()
        return item.id


def redeem(client, member: dict[str, Any], item_id: int, quantity: int = 1, *, key: str | None = None, **extra: Any):
    headers = member["headers"] | {"Idempotency-Key": key or uuid.uuid4().hex}
    return client.post("/api/v1/points/redemptions", headers=headers, json={"item_id": item_id, "quantity": quantity, **extra})


def balances(client, member: dict[str, Any]) -> dict[str, Any]:
    return client.get("/api/v1/points", headers=member["headers"]).get_json()["data"]


def state(app, member_id: int) -> dict[str, Any]:
    """Everything a redemption could have touched, to prove a refusal touched nothing."""
    with app.app_context():
        sess = db.session()
        return {
            "balances": member_balances(sess, member_id),
            "stock": {i.id: i.stock for i in sess.scalars(select(RedemptionItem))},
            "redemptions": sess.scalar(select(func.count()).select_from(Redemption)),
            "codes": sess.scalar(select(func.count()).select_from(InviteCode)),
            "redemption_account": ledger.balance(sess, ledger.account(sess, None, K.redemption)),
        }


def test_redeem_moves_points_takes_stock_and_explains_the_entry(app, client, wx_login):
    alice = wx_login("alice")
    credit(app, alice, 500_000)
    item = make_item(app, "goods", price=200_000, stock=3, title="蓝牙降噪耳机")

    response = redeem(client, alice, item, 2, contact=CONTACT)
    assert response.status_code == 201, response.get_json()
    data = response.get_json()["data"]
    assert (data["quantity"], data["total"], data["total_points"], data["status"]) == (2, 400_000, "4000.00", "placed")
    assert data["item"]["title"] == "蓝牙降噪耳机" and data["contact"]["phone"] == "13800138000" and data["invite_codes"] == []

    assert balances(client, alice) == {
        "available": 100_000,
        "pending": 0,
        "matured": 0,
        "debt": 0,
        "points": {"available": "1000.00", "pending": "0.00", "matured": "0.00", "debt": "0.00"},
    }
    entries = client.get("/api/v1/points/entries", headers=alice["headers"]).get_json()["data"]
    newest = entries["items"][0]
    assert entries["total"] == 2
    assert (newest["amount"], newest["amount_points"], newest["account"]) == (-400_000, "-4000.00", "available")
    assert newest["transaction"]["kind"] == "redeem" and "蓝牙降噪耳机" in newest["transaction"]["reason"]
    with app.app_context():
        sess = db.session()
        assert sess.get(RedemptionItem, item).stock == 1
        assert ledger.balance(sess, ledger.account(sess, None, K.redemption)) == 400_000
        tx = ledger.find(sess, f"redeem:{alice['user']['id']}:{response.request.headers['Idempotency-Key']}")
        assert tx is not None and tx.kind == TxKind.redeem
        assert check_ledger(sess).ok
    listed = client.get("/api/v1/points/redemptions", headers=alice["headers"]).get_json()["data"]
    assert listed["total"] == 1 and listed["items"][0]["id"] == data["id"]
    assert client.get(f"/api/v1/points/redemptions/{data['id']}", headers=alice["headers"]).get_json()["data"] == data


def test_the_same_key_replays_the_first_redemption_without_charging(app, client, wx_login):
    alice = wx_login("alice")
    credit(app, alice, 50_000)
    item = make_item(app, stock=10)
    first = redeem(client, alice, item, key="order-7f3a")
    again = redeem(client, alice, item, key="order-7f3a")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json()
    assert balances(client, alice)["available"] == 40_000
    with app.app_context():
        assert db.session().get(RedemptionItem, item).stock == 9

    conflicting = redeem(client, alice, item, 2, key="order-7f3a")
    assert conflicting.status_code == 409 and conflicting.get_json()["code"] == 40941
    assert balances(client, alice)["available"] == 40_000

    bob = wx_login("bob")
    credit(app, bob, 10_000)
    assert redeem(client, bob, item, key="order-7f3a").status_code == 201  # keys are per member


@pytest.mark.parametrize("key", [None, "", "x" * 65, "has space"])
def test_a_redemption_needs_a_usable_idempotency_key(app, client, wx_login, key):
    alice = wx_login("alice")
    credit(app, alice, 50_000)
    item = make_item(app)
    headers = dict(alice["headers"])
    if key is not None:
        headers["Idempotency-Key"] = key
    response = client.post("/api/v1/points/redemptions", headers=headers, json={"item_id": item})
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == 40040 and "Idempotency-Key" in body["message"]
    assert balances(client, alice)["available"] == 50_000


def test_not_enough_points_changes_nothing(app, client, wx_login):
    alice = wx_login("alice")
    credit(app, alice, 9_999)
    item = make_item(app, "invite_code", price=10_000, stock=5, title="邀请码")
    before = state(app, alice["user"]["id"])
    response = redeem(client, alice, item)
    assert response.status_code == 409 and response.get_json()["code"] == 40940
    assert state(app, alice["user"]["id"]) == before
    assert before["stock"][item] == 5 and before["redemptions"] == 0 and before["codes"] == 0
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(LedgerTransaction).where(LedgerTransaction.kind == TxKind.redeem)) == 0


def test_stock_limit_contact_and_inactive_items_are_refused(app, client, wx_login, staff_login):
    alice = wx_login("alice")
    credit(app, alice, 2_000_000)
    goods = make_item(app, "goods", price=200_000, stock=1, title="蓝牙降噪耳机")
    assert redeem(client, alice, goods).status_code == 422  # goods ship somewhere: contact required
    assert redeem(client, alice, goods, 2, contact=CONTACT).get_json()["code"] == 40942
    assert redeem(client, alice, goods, contact=CONTACT).status_code == 201
    assert redeem(client, alice, goods, contact=CONTACT).get_json()["code"] == 40942

    limited = make_item(app, limit=1)
    placed = redeem(client, alice, limited).get_json()["data"]
    refused = redeem(client, alice, limited)
    assert refused.status_code == 409 and refused.get_json()["code"] == 40944 and refused.get_json()["data"] == {"limit": 1, "redeemed": 1}
    ops = staff_login("operations")
    assert client.post(f"/admin/api/v1/points/redemptions/{placed['id']}/cancel", headers=ops, json={}).status_code == 200
    assert redeem(client, alice, limited).status_code == 201  # a cancelled unit no longer counts

    client.patch(f"/admin/api/v1/points/items/{limited}", headers=ops, json={"active": False})
    assert redeem(client, alice, limited).get_json()["code"] == 40440
    assert redeem(client, alice, 999_999).get_json()["code"] == 40440


def test_invite_code_binds_whoever_signs_in_with_it_to_its_owner(app, client, wx_login, staff_login):
    alice = wx_login("alice")
    credit(app, alice, 20_000)
    item = make_item(app, "invite_code", price=10_000, title="邀请码")
    data = redeem(client, alice, item, 2).get_json()["data"]
    codes = [c["code"] for c in data["invite_codes"]]
    assert len(codes) == 2 and all(c["state"] == "unused" and not c["used"] for c in data["invite_codes"])
    assert balances(client, alice)["available"] == 0

    bob = wx_login("bob", scene=codes[0])
    assert bob["binding"]["bound"] and bob["binding"]["inviter"]["id"] == alice["user"]["id"]
    with app.app_context():
        sess = db.session()
        # Until bind_member calls it itself; a second call is a harmless no-op.
        services.mark_invite_code_used(sess, codes[0], bob["user"]["id"])
        db.commit()
        assert sess.get(Binding, bob["user"]["id"]).scene_code == codes[0]
        used = sess.scalars(select(InviteCode).where(InviteCode.scene_code == codes[0])).one()
        assert used.used_by == bob["user"]["id"] and used.used_at is not None
        assert services.mark_invite_code_used(sess, codes[0], 12345) is False

    mine = client.get("/api/v1/points/invite-codes", headers=alice["headers"]).get_json()["data"]
    assert {c["code"]: c["state"] for c in mine["items"]} == {codes[0]: "used", codes[1]: "unused"}
    carol = wx_login("carol", scene=codes[0])  # one code, one invitee
    assert not carol["binding"]["bound"]

    ops = staff_login("operations")
    refused = client.post(f"/admin/api/v1/points/redemptions/{data['id']}/cancel", headers=ops, json={})
    assert refused.status_code == 409 and refused.get_json()["code"] == 40946
    assert refused.get_json()["data"] == {"used_codes": [codes[0]]}


def test_cancellation_returns_stock_and_points_paying_debt_first(app, client, wx_login, staff_login):
    alice = wx_login("alice")
    credit(app, alice, 10_000)
    item = make_item(app, "invite_code", price=10_000, stock=4, title="邀请码")
    placed = redeem(client, alice, item).get_json()["data"]
    code = placed["invite_codes"][0]["code"]
    with app.app_context():
        sess = db.session()
        # A refund took back 30 points she had already spent.
        post_to(sess, sess.get(Member, alice["user"]["id"]), K.debt, -3_000, tx_kind=TxKind.reversal)
        db.commit()
    assert balances(client, alice)["debt"] == 3_000

    ops = staff_login("operations")
    response = client.post(f"/admin/api/v1/points/redemptions/{placed['id']}/cancel", headers=ops, json={"note": "客户申请取消"})
    assert response.status_code == 200, response.get_json()
    data = response.get_json()["data"]
    assert data["status"] == "cancelled" and data["note"] == "客户申请取消" and data["decided_by"] is not None
    assert data["invite_codes"][0]["state"] == "revoked"
    now = balances(client, alice)
    assert (now["available"], now["debt"]) == (7_000, 0)
    with app.app_context():
        sess = db.session()
        assert sess.get(RedemptionItem, item).stock == 4
        assert ledger.balance(sess, ledger.account(sess, None, K.redemption)) == 0
        original = ledger.find(sess, f"redeem:{alice['user']['id']}:{placed_key(sess, placed['id'])}")
        reversal = ledger.find(sess, f"redeem-cancel:{placed['id']}")
        assert reversal.kind == TxKind.redeem_cancel and reversal.reverses_id == original.id
        assert reversal.detail["debt_repaid"] == 3_000
        assert check_ledger(sess).ok
    assert not wx_login("bob", scene=code)["binding"]["bound"]  # a cancelled code binds nobody

    again = client.post(f"/admin/api/v1/points/redemptions/{placed['id']}/cancel", headers=ops, json={})
    assert again.status_code == 409 and again.get_json()["code"] == 40945
    assert balances(client, alice)["available"] == 7_000


def placed_key(sess, redemption_id: int) -> str:
    return sess.get(Redemption, redemption_id).idempotency_key


def test_state_machine_placed_to_fulfilled_or_cancelled_only(app, client, wx_login, staff_login):
    alice = wx_login("alice")
    credit(app, alice, 30_000)
    item = make_item(app, stock=10)
    ops = staff_login("operations")
    first = redeem(client, alice, item).get_json()["data"]["id"]
    fulfilled = client.post(f"/admin/api/v1/points/redemptions/{first}/fulfil", headers=ops, json={"note": "已发送电子票"})
    assert fulfilled.status_code == 200 and fulfilled.get_json()["data"]["status"] == "fulfilled"
    for action in ("fulfil", "cancel"):
        response = client.post(f"/admin/api/v1/points/redemptions/{first}/{action}", headers=ops, json={})
        assert response.status_code == 409 and response.get_json()["code"] == 40945
    assert balances(client, alice)["available"] == 20_000  # fulfilled: no refund

    with app.app_context():
        sess = db.session()
        row = sess.get(Redemption, first)
        for target in RedemptionStatus:
            if target not in services.TRANSITIONS[RedemptionStatus.fulfilled]:
                with pytest.raises(services.IllegalRedemptionTransitionError):
                    services._transition(sess, row, target, staff_id=1, note="")
        assert row.status == RedemptionStatus.fulfilled
    finance = staff_login("finance")
    second = redeem(client, alice, item).get_json()["data"]["id"]
    assert client.post(f"/admin/api/v1/points/redemptions/{second}/cancel", headers=finance, json={}).status_code == 403
    assert client.post("/admin/api/v1/points/redemptions/999999/fulfil", headers=ops, json={}).get_json()["code"] == 40441


def test_mark_invite_code_used_ignores_other_scenes(app, client, wx_login):
    alice = wx_login("alice")
    scene = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={}).get_json()["data"]["scene"]
    with app.app_context():
        assert services.mark_invite_code_used(db.session(), scene, alice["user"]["id"]) is False


def test_points_text_is_exact():
    assert [services.points_text(v) for v in (0, 5, 1250, -5, -200_000, 123_456_789)] == ["0.00", "0.05", "12.50", "-0.05", "-2000.00", "1234567.89"]
