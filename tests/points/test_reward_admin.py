"""The owner manages per-product and per-grade reward overrides and stage bonus rules, audited and within the guards."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from server import db
from server.accounts.models import AuditEntry
from server.distribution.models import Grade
from server.points import rules
from server.points.models import StageBonusRule
from tests.points import make_sku

OVERRIDES = "/admin/api/v1/points/reward-overrides"
STAGE_RULES = "/admin/api/v1/points/stage-rules"


@pytest.fixture
def refs(app):
    with app.app_context():
        sess = db.session()
        sku = make_sku(sess)
        grade = Grade(name="银牌", min_sales_fen=100_000)
        sess.add(grade)
        db.commit()
        return {"product": sku.product_id, "grade": grade.id}


def _actions(app, prefix):
    with app.app_context():
        return db.session().scalars(select(AuditEntry.action).where(AuditEntry.action.like(f"{prefix}.%")).order_by(AuditEntry.id)).all()


def test_the_owner_sets_changes_and_removes_an_override(app, client, staff_login, refs):
    owner = staff_login("owner")
    created = client.post(OVERRIDES, headers=owner, json={"scope": "product", "ref_id": refs["product"], "level1_first_bp": 200})
    assert created.status_code == 201, created.get_json()
    row = created.get_json()["data"]
    assert (row["level1_first_bp"], row["level1_repeat_bp"]) == (200, None)
    with app.app_context():
        rate, label = rules.level1_rate(db.session(), repeat=False, product_ids=[refs["product"]], grade_id=None)
        assert (rate, "override" in label) == (200, True)
        assert rules.level1_rate(db.session(), repeat=True, product_ids=[refs["product"]], grade_id=None)[0] == 100  # the default

    dup = client.post(OVERRIDES, headers=owner, json={"scope": "product", "ref_id": refs["product"], "level1_repeat_bp": 10})
    assert dup.status_code == 409 and dup.get_json()["code"] == 40948
    patched = client.patch(f"{OVERRIDES}/{row['id']}", headers=owner, json={"level1_repeat_bp": 150})
    assert (patched.get_json()["data"]["level1_first_bp"], patched.get_json()["data"]["level1_repeat_bp"]) == (200, 150)
    cleared = client.patch(f"{OVERRIDES}/{row['id']}", headers=owner, json={"level1_first_bp": None})
    assert cleared.get_json()["data"]["level1_first_bp"] is None
    grade = client.post(OVERRIDES, headers=owner, json={"scope": "grade", "ref_id": refs["grade"], "level1_first_bp": 0})
    assert grade.status_code == 201
    listed = client.get(OVERRIDES, headers=owner, query_string={"scope": "grade"}).get_json()["data"]["items"]
    assert [(o["scope"], o["ref_id"]) for o in listed] == [("grade", refs["grade"])]
    assert len(client.get(OVERRIDES, headers=owner).get_json()["data"]["items"]) == 2

    assert client.delete(f"{OVERRIDES}/{row['id']}", headers=owner).status_code == 200
    assert client.delete(f"{OVERRIDES}/{row['id']}", headers=owner).status_code == 404
    with app.app_context():
        assert rules.level1_rate(db.session(), repeat=True, product_ids=[refs["product"]], grade_id=None)[1] == "level 1, repeat"
    assert _actions(app, "reward_override") == ["reward_override.create", "reward_override.update", "reward_override.update", "reward_override.create", "reward_override.delete"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "product", "ref_id": 999_999, "level1_first_bp": 10}, "ref_id"),
        ({"scope": "grade", "ref_id": 999_999, "level1_first_bp": 10}, "ref_id"),
        ({"scope": "product", "ref_id": "12", "level1_first_bp": 10}, "ref_id"),  # not a string
        ({"scope": "team", "ref_id": 1, "level1_first_bp": 10}, "scope"),
        ({"scope": "product", "ref_id": "P"}, "level1_first_bp"),
        ({"scope": "product", "ref_id": "P", "level1_first_bp": 301}, "level1_first_bp"),  # above the order cap (300 bp)
        ({"scope": "product", "ref_id": "P", "level1_repeat_bp": 2_001}, "level1_repeat_bp"),  # above the hard ceiling
        ({"scope": "product", "ref_id": "P", "level1_first_bp": -1}, "level1_first_bp"),
        ({"scope": "product", "ref_id": "P", "level2_bp": 10}, "level2_bp"),  # there is no level-2 override (guard 4)
    ],
)
def test_overrides_are_checked_against_the_guards(app, client, staff_login, refs, body, field):
    owner = staff_login("owner")
    body = body | ({"ref_id": refs["product"]} if body.get("ref_id") == "P" else {})
    refused = client.post(OVERRIDES, headers=owner, json=body)
    assert refused.status_code == 422, refused.get_json()
    assert field in {e["field"] for e in refused.get_json()["data"]["errors"]}
    assert client.get(OVERRIDES, headers=owner).get_json()["data"]["items"] == []


def test_only_the_owner_manages_rules(client, staff_login, refs):
    for role in ("operations", "finance"):
        headers = staff_login(role)
        assert client.get(OVERRIDES, headers=headers).status_code == 403
        assert client.post(STAGE_RULES, headers=headers, json={"name": "x", "min_monthly_sales_fen": 1, "bonus": 1}).status_code == 403
    assert client.get(STAGE_RULES).status_code == 401


def test_the_owner_creates_changes_and_switches_off_stage_rules(app, client, staff_login):
    owner = staff_login("owner")
    created = client.post(STAGE_RULES, headers=owner, json={"name": " 月销千元 ", "min_monthly_sales_fen": 100_000, "bonus": 5_000})
    assert created.status_code == 201, created.get_json()
    rule = created.get_json()["data"]
    assert (rule["name"], rule["consecutive_months"], rule["active"]) == ("月销千元", 1, True)
    changed = client.patch(f"{STAGE_RULES}/{rule['id']}", headers=owner, json={"consecutive_months": 3, "bonus": 30_000})
    assert (changed.get_json()["data"]["consecutive_months"], changed.get_json()["data"]["bonus"]) == (3, 30_000)
    off = client.patch(f"{STAGE_RULES}/{rule['id']}", headers=owner, json={"active": False})
    assert off.get_json()["data"]["active"] is False
    assert [r["active"] for r in client.get(STAGE_RULES, headers=owner).get_json()["data"]["items"]] == [False]
    assert client.patch(f"{STAGE_RULES}/999999", headers=owner, json={"active": True}).status_code == 404
    for bad in ({"name": "", "min_monthly_sales_fen": 1, "bonus": 1}, {"name": "x", "min_monthly_sales_fen": 0, "bonus": 1},
                {"name": "x", "min_monthly_sales_fen": 1, "bonus": 10_000_001}, {"name": "x", "min_monthly_sales_fen": 1, "bonus": 1, "consecutive_months": 13},
                {"name": "x", "min_monthly_sales_fen": 1, "bonus": 1, "min_invitees": 3}):
        refused = client.post(STAGE_RULES, headers=owner, json=bad)
        assert refused.status_code == 422 and refused.get_json()["data"]["errors"], bad
    assert client.patch(f"{STAGE_RULES}/{rule['id']}", headers=owner, json={"consecutive_months": 0}).status_code == 422
    with app.app_context():
        assert db.session().scalar(select(StageBonusRule.consecutive_months)) == 3
    assert _actions(app, "stage_rule") == ["stage_rule.create", "stage_rule.update", "stage_rule.update"]


def test_the_cli_manages_overrides_and_stage_rules(app, refs):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["points", "override", "set", "--scope", "product", "--ref", str(refs["product"]), "--first-bp", "120"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["points", "override", "set", "--scope", "product", "--ref", str(refs["product"]), "--repeat-bp", "130"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(args=["points", "override", "list"])
    assert f"product {refs['product']}: first 120 bp, repeat 130 bp" in listed.output
    refused = runner.invoke(args=["points", "override", "set", "--scope", "product", "--ref", str(refs["product"]), "--first-bp", "5000"])
    assert refused.exit_code != 0 and "order cap" in refused.output
    removed = runner.invoke(args=["points", "override", "remove", "--scope", "product", "--ref", str(refs["product"])])
    assert removed.exit_code == 0 and runner.invoke(args=["points", "override", "list"]).output.strip() == "no reward overrides"

    added = runner.invoke(args=["points", "stage-rule", "add", "--name", "月销千元", "--min-monthly-sales-fen", "100000", "--bonus", "5000", "--months", "2"])
    assert added.exit_code == 0, added.output
    with app.app_context():
        rule_id = db.session().scalar(select(StageBonusRule.id))
    assert runner.invoke(args=["points", "stage-rule", "set", str(rule_id), "--inactive"]).exit_code == 0
    listed = runner.invoke(args=["points", "stage-rule", "list"]).output
    assert f"#{rule_id} 月销千元: own sales ≥ 100000 fen a month, 2 months running → 50.00 points (off)" in listed
    bad = runner.invoke(args=["points", "stage-rule", "add", "--name", "x", "--min-monthly-sales-fen", "0", "--bonus", "1"])
    assert bad.exit_code != 0 and "min_monthly_sales_fen" in bad.output
    assert _actions(app, "stage_rule") == ["stage_rule.create", "stage_rule.update"]
    assert _actions(app, "reward_override") == ["reward_override.create", "reward_override.update", "reward_override.delete"]
