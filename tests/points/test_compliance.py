"""The compliance report (guard 7): each guard of DESIGN §5, and data written around the services to break it."""
from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from server import db
from server.db import utcnow
from server.points import compliance, incentives, ledger, rules
from server.points.models import AccountKind, OrderReward, ShareOpen, TxKind
from server.points.ledger import credit_available
from server.points.services import process_order
from server.referral.models import Channel
from server.referral.services import scene_for_share
from server.settings.services import set_setting
from tests.points import make_member, make_sku, pay, place
from tests.points.test_incentives import signed_in, wire

K = AccountKind


@pytest.fixture
def app(app_factory):
    return wire(app_factory())


def report(app):
    with app.app_context():
        return compliance.compliance_report(db.session())


def checks(app):
    return sorted({(v.guard, v.check) for v in report(app).violations})


def rewarded_order(sess, price_fen=100_000):
    """A paid order by bob, invited by alice whose inviter is zoe, with both levels credited."""
    zoe = make_member(sess, "zoe")
    alice = make_member(sess, "alice", inviter=zoe)
    bob = make_member(sess, "bob", inviter=alice, upline=zoe)
    order = pay(sess, place(sess, bob, make_sku(sess, price_fen=price_fen)))
    process_order(sess, order)
    return order


@contextlib.contextmanager
def check_constraints_off(sess):
    """Let raw SQL past the database's CHECK constraints, as a careless script or migration could."""
    conn = sess.connection()
    sqlite = conn.dialect.name == "sqlite"
    conn.exec_driver_sql("PRAGMA ignore_check_constraints = 1" if sqlite else "SET SESSION check_constraint_checks = 0")
    try:
        yield conn
    finally:
        conn.exec_driver_sql("PRAGMA ignore_check_constraints = 0" if sqlite else "SET SESSION check_constraint_checks = 1")


# -- the rules in force, and a clean database -----------------------------------------------------


def test_a_clean_database_passes_and_the_rules_are_listed(app):
    result = app.test_cli_runner().invoke(args=["compliance-report"])
    assert result.exit_code == 0, result.output
    out = result.output
    for line in (
        "reward_level2_share_bp = 1000 (default 1000)",
        "reward_direct_only = false (default false)",
        "share_reward_enabled = false (default false)",
        "share_reward_points = 100 (default 100)",
        "starter_points = 0 (default 0)",
        f"an order pays at most {rules.HARD_CAP_BP} bp",
        "share reward: off",
        "compliance-report passed",
    ):
        assert line in out, out
    assert "VIOLATION" not in out


def test_the_owner_reads_the_report_as_json(client, staff_login):
    response = client.get("/admin/api/v1/compliance", headers=staff_login("owner"))
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert data["ok"] is True and data["violations"] == []
    assert [g["guard"] for g in data["guards"]] == [1, 2, 3, 4, 5, 6, 7]
    assert data["rules"]["hard_caps"]["max_levels"] == 2
    assert data["rules"]["share_reward"]["enabled"] is False
    keys = {s["key"] for s in data["rules"]["settings"]}
    assert {"reward_level1_first_bp", "reward_order_cap_bp", "share_reward_enabled", "starter_points", "valid_lead_points"} <= keys


def test_only_the_owner_reads_it(client, staff_login):
    assert client.get("/admin/api/v1/compliance", headers=staff_login("operations")).status_code == 403
    assert client.get("/admin/api/v1/compliance").status_code == 401


def test_the_report_lists_changed_switches_and_stage_rules(app):
    with app.app_context():
        sess = db.session()
        set_setting(sess, "reward_direct_only", True, by="test")
        set_setting(sess, "share_reward_enabled", True, by="test")
        incentives.create_stage_rule(sess, name="月销千元", min_monthly_sales_fen=100_000, bonus=5_000)
        db.commit()
    result = app.test_cli_runner().invoke(args=["compliance-report"])
    assert result.exit_code == 0, result.output
    assert "direct only: on (level 2 off)" in result.output
    assert "share reward: on, 100 hundredths" in result.output
    assert "stage bonus #" in result.output and "月销千元" in result.output
    rules_now = report(app).rules
    assert rules_now["level2_share_bp"] == 0 and rules_now["stage_bonus_rules"][0]["consecutive_months"] == 1


# -- guard 1: two levels ---------------------------------------------------------------------------


def test_a_level_three_reward_written_around_the_constraint_fails_the_report(app, client, staff_login):
    with app.app_context():
        sess = db.session()
        order = rewarded_order(sess)
        with check_constraints_off(sess):
            sess.execute(
                text(
                    "INSERT INTO order_rewards (order_id, member_id, level, amount, reversed_amount, state, rule, created_at) "
                    "VALUES (:order_id, :member_id, 3, 1, 0, 'pending', 'level 3', :now)"
                ),
                {"order_id": order.id, "member_id": order.upline_id, "now": utcnow().replace(tzinfo=None)},
            )
        db.commit()
        order_id = order.id
    assert (1, "reward_level") in checks(app)

    result = app.test_cli_runner().invoke(args=["compliance-report"])
    assert result.exit_code == 1
    assert "VIOLATION (guard 1, reward_level): order reward" in result.output and f"on order {order_id} is at level 3" in result.output
    data = client.get("/admin/api/v1/compliance", headers=staff_login("owner")).get_json()["data"]
    assert data["ok"] is False and data["guards"][0] == {"guard": 1, "title": compliance.GUARDS[1], "ok": False, "violations": 1}


# -- guard 4: level 2 ≤ level 1, the hard ceiling ------------------------------------------------------


@pytest.mark.parametrize(("level1_bp", "cap_bp"), [(1_000, rules.HARD_CAP_BP), (rules.HARD_CAP_BP, rules.HARD_CAP_BP), (1_000, 300), (50, 300)])
def test_level_two_at_its_maximum_share_never_exceeds_level_one_on_real_orders(app, level1_bp, cap_bp):
    with app.app_context():
        sess = db.session()
        for key, value in (("reward_level2_share_bp", rules.MAX_LEVEL2_SHARE_BP), ("reward_level1_first_bp", level1_bp), ("reward_order_cap_bp", cap_bp)):
            set_setting(sess, key, value, by="test")
        order = rewarded_order(sess, price_fen=123_457)
        db.commit()
        amounts = {r.level: r.amount for r in sess.scalars(select(OrderReward).where(OrderReward.order_id == order.id))}
        assert amounts[1] > 0
        assert amounts.get(2, 0) <= amounts[1]
        assert sum(amounts.values()) <= order.total_fee * cap_bp // 10_000 <= order.total_fee * rules.HARD_CAP_BP // 10_000
    assert report(app).ok


def test_a_level_two_above_level_one_fails_the_report(app):
    with app.app_context():
        sess = db.session()
        order = rewarded_order(sess)
        sess.execute(update(OrderReward).where(OrderReward.order_id == order.id, OrderReward.level == 2).values(amount=501))
        db.commit()
    assert checks(app) == [(4, "level2_above_level1")]


def test_an_order_paying_beyond_the_hard_ceiling_fails_the_report(app):
    with app.app_context():
        sess = db.session()
        order = rewarded_order(sess)
        sess.execute(update(OrderReward).where(OrderReward.order_id == order.id, OrderReward.level == 1).values(amount=order.total_fee))
        db.commit()
    assert (4, "over_hard_cap") in checks(app)


# -- guard 5: direct only ----------------------------------------------------------------------------


def test_direct_only_pays_no_level_two_and_a_level_two_written_later_fails_the_report(app):
    with app.app_context():
        sess = db.session()
        set_setting(sess, "reward_direct_only", True, by="test")
        order = rewarded_order(sess)
        assert [r.level for r in sess.scalars(select(OrderReward).where(OrderReward.order_id == order.id))] == [1]
        db.commit()
        assert compliance.compliance_report(sess).ok
        sess.add(OrderReward(order_id=order.id, member_id=order.upline_id, level=2, amount=1, rule="by hand", created_at=utcnow() + timedelta(hours=1)))
        db.commit()
    assert checks(app) == [(5, "level2_while_direct_only")]


# -- guard 2: no reward for headcount ----------------------------------------------------------------


def test_an_order_reward_without_an_order_fails_the_report(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        for n in range(3):
            make_member(sess, f"invitee{n}", inviter=alice)
        ledger.post(
            sess,
            key=f"order:none:{alice.id}",
            kind=TxKind.order_reward,
            legs=[(ledger.account(sess, None, K.issuance), -300), (ledger.account(sess, alice.id, K.pending), 300)],
            reason="three invitees",
            member_id=alice.id,
            level=1,
        )
        credit_available(sess, alice.id, 100, source=K.issuance, key=f"bind:{alice.id}:1", kind=TxKind.adjust, reason="an invitee bound")
        db.commit()
    assert checks(app) == [(2, "headcount_posting"), (2, "reward_without_order")]


def test_a_grade_threshold_that_counts_people_fails_the_report(app, monkeypatch):
    assert report(app).ok
    real = compliance._columns

    def with_headcount(sess, table):
        return real(sess, table) | ({"min_direct_invitees"} if table == "grades" else set())

    monkeypatch.setattr(compliance, "_columns", with_headcount)
    violations = report(app).violations
    assert [(v.guard, v.check, v.ref) for v in violations] == [(2, "headcount_threshold", {"table": "grades", "column": "min_direct_invitees"})]


def test_the_grade_and_stage_tables_hold_sales_thresholds_only(app):
    with app.app_context():
        sess = db.session()
        assert "min_sales_fen" in compliance._columns(sess, "grades")
        assert "min_monthly_sales_fen" in compliance._columns(sess, "stage_bonus_rules")
        for table in compliance.SALES_ONLY_TABLES:
            assert not {c for c in compliance._columns(sess, table) if compliance.HEADCOUNT_WORDS.search(c)}


# -- guard 3: no entry fee -----------------------------------------------------------------------------


def test_an_approved_distributor_who_paid_nothing_passes(app, client, wx_login, staff_login):
    alice = wx_login("alice")
    applied = client.post("/api/v1/distributors/apply", headers=alice["headers"], json={"real_name": "Alice", "phone": "13800138000"})
    assert applied.status_code == 201
    decided = client.post(f"/admin/api/v1/distributors/{applied.get_json()['data']['id']}/decisions", headers=staff_login("operations"), json={"action": "approve"})
    assert decided.get_json()["data"]["status"] == "approved"
    assert report(app).ok


def test_a_fee_column_or_a_payment_link_on_distributors_fails_the_report(app, monkeypatch):
    real_columns, real_keys = compliance._columns, compliance._foreign_keys
    monkeypatch.setattr(compliance, "_columns", lambda sess, table: real_columns(sess, table) | ({"entry_fee_fen"} if table == "distributors" else set()))
    monkeypatch.setattr(
        compliance,
        "_foreign_keys",
        lambda sess, table: real_keys(sess, table)
        | ({("fee_order_id", "orders")} if table == "distributors" else set())
        | ({("distributor_id", "distributors")} if table == "payment_notices" else set()),
    )
    assert checks(app) == [(3, "distributor_fee_column"), (3, "distributor_payment_link"), (3, "payment_distributor_link")]


# -- guard 6: share rewards ----------------------------------------------------------------------------


def test_a_share_reward_credited_while_off_fails_the_report(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        day = incentives.china_day(utcnow())
        credit_available(sess, alice.id, 100, source=K.issuance, key=f"share:{alice.id}:{day}", kind=TxKind.share_reward, reason="by hand")
        db.commit()
    assert checks(app) == [(6, "share_reward_while_off"), (6, "share_reward_without_open")]


def test_a_self_open_fails_the_report(app):
    with app.app_context():
        sess = db.session()
        set_setting(sess, "share_reward_enabled", True, by="test")
        alice = signed_in(sess, "alice")
        day = incentives.china_day(utcnow())
        sess.add(ShareOpen(sharer_id=alice.id, opener_id=alice.id, scene_code="SelfOpen", day=day))
        credit_available(sess, alice.id, 100, source=K.issuance, key=f"share:{alice.id}:{day}", kind=TxKind.share_reward, reason="by hand")
        db.commit()
    assert checks(app) == [(6, "self_open"), (6, "share_reward_self_open")]


def test_share_rewards_paid_while_on_pass_after_the_switch_goes_off(app, client, wx_login, staff_login):
    owner = staff_login("owner")
    alice, bob = wx_login("alice"), wx_login("bob")
    assert client.put("/admin/api/v1/settings/share_reward_enabled", headers=owner, json={"value": True}).status_code == 200
    scene = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={}).get_json()["data"]["scene"]
    assert client.post("/api/v1/referral/share-opens", headers=bob["headers"], json={"scene": scene}).get_json()["data"]["credited"] is True
    assert client.put("/admin/api/v1/settings/share_reward_enabled", headers=owner, json={"value": False}).status_code == 200
    assert report(app).ok

    with app.app_context():
        sess = db.session()
        # A day later, with the switch off, a posting that did not come from an open.
        tomorrow = incentives.china_day(utcnow() + timedelta(days=1))
        alice_id = alice["user"]["id"]
        credit_available(sess, alice_id, 100, source=K.issuance, key=f"share:{alice_id}:{tomorrow}", kind=TxKind.share_reward, reason="by hand")
        ledger.find(sess, f"share:{alice_id}:{tomorrow}").created_at = utcnow() + timedelta(days=1)
        db.commit()
    assert checks(app) == [(6, "share_reward_while_off"), (6, "share_reward_without_open")]


def test_the_setting_history_reads_the_audit_log(app, client, staff_login):
    owner = staff_login("owner")
    with app.app_context():
        before = utcnow() - timedelta(minutes=1)
    client.put("/admin/api/v1/settings/share_reward_enabled", headers=owner, json={"value": True})
    with app.app_context():
        values_at = compliance.setting_history(db.session(), "share_reward_enabled")
        assert values_at(before) == {False}
        assert values_at(utcnow() + timedelta(minutes=1)) == {True}


def test_the_real_share_path_passes(app):
    with app.app_context():
        sess = db.session()
        set_setting(sess, "share_reward_enabled", True, by="test")
        alice, bob = signed_in(sess, "alice"), signed_in(sess, "bob")
        scene = scene_for_share(sess, alice.id, Channel.miniprogram_code).code
        assert incentives.record_share_open(sess, bob, scene) is True
        assert incentives.record_share_open(sess, alice, scene) is False
        db.commit()
    assert report(app).ok
