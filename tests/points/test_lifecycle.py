"""The whole points story of an order: pay, finish, settle, refund, debt (issue's must-shows 1 and 2)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from server import db
from server.accounts.models import Member
from server.orders import services as orders
from server.orders.models import Order, OrderStatus, Product, Sku
from server.points import ledger, queries as point_queries, services as points
from server.points.checks import check_ledger
from server.points.models import AccountKind, TxKind
from server.points.settlement import manual_period_key, settle
from server.settings.services import set_setting


@pytest.fixture
def chain(client, wx_login):
    """zoe invited alice, alice invited bob."""
    scene = lambda m: client.post("/api/v1/referral/scenes", headers=m["headers"], json={}).get_json()["data"]["scene"]
    zoe = wx_login("zoe")
    alice = wx_login("alice", scene=scene(zoe))
    bob = wx_login("bob", scene=scene(alice))
    return {name: m["user"]["id"] for name, m in (("zoe", zoe), ("alice", alice), ("bob", bob))}


def _bob_pays_100(sess, bob_id: int) -> Order:
    product = Product(title="茶具")
    sess.add(product)
    sess.flush()
    sku = Sku(product_id=product.id, price_fen=10_000, stock=5)
    sess.add(sku)
    sess.flush()
    order = orders.place_order(sess, sess.get(Member, bob_id), [orders.LineRequest(sku.id, 1)])
    orders.apply_payment(sess, out_trade_no=order.out_trade_no, transaction_id="4200000000000001", amount_fen=10_000, api="v3")
    points.process_order(sess, order)
    return order


def _finish(sess, order: Order) -> None:
    for target in (OrderStatus.shipped, OrderStatus.received, OrderStatus.completed):
        orders.move(sess, order, target, actor="test")
    points.process_order(sess, order)


def balances(sess, member_id):
    return point_queries.member_balances(sess, member_id)


def test_paid_order_credits_two_levels_then_matures_and_settles(app, chain):
    with app.app_context():
        sess = db.session()
        set_setting(sess, "require_finance_confirmation", True, by="test")
        order = _bob_pays_100(sess, chain["bob"])
        assert balances(sess, chain["alice"]).pending == 50  # 0.5% of ¥100
        assert balances(sess, chain["zoe"]).pending == 5  # 10% of alice's
        assert balances(sess, chain["bob"]).pending == 0
        points.process_order(sess, order)  # a repeated notification changes nothing
        assert balances(sess, chain["alice"]).pending == 50

        _finish(sess, order)
        assert balances(sess, chain["alice"]).matured == 0  # finance has not confirmed yet
        order.finance_confirmed_at = order.completed_at
        points.process_order(sess, order)
        assert (balances(sess, chain["alice"]).pending, balances(sess, chain["alice"]).matured) == (0, 50)

        settle(sess, period=manual_period_key(), mode="weekly", actor="test")
        assert balances(sess, chain["alice"]).available == 50
        assert balances(sess, chain["zoe"]).available == 5
        assert check_ledger(sess).ok, check_ledger(sess).violations
        db.commit()

    result = app.test_cli_runner().invoke(args=["ledger-check"])
    assert result.exit_code == 0, result.output


def test_refund_after_settlement_reverses_and_spent_points_become_debt(app, chain):
    with app.app_context():
        sess = db.session()
        order = _bob_pays_100(sess, chain["bob"])
        _finish(sess, order)
        settle(sess, period=manual_period_key(), mode="weekly", actor="test")
        alice, zoe = chain["alice"], chain["zoe"]

        # alice spends 30 of her 50 hundredths
        ledger.post(
            sess,
            key="test:spend",
            kind=TxKind.redeem,
            legs=[(ledger.account(sess, alice, AccountKind.available), -30), (ledger.account(sess, None, AccountKind.redemption), 30)],
            reason="test spend",
            member_id=alice,
        )
        refund = orders.request_refund(sess, order, 10_000, "不想要了", actor="staff:1", approved=True)
        orders.finish_refund(sess, order, refund, succeeded=True, actor="wechat", refund_id="5030000001")
        assert order.status == OrderStatus.refunded
        points.process_order(sess, order)
        points.process_order(sess, order)  # twice: reversed once
        assert balances(sess, alice).available == 0 and balances(sess, alice).debt == 30
        assert balances(sess, zoe).available == 0 and balances(sess, zoe).debt == 0

        # alice's next credit pays the debt first
        ledger.credit_available(sess, alice, 100, source=AccountKind.issuance, key="test:grant", kind=TxKind.adjust, reason="grant")
        assert balances(sess, alice).debt == 0 and balances(sess, alice).available == 70
        assert check_ledger(sess).ok, check_ledger(sess).violations


def test_partial_refund_reverses_in_proportion_from_pending(app, chain):
    with app.app_context():
        sess = db.session()
        order = _bob_pays_100(sess, chain["bob"])
        refund = orders.request_refund(sess, order, 4_000, "少发一件", actor="staff:1", approved=True)
        orders.finish_refund(sess, order, refund, succeeded=True, actor="wechat", refund_id="5030000002")
        points.process_order(sess, order)
        assert order.status == OrderStatus.paid  # back where the refund found it
        assert balances(sess, chain["alice"]).pending == 30  # 0.5% of the ¥60 kept
        assert balances(sess, chain["zoe"]).pending == 3
        assert check_ledger(sess).ok


def test_a_valid_lead_earns_its_sharer_ten_points(app, client, wx_login, staff_login):
    alice = wx_login("alice")
    scene = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={}).get_json()["data"]["scene"]
    bob = wx_login("bob", scene=scene)
    client.post("/api/v1/referral/leads", headers=bob["headers"], json={"contact_name": "鲍勃", "phone": "13912345678", "note": "想买茶具"})
    ops = staff_login("operations")
    lead = client.get("/admin/api/v1/leads", headers=ops, query_string={"source": "contact"}).get_json()["data"]["items"][0]
    client.post(f"/admin/api/v1/leads/{lead['id']}/review", headers=ops, json={"status": "valid"})
    with app.app_context():
        assert balances(db.session(), alice["user"]["id"]).available == 1_000
        assert db.session().scalars(select(Order)).first() is None
