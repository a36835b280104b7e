"""Reward rules and the compliance guards no setting can lift (DESIGN §5)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from server import db
from server.points import rules
from server.points.errors import ComplianceError
from server.points.models import LedgerTransaction, OrderReward
from server.settings.services import set_setting


def rewards(app, base_fen, *, repeat=False, has_upline=True, **settings):
    with app.app_context():
        sess = db.session()
        for key, value in settings.items():
            set_setting(sess, key, value, by="test")
        return {r.level: r.amount for r in rules.order_rewards(sess, base_fen=base_fen, repeat=repeat, product_ids=[], grade_id=None, has_upline=has_upline)}


def test_seed_defaults_first_and_repeat(app):
    assert rewards(app, 10_000) == {1: 50, 2: 5}  # ¥100: 0.5% and 10% of it
    assert rewards(app, 10_000, repeat=True) == {1: 100, 2: 10}  # 1% on phase 2+
    assert rewards(app, 10_000, has_upline=False) == {1: 50}
    assert rewards(app, 199) == {1: 0}  # floors: 0.995 hundredths is 0


def test_direct_only_switch_turns_level_two_off(app):
    assert rewards(app, 100_000, reward_direct_only=True) == {1: 500}


def test_total_is_capped_and_level_two_never_exceeds_level_one(app):
    capped = rewards(app, 100_000, reward_level1_first_bp=2000, reward_level2_share_bp=10_000, reward_order_cap_bp=300)
    assert sum(capped.values()) <= 100_000 * 300 // 10_000
    assert capped.get(2, 0) <= capped[1] == 3_000


@pytest.mark.parametrize(
    ("key", "value"),
    [("reward_level2_share_bp", 10_001), ("reward_order_cap_bp", rules.HARD_CAP_BP + 1), ("reward_level1_first_bp", 5_000)],
)
def test_no_setting_can_lift_a_guard(client, staff_login, key, value):
    owner = staff_login("owner")
    response = client.put(f"/admin/api/v1/settings/{key}", headers=owner, json={"value": value})
    assert response.status_code == 422


def test_there_is_no_setting_for_a_third_level(client, staff_login):
    owner = staff_login("owner")
    keys = {item["key"] for item in client.get("/admin/api/v1/settings", headers=owner).get_json()["data"]["items"]}
    assert not any("level3" in key or "third" in key or "depth" in key for key in keys)


def test_the_guard_check_refuses_bad_payouts():
    with pytest.raises(ComplianceError):
        rules.check([rules.Reward(1, 10, ""), rules.Reward(2, 11, "")], 10_000)
    with pytest.raises(ComplianceError):
        rules.check([rules.Reward(1, 10, ""), rules.Reward(3, 1, "")], 10_000)
    with pytest.raises(ComplianceError):
        rules.check([rules.Reward(1, 10_000, "")], 10_000)


def test_the_database_refuses_a_third_level(app, wx_login):
    bob = wx_login("bob")
    with app.app_context():
        sess = db.session()
        sess.add(OrderReward(order_id=1, member_id=bob["user"]["id"], level=3, amount=1))
        with pytest.raises((IntegrityError, OperationalError)):  # MariaDB reports a failed CHECK as 4025
            sess.flush()
        sess.rollback()


def test_registration_and_binding_earn_nothing(app, client, wx_login):
    alice = wx_login("alice")
    scene = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={}).get_json()["data"]["scene"]
    for name in ("bob", "carol", "dave"):
        wx_login(name, scene=scene)
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(LedgerTransaction)) == 0
