"""The members' sales leaderboard: own attributed sales only, masked names, one's own place, switchable off."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from server import db
from server.accounts.models import Member, MemberStatus
from server.orders import services as orders
from server.orders.models import Order
from server.settings.services import set_setting
from tests.points import make_member, make_sku, pay, place


def _sell(s, seller: Member, amount_fen: int, *, buyers: int = 1) -> list[Order]:
    """``buyers`` invitees of ``seller`` each pay one order of ``amount_fen``."""
    sku = make_sku(s, price_fen=amount_fen)
    return [pay(s, place(s, make_member(s, f"buyer-of-{seller.nickname}-{i}", inviter=seller), sku)) for i in range(buyers)]


def _board(client, member, period="month"):
    response = client.get(f"/api/v1/leaderboard?period={period}", headers=member["headers"])
    return response.status_code, response.get_json()


def test_members_are_ranked_by_their_own_sales_never_by_headcount(client, wx_login, sess):
    me = wx_login("alice")
    with sess() as s:
        alice = s.get(Member, me["user"]["id"])
        alice.nickname = "爱丽丝"
        many = make_member(s, "王大锤")  # many buyers, small orders
        big = make_member(s, "李四")  # one buyer, one large order
        tie = make_member(s, "赵六")
        _sell(s, many, 1_000, buyers=5)
        _sell(s, big, 80_000)
        _sell(s, tie, 80_000)
        _sell(s, alice, 3_000)
        db.commit()
        big_id, tie_id = big.id, tie.id
    status, body = _board(client, me)
    assert status == 200
    items = body["data"]["items"]
    assert [(i["rank"], i["sales_fen"]) for i in items[:4]] == [(1, 80_000), (1, 80_000), (3, 5_000), (4, 3_000)]
    assert items[0]["nickname"] == "李*" and items[1]["nickname"] == "赵*"  # ties by member id: big before tie
    assert big_id < tie_id
    assert items[2]["nickname"] == "王*锤"
    assert body["data"]["me"] == {"rank": 4, "sales_fen": 3_000}
    assert "id" not in items[0] and "member_id" not in items[0]


def test_refunds_lower_sales_and_last_month_is_not_this_month(client, wx_login, sess):
    me = wx_login("alice")
    with sess() as s:
        seller, old = make_member(s, "钱七"), make_member(s, "孙八")
        [order] = _sell(s, seller, 10_000)
        [earlier] = _sell(s, old, 50_000)
        refund = orders.request_refund(s, order, 4_000, "部分退货", actor="staff:1", approved=True)
        orders.finish_refund(s, order, refund, succeeded=True, actor="wechat", refund_id="503000000001")
        s.execute(update(Order).where(Order.id == earlier.id).values(paid_at=db.utcnow() - timedelta(days=40)))
        db.commit()
    _, month = _board(client, me)
    assert [(i["nickname"], i["sales_fen"]) for i in month["data"]["items"]] == [("钱*", 6_000)]
    assert month["data"]["me"] == {"rank": None, "sales_fen": 0}
    assert month["data"]["since"].endswith("+08:00")
    _, all_time = _board(client, me, "all")
    assert [i["sales_fen"] for i in all_time["data"]["items"]] == [50_000, 6_000]
    assert all_time["data"]["since"] is None


def test_disabled_members_are_left_out(client, wx_login, sess):
    me = wx_login("alice")
    with sess() as s:
        gone = make_member(s, "周九")
        _sell(s, gone, 9_000)
        gone.status = MemberStatus.disabled
        db.commit()
    _, body = _board(client, me)
    assert body["data"]["items"] == []


def test_the_merchant_can_switch_it_off(client, wx_login, sess):
    me = wx_login("alice")
    with sess() as s:
        set_setting(s, "leaderboard", False, by="test")
        db.commit()
    status, body = _board(client, me)
    assert (status, body["code"]) == (404, 40435)


def test_a_bad_period_and_no_token_are_refused(client, wx_login):
    me = wx_login("alice")
    assert _board(client, me, "year")[0] == 422
    assert client.get("/api/v1/leaderboard").status_code == 401
