"""Share rewards (guard 6), stage bonuses on own sales only (guard 2) and starter points (guard 3)."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask
from sqlalchemy import func, select

from server import db, scheduler
from server.accounts.models import Member, MemberStatus, StaffRole
from server.accounts.services import create_staff
from server.db import utcnow
from server.distribution import services as distribution
from server.distribution.models import DistributorStatus
from server.errors import ValidationError
from server.orders import services as orders
from server.orders.models import Order
from server.points import incentives, ledger, share_routes
from server.points.compliance import register_cli
from server.points.checks import check_ledger
from server.points.models import AccountKind, LedgerTransaction, ShareOpen, TxKind
from server.points.queries import member_balances
from server.points.services import process_order
from server.referral.models import Channel, CommissionMode, Partner
from server.referral.services import create_scene, revoke_scene, scene_for_share
from server.settings.services import set_setting
from tests.points import make_member, make_sku, pay, place

CHINA = timezone(timedelta(hours=8))


def wire(app: Flask) -> Flask:
    """Register the share-open and compliance routes and the report command, unless the app already has them."""
    if share_routes.bp.name not in app.blueprints:
        app.register_blueprint(share_routes.bp)
        app.register_blueprint(share_routes.admin_bp)
    if "compliance-report" not in app.cli.commands:
        register_cli(app)
    return app


@pytest.fixture
def app(app_factory):
    return wire(app_factory())


def signed_in(sess, name, **chain):
    """A member who has signed in through WeChat, as the mini-program's members all have."""
    member = make_member(sess, name, **chain)
    member.last_login_at = utcnow()
    sess.flush()
    return member


def owner(sess):
    return create_staff(sess, username=f"owner-{uuid.uuid4().hex[:8]}", password="correct-horse", role=StaffRole.owner)


def appointed(sess, member, staff):
    return distribution.appoint(sess, member.id, real_name=member.nickname.title(), phone="13800138000", staff=staff)


def share_count(sess):
    return sess.scalar(select(func.count()).select_from(LedgerTransaction).where(LedgerTransaction.kind == TxKind.share_reward))


def open_share(client, member, scene):
    response = client.post("/api/v1/referral/share-opens", headers=member["headers"], json={"scene": scene})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]["credited"]


# -- the share reward (guard 6) ------------------------------------------------------------------


def test_share_rewards_are_off_by_default(app, client, wx_login):
    alice, bob = wx_login("alice"), wx_login("bob")
    scene = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={}).get_json()["data"]["scene"]
    assert open_share(client, bob, scene) is False
    with app.app_context():
        sess = db.session()
        assert share_count(sess) == 0
        assert sess.scalar(select(func.count()).select_from(ShareOpen)) == 0


def test_another_member_opening_earns_the_sharer_one_point_once_a_day(app, client, wx_login, staff_login):
    alice, bob, carol = wx_login("alice"), wx_login("bob"), wx_login("carol")
    owner_headers = staff_login("owner")
    assert client.put("/admin/api/v1/settings/share_reward_enabled", headers=owner_headers, json={"value": True}).status_code == 200
    scene = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={}).get_json()["data"]["scene"]

    assert open_share(client, bob, scene) is True
    assert open_share(client, bob, scene) is False  # the same day again
    assert open_share(client, carol, scene) is False  # another opener, same day: still once
    with app.app_context():
        sess = db.session()
        alice_id = alice["user"]["id"]
        assert member_balances(sess, alice_id).available == 100  # 1 point
        assert share_count(sess) == 1
        day = incentives.china_day(utcnow())
        tx = ledger.find(sess, f"share:{alice_id}:{day}")
        assert tx.kind == TxKind.share_reward and tx.member_id == alice_id
        assert tx.detail["opener_id"] == bob["user"]["id"] and tx.detail["share_reward_enabled"] is True
        # Bob opening earns Bob nothing: only the sharer is credited.
        assert member_balances(sess, bob["user"]["id"]).available == 0

        # The next China-time day is a new day.
        tomorrow = utcnow() + timedelta(days=1)
        assert incentives.record_share_open(sess, sess.get(Member, carol["user"]["id"]), scene, now=tomorrow) is True
        db.commit()
        assert member_balances(sess, alice_id).available == 200


def test_the_day_is_the_china_calendar_day(app):
    with app.app_context():
        sess = db.session()
        set_setting(sess, "share_reward_enabled", True, by="test")
        alice, bob = signed_in(sess, "alice"), signed_in(sess, "bob")
        scene = scene_for_share(sess, alice.id, Channel.miniprogram_code).code
        late = datetime(2026, 11, 23, 23, 59, 59, tzinfo=CHINA)
        assert incentives.record_share_open(sess, bob, scene, now=late) is True
        assert incentives.record_share_open(sess, bob, scene, now=late - timedelta(hours=23)) is False  # same China day
        assert incentives.record_share_open(sess, bob, scene, now=late + timedelta(seconds=1)) is True  # 00:00 on the 24th
        assert sorted(sess.scalars(select(ShareOpen.day))) == ["2026-11-23", "2026-11-24"]


def test_self_opens_anonymous_visits_and_dead_scenes_earn_nothing(app, client, wx_login):
    alice, bob = wx_login("alice"), wx_login("bob")
    scene = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={}).get_json()["data"]["scene"]
    with app.app_context():
        sess = db.session()
        set_setting(sess, "share_reward_enabled", True, by="test")
        db.commit()

    assert open_share(client, alice, scene) is False  # her own share
    assert client.get(f"/s/{scene}").status_code == 200  # an anonymous H5 visit, even repeated
    assert client.get(f"/s/{scene}").status_code == 200
    assert open_share(client, bob, "NoSuchScene1234") is False
    unauthenticated = client.post("/api/v1/referral/share-opens", json={"scene": scene})
    assert unauthenticated.status_code == 401

    with app.app_context():
        sess = db.session()
        partner = Partner(name="知乎大V", commission_mode=CommissionMode.per_lead)
        sess.add(partner)
        sess.flush()
        partner_scene = create_scene(sess, channel=Channel.partner, partner_id=partner.id).code
        invite = create_scene(sess, channel=Channel.invite_code, sharer_id=alice["user"]["id"]).code
        revoked = create_scene(sess, channel=Channel.moments_poster, sharer_id=alice["user"]["id"], content_type="product", content_id="1").code
        revoke_scene(sess, revoked)
        db.commit()
    for code in (partner_scene, invite, revoked):
        assert open_share(client, bob, code) is False

    with app.app_context():
        sess = db.session()
        assert share_count(sess) == 0 and sess.scalar(select(func.count()).select_from(ShareOpen)) == 0
        # Once the real thing happens it still pays.
        assert incentives.record_share_open(sess, sess.get(Member, bob["user"]["id"]), scene) is True


def test_only_active_signed_in_openers_and_sharers_who_may_earn_count(app):
    with app.app_context():
        sess = db.session()
        set_setting(sess, "share_reward_enabled", True, by="test")
        alice, bob = signed_in(sess, "alice"), signed_in(sess, "bob")
        never_signed_in = make_member(sess, "ghost")
        disabled = signed_in(sess, "mallory")
        disabled.status = MemberStatus.disabled
        scene = scene_for_share(sess, alice.id, Channel.miniprogram_code).code

        assert incentives.record_share_open(sess, never_signed_in, scene) is False
        assert incentives.record_share_open(sess, disabled, scene) is False

        staff = owner(sess)
        distributor = appointed(sess, alice, staff)
        distribution.decide(sess, distributor.id, "freeze", staff=staff, reason="under review")
        assert incentives.record_share_open(sess, bob, scene) is False  # a frozen sharer earns nothing new
        distribution.decide(sess, distributor.id, "unfreeze", staff=staff)
        assert incentives.record_share_open(sess, bob, scene) is True
        assert share_count(sess) == 1


def test_disabled_again_it_pays_nothing(app):
    with app.app_context():
        sess = db.session()
        set_setting(sess, "share_reward_enabled", True, by="test")
        set_setting(sess, "share_reward_enabled", False, by="test")
        alice, bob = signed_in(sess, "alice"), signed_in(sess, "bob")
        scene = scene_for_share(sess, alice.id, Channel.miniprogram_code).code
        assert incentives.record_share_open(sess, bob, scene) is False
        assert share_count(sess) == 0


@pytest.mark.parametrize(("key", "value"), [("share_reward_points", 1_001), ("share_reward_points", 0), ("starter_points", 100_001), ("starter_points", -1)])
def test_incentive_settings_are_bounded(client, staff_login, key, value):
    response = client.put(f"/admin/api/v1/settings/{key}", headers=staff_login("owner"), json={"value": value})
    assert response.status_code == 422


# -- stage bonuses (guard 2) ---------------------------------------------------------------------


def sale(sess, buyer, price_fen, paid_at):
    """An order of ``price_fen`` paid at ``paid_at`` (a China-time wall clock)."""
    order = pay(sess, place(sess, buyer, make_sku(sess, price_fen=price_fen)))
    order.paid_at = paid_at
    sess.flush()
    return order


def refund(sess, order, amount_fen):
    row = orders.request_refund(sess, order, amount_fen, "test", actor="staff:1", approved=True)
    orders.finish_refund(sess, order, row, succeeded=True, actor="wechat", refund_id=f"refund-{order.id}-{amount_fen}")


def stage_postings(sess):
    return sess.scalars(select(LedgerTransaction).where(LedgerTransaction.kind == TxKind.stage_bonus).order_by(LedgerTransaction.id)).all()


FEB = datetime(2026, 2, 14, 12, 0, tzinfo=CHINA)


def test_own_monthly_sales_earn_the_bonus_once(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        appointed(sess, alice, owner(sess))
        bob = make_member(sess, "bob", inviter=alice)
        rule = incentives.create_stage_rule(sess, name="月销千元", min_monthly_sales_fen=100_000, bonus=5_000)
        sale(sess, bob, 60_000, FEB)
        sale(sess, bob, 40_000, FEB + timedelta(days=3))

        awards = incentives.award_stage_bonuses(sess, "2026-02")
        db.commit()
        assert [(a.rule_id, a.member_id, a.amount, a.sales_fen) for a in awards] == [(rule.id, alice.id, 5_000, (100_000,))]
        assert member_balances(sess, alice.id).available == 5_000
        assert ledger.find(sess, f"stage:{rule.id}:{alice.id}:2026-02").kind == TxKind.stage_bonus

        assert incentives.award_stage_bonuses(sess, "2026-02") == []  # judged again: paid once
        assert incentives.award_stage_bonuses(sess, "2026-01") == []  # nothing sold in January
        assert len(stage_postings(sess)) == 1


def test_a_hundred_invitees_and_no_sales_earn_no_stage_bonus(app):
    with app.app_context():
        sess = db.session()
        staff = owner(sess)
        alice = make_member(sess, "alice")
        appointed(sess, alice, staff)
        for n in range(100):
            make_member(sess, f"invitee{n}", inviter=alice)
        # Even a rule asking for a single fen a month: people are not sales.
        incentives.create_stage_rule(sess, name="一分钱", min_monthly_sales_fen=1, bonus=100)
        for month in ("2026-01", "2026-02", "2026-03"):
            assert incentives.award_stage_bonuses(sess, month) == []
        assert stage_postings(sess) == []
        assert member_balances(sess, alice.id).available == 0


def test_only_sales_stamped_with_the_distributor_as_inviter_count(app):
    with app.app_context():
        sess = db.session()
        staff = owner(sess)
        zoe = make_member(sess, "zoe")
        alice = make_member(sess, "alice", inviter=zoe)
        appointed(sess, zoe, staff)
        appointed(sess, alice, staff)
        bob = make_member(sess, "bob", inviter=alice, upline=zoe)
        incentives.create_stage_rule(sess, name="月销千元", min_monthly_sales_fen=100_000, bonus=5_000)
        sale(sess, bob, 500_000, FEB)  # zoe is only bob's level 2
        awards = incentives.award_stage_bonuses(sess, "2026-02")
        assert [a.member_id for a in awards] == [alice.id]


def test_sales_are_net_of_refunds(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        appointed(sess, alice, owner(sess))
        bob = make_member(sess, "bob", inviter=alice)
        incentives.create_stage_rule(sess, name="八百", min_monthly_sales_fen=80_000, bonus=2_000)
        order = sale(sess, bob, 100_000, FEB)
        refund(sess, order, 40_000)
        # Returning from refunding to paid stamps paid_at again (orders' transition table); put it back in February.
        order.paid_at = FEB
        sess.flush()
        assert incentives.own_monthly_sales(sess, 2026, 2) == {alice.id: 60_000}
        assert incentives.award_stage_bonuses(sess, "2026-02") == []


def test_months_are_china_calendar_months(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        appointed(sess, alice, owner(sess))
        bob = make_member(sess, "bob", inviter=alice)
        # 16:30 UTC on 31 January is 00:30 on 1 February in China.
        sale(sess, bob, 70_000, datetime(2026, 1, 31, 16, 30, tzinfo=timezone.utc))
        sale(sess, bob, 30_000, datetime(2026, 1, 31, 15, 59, 59, tzinfo=timezone.utc))
        assert incentives.own_monthly_sales(sess, 2026, 1) == {alice.id: 30_000}
        assert incentives.own_monthly_sales(sess, 2026, 2) == {alice.id: 70_000}


def test_consecutive_months_need_every_month(app):
    with app.app_context():
        sess = db.session()
        staff = owner(sess)
        steady, patchy = make_member(sess, "steady"), make_member(sess, "patchy")
        appointed(sess, steady, staff)
        appointed(sess, patchy, staff)
        steady_buyer = make_member(sess, "buyer1", inviter=steady)
        patchy_buyer = make_member(sess, "buyer2", inviter=patchy)
        rule = incentives.create_stage_rule(sess, name="连续三月", min_monthly_sales_fen=50_000, consecutive_months=3, bonus=30_000)
        for month in (1, 2, 3):
            sale(sess, steady_buyer, 50_000, datetime(2026, month, 10, tzinfo=CHINA))
        for month in (1, 3):
            sale(sess, patchy_buyer, 900_000, datetime(2026, month, 10, tzinfo=CHINA))

        awards = incentives.award_stage_bonuses(sess, "2026-03")
        assert [(a.member_id, a.sales_fen) for a in awards] == [(steady.id, (50_000, 50_000, 50_000))]
        assert incentives.award_stage_bonuses(sess, "2026-02") == []  # only two months behind it
        assert ledger.find(sess, f"stage:{rule.id}:{patchy.id}:2026-03") is None


def test_only_approved_distributors_and_active_rules(app):
    with app.app_context():
        sess = db.session()
        staff = owner(sess)
        pending, frozen, plain = make_member(sess, "pending"), make_member(sess, "frozen"), make_member(sess, "plain")
        distribution.apply(sess, pending, real_name="Pending", phone="13800138000")
        frozen_record = appointed(sess, frozen, staff)
        distribution.decide(sess, frozen_record.id, "freeze", staff=staff, reason="review")
        for sharer in (pending, frozen, plain):
            sale(sess, make_member(sess, f"buyer-of-{sharer.nickname}", inviter=sharer), 200_000, FEB)
        incentives.create_stage_rule(sess, name="月销千元", min_monthly_sales_fen=100_000, bonus=5_000)
        assert incentives.award_stage_bonuses(sess, "2026-02") == []

        distribution.decide(sess, frozen_record.id, "unfreeze", staff=staff)
        off = incentives.create_stage_rule(sess, name="停用", min_monthly_sales_fen=1, bonus=1, active=False)
        awards = incentives.award_stage_bonuses(sess, "2026-02")
        assert [a.member_id for a in awards] == [frozen.id] and off.id not in {a.rule_id for a in awards}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"bonus": 0}, "bonus"),
        ({"min_monthly_sales_fen": 0}, "min_monthly_sales_fen"),
        ({"consecutive_months": 13}, "consecutive_months"),
        ({"name": " "}, "name"),
    ],
)
def test_stage_rules_are_validated(app, fields, field):
    with app.app_context():
        with pytest.raises(ValidationError) as raised:
            incentives.create_stage_rule(db.session(), **({"name": "x", "min_monthly_sales_fen": 1, "bonus": 1} | fields))
        assert [e["field"] for e in raised.value.data["errors"]] == [field]


def test_months_are_parsed_strictly():
    assert incentives.parse_month("2026-02") == (2026, 2)
    for bad in ("2026-13", "2026-2", "26-02", "2026-02-01", ""):
        with pytest.raises(ValueError):
            incentives.parse_month(bad)
    assert incentives.previous_month(datetime(2026, 1, 1, 0, 30, tzinfo=CHINA)) == "2025-12"
    assert incentives.previous_month(datetime(2026, 2, 28, 16, 30, tzinfo=timezone.utc)) == "2026-02"  # 1 March in China


def test_the_job_awards_last_month_once(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        appointed(sess, alice, owner(sess))
        sale(sess, make_member(sess, "bob", inviter=alice), 100_000, FEB)
        incentives.create_stage_rule(sess, name="月销千元", min_monthly_sales_fen=100_000, bonus=5_000)
        db.commit()
        alice_id = alice.id

    first_of_march = datetime(2026, 3, 1, 3, 0, tzinfo=CHINA)
    assert scheduler.stage_bonus_job(app, first_of_march) == {"month": "2026-02", "awards": 1, "total": 5_000}
    assert scheduler.stage_bonus_job(app, first_of_march + timedelta(days=1)) is None
    with app.app_context():
        assert member_balances(db.session(), alice_id).available == 5_000


# -- starter points (guard 3) --------------------------------------------------------------------


def test_starter_points_are_off_by_default(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        assert incentives.grant_starter(sess, appointed(sess, alice, owner(sess))) is False
        assert member_balances(sess, alice.id).available == 0


def test_a_newly_approved_distributor_gets_starter_points_once_without_buying_anything(app):
    with app.app_context():
        sess = db.session()
        set_setting(sess, "starter_points", 5_000, by="test")
        staff = owner(sess)
        alice = make_member(sess, "alice")
        record = distribution.apply(sess, alice, real_name="Alice", phone="13800138000")
        assert incentives.grant_starter(sess, record) is False  # not approved yet

        distribution.decide(sess, record.id, "approve", staff=staff)  # approval grants the starter points
        assert incentives.grant_starter(sess, record) is False  # and only once
        db.commit()
        assert member_balances(sess, alice.id).available == 5_000
        assert ledger.find(sess, f"starter:{alice.id}").kind == TxKind.starter
        assert sess.scalar(select(func.count()).select_from(Order).where(Order.member_id == alice.id)) == 0

        distribution.decide(sess, record.id, "freeze", staff=staff, reason="review")
        distribution.decide(sess, record.id, "unfreeze", staff=staff)
        assert record.status == DistributorStatus.approved
        assert incentives.grant_starter(sess, record) is False  # approved again, but a welcome is once
        assert member_balances(sess, alice.id).available == 5_000


# -- refunds take stage bonuses back ------------------------------------------------------------


def test_a_fully_refunded_qualifying_sale_takes_the_bonus_back(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        appointed(sess, alice, owner(sess))
        bob = make_member(sess, "bob", inviter=alice)
        rule = incentives.create_stage_rule(sess, name="月销千元", min_monthly_sales_fen=100_000, bonus=5_000)
        order = sale(sess, bob, 100_000, FEB)
        incentives.award_stage_bonuses(sess, "2026-02")
        assert member_balances(sess, alice.id).available == 5_000  # the order's own reward is still pending

        refund(sess, order, 100_000)
        process_order(sess, order)
        process_order(sess, order)  # the sweep again: taken back once
        balances = member_balances(sess, alice.id)
        assert (balances.available, balances.debt) == (0, 0)
        reversal = ledger.find(sess, f"stage:{rule.id}:{alice.id}:2026-02:reverse")
        assert reversal.kind == TxKind.reversal and reversal.reverses_id == ledger.find(sess, f"stage:{rule.id}:{alice.id}:2026-02").id
        assert reversal.detail["sales_fen"] == [0]
        assert incentives.award_stage_bonuses(sess, "2026-02") == []  # never paid again
        assert check_ledger(sess).ok, check_ledger(sess).violations


def test_a_spent_bonus_becomes_debt_and_a_refund_above_the_threshold_keeps_it(app):
    with app.app_context():
        sess = db.session()
        staff = owner(sess)
        alice, carol = make_member(sess, "alice"), make_member(sess, "carol")
        appointed(sess, alice, staff)
        appointed(sess, carol, staff)
        bob, dan = make_member(sess, "bob", inviter=alice), make_member(sess, "dan", inviter=carol)
        incentives.create_stage_rule(sess, name="月销千元", min_monthly_sales_fen=100_000, bonus=5_000)
        alices = sale(sess, bob, 100_000, FEB)
        carols = sale(sess, dan, 150_000, FEB)
        incentives.award_stage_bonuses(sess, "2026-02")
        ledger.post(
            sess,
            key="test:spend",
            kind=TxKind.redeem,
            legs=[(ledger.account(sess, alice.id, AccountKind.available), -3_000), (ledger.account(sess, None, AccountKind.redemption), 3_000)],
            reason="spent",
            member_id=alice.id,
        )
        refund(sess, alices, 1)  # one fen short of the threshold
        process_order(sess, alices)
        assert (member_balances(sess, alice.id).available, member_balances(sess, alice.id).debt) == (0, 3_000)

        refund(sess, carols, 50_000)  # still exactly at the threshold
        process_order(sess, carols)
        assert member_balances(sess, carol.id).available == 5_000
        assert check_ledger(sess).ok, check_ledger(sess).violations


def test_a_refund_in_an_earlier_month_undoes_a_consecutive_months_bonus(app):
    with app.app_context():
        sess = db.session()
        steady = make_member(sess, "steady")
        appointed(sess, steady, owner(sess))
        buyer = make_member(sess, "buyer", inviter=steady)
        rule = incentives.create_stage_rule(sess, name="连续两月", min_monthly_sales_fen=50_000, consecutive_months=2, bonus=10_000)
        january = sale(sess, buyer, 50_000, datetime(2026, 1, 10, tzinfo=CHINA))
        sale(sess, buyer, 50_000, datetime(2026, 2, 10, tzinfo=CHINA))
        assert [a.member_id for a in incentives.award_stage_bonuses(sess, "2026-02")] == [steady.id]
        refund(sess, january, 10_000)
        process_order(sess, january)
        assert ledger.find(sess, f"stage:{rule.id}:{steady.id}:2026-02:reverse").detail["sales_fen"] == [40_000, 50_000]
        assert member_balances(sess, steady.id).available == 0


@pytest.mark.slow
def test_concurrent_sweeps_take_a_stage_bonus_back_once(app):
    """The refund's task and the scheduler's sweeps may all bring the same order in line at once."""
    import threading

    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        appointed(sess, alice, owner(sess))
        bob = make_member(sess, "bob", inviter=alice)
        rule = incentives.create_stage_rule(sess, name="月销千元", min_monthly_sales_fen=100_000, bonus=5_000)
        order = sale(sess, bob, 100_000, FEB)
        incentives.award_stage_bonuses(sess, "2026-02")
        db.commit()
        # Half of it spent, so the reversal takes from available and leaves a debt.
        ledger.post(
            sess,
            key="test:spend",
            kind=TxKind.redeem,
            legs=[(ledger.account(sess, alice.id, AccountKind.available), -2_500), (ledger.account(sess, None, AccountKind.redemption), 2_500)],
            reason="spent",
            member_id=alice.id,
        )
        refund(sess, order, 100_000)
        db.commit()
        order_id, alice_id = order.id, alice.id
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            with app.app_context():
                s = db.session()
                barrier.wait()
                process_order(s, s.get(Order, order_id))
                db.commit()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=sweep) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with app.app_context():
        sess = db.session()
        reversals = sess.scalars(select(LedgerTransaction).where(LedgerTransaction.idempotency_key == f"stage:{rule.id}:{alice_id}:2026-02:reverse")).all()
        assert len(reversals) == 1
        balances = member_balances(sess, alice_id)
        assert (balances.available, balances.debt) == (0, 2_500)
        assert check_ledger(sess).ok, check_ledger(sess).violations
