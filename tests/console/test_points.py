"""The points pages: the ledger search, owner adjustments (once per form), settlement run now with
its progress, reward overrides and stage rules, and the compliance report, for every role."""
from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry, Member
from server.db import utcnow
from server.orders.models import Order, Product
from server.points import settlement
from server.points.models import AccountKind, JobClaim, LedgerTransaction, OrderReward, RewardOverride, SettlementRun, StageBonusRule, Statement, TxKind
from server.points.queries import member_balances
from server.settings.services import set_setting
from tests.console.conftest import Console
from tests.console.test_pages import demo  # noqa: F401  (fixture)
from tests.points import post_to

KEY_RE = re.compile(r'name="idempotency_key" value="([^"]+)"')


def _login(app: Flask, username: str) -> Console:
    browser = Console(app.test_client())
    assert browser.login(username, "demo-pass-2026").status_code == 303
    return browser


def _ids(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {m.openid.removeprefix("demo-"): m.id for m in db.session().scalars(select(Member))}


def _available(app: Flask, member_id: int) -> int:
    with app.app_context():
        return member_balances(db.session(), member_id).available


def _count(app: Flask, model: Any, *where: Any) -> int:
    with app.app_context():
        return int(db.session().scalar(select(func.count()).select_from(model).where(*where)) or 0)


PAGES = {
    "/console/points": "points",
    "/console/points/settlements": "points.settlement",
    "/console/points/rules": "points.rules",
    "/console/points/compliance": "points.compliance",
}


@pytest.mark.parametrize("username,allowed_pages", [
    ("owner", set(PAGES)),
    ("ops", {"/console/points"}),
    ("finance", {"/console/points", "/console/points/settlements"}),
])
def test_each_role_reaches_its_points_pages(app: Flask, demo: dict[str, Any], username: str, allowed_pages: set[str]) -> None:  # noqa: F811
    browser = _login(app, username)
    for path in PAGES:
        response = browser.get(path)
        assert response.status_code == (200 if path in allowed_pages else 403), (username, path)
    page = browser.get("/console/").text
    nav = page[page.index('<nav class="nav"'):page.index("</nav>")]
    assert ">积分</a>" in nav and ">兑换</a>" in nav
    ledger = browser.get("/console/points").text
    assert ("人工调整（店主）" in ledger) == (username == "owner")
    assert ("合规报告" in ledger) == (username == "owner")


def test_ledger_search_by_member_kind_and_dates(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ids, ops = _ids(app), _login(app, "ops")
    everything = ops.get("/console/points").text
    assert "demo-grant-bob" in everything and "人工调整" in everything and "兑换" in everything
    bob = ops.get("/console/points", query_string={"member": ids["bob"]}).text
    assert 'data-balance="available"' in bob and "demo-redeem-bob" in bob
    assert "demo-grant-bob" not in ops.get("/console/points", query_string={"member": ids["carol"]}).text
    adjust_only = ops.get("/console/points", query_string={"kind": "adjust"}).text
    assert "demo-grant-bob" in adjust_only and "redeem:" not in adjust_only
    assert "demo-grant-bob" not in ops.get("/console/points", query_string={"to": "2000-01-01"}).text
    assert "demo-grant-bob" in ops.get("/console/points", query_string={"from": "2000-01-01"}).text
    for bad, message in (
        ({"member": "abc"}, "会员 ID 应为数字"),
        ({"member": "9" * 40}, "会员 ID 应为数字"),
        ({"kind": "bonus"}, "未知的交易类型"),
        ({"from": "2026-13-45"}, "日期格式应为"),
        ({"page": "99999999999"}, ""),
    ):
        response = ops.get("/console/points", query_string=bad)
        assert response.status_code == 200 and message in response.text, bad


def test_owner_adjusts_points_once_per_form(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ids, owner = _ids(app), _login(app, "owner")
    before = _available(app, ids["carol"])
    page = owner.get("/console/points", query_string={"member": ids["carol"]}).text
    key = KEY_RE.search(page).group(1)  # type: ignore[union-attr]
    form = {"member_id": str(ids["carol"]), "points": "12.5", "reason": "客服补偿", "idempotency_key": key}
    first = owner.post("/console/points/adjustments", form)
    assert first.status_code == 303 and first.location.endswith(f"/console/points?member={ids['carol']}")
    second = owner.post("/console/points/adjustments", form)
    assert second.status_code == 303
    assert _available(app, ids["carol"]) == before + 1_250
    assert "没有重复记账" in owner.get(second.location).text
    # The same form used for another amount is refused; a new form is a new adjustment.
    other = owner.post("/console/points/adjustments", form | {"points": "13"})
    assert other.status_code == 409 and "已提交过另一笔调整" in other.text
    page = owner.get("/console/points").text
    new_key = KEY_RE.search(page).group(1)  # type: ignore[union-attr]
    assert new_key != key
    assert owner.post("/console/points/adjustments", form | {"idempotency_key": new_key, "points": "-2.5"}).status_code == 303
    assert _available(app, ids["carol"]) == before + 1_000
    with app.app_context():
        grants = db.session().scalars(select(AuditEntry).where(AuditEntry.action == "points.grant", AuditEntry.target == f"member:{ids['carol']}")).all()
        assert sorted(e.detail["amount"] for e in grants) == [-250, 1_250]


#: Bad adjustment forms: what changes from a good one, the answer, and what the page says.
BAD_ADJUSTMENTS = (
    ({"points": "abc"}, 422, "请输入积分数"),
    ({"points": "0"}, 422, "请输入积分数"),
    ({"points": "1.234"}, 422, "请输入积分数"),
    ({"points": "99999999999"}, 422, "请输入积分数"),
    ({"member_id": "x"}, 422, "请输入会员 ID"),
    ({"member_id": "9" * 40}, 422, "请输入会员 ID"),
    ({"member_id": "99999999"}, 422, "找不到该会员"),
    ({"reason": ""}, 422, "请填写原因"),
    ({"reason": "长" * 300}, 422, "请填写原因"),
    ({"idempotency_key": ""}, 422, "提交编号"),
    ({"idempotency_key": "有 空格"}, 422, "提交编号"),
    ({"points": "-100000"}, 409, "可用积分只有"),
)


def test_bad_adjustments_change_nothing(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ids, owner = _ids(app), _login(app, "owner")
    before = _count(app, LedgerTransaction)
    for change, status, message in BAD_ADJUSTMENTS:
        form = {"member_id": str(ids["dave"]), "points": "5", "reason": "测试", "idempotency_key": "k-" + "1" * 20} | change
        response = owner.post("/console/points/adjustments", form)
        assert response.status_code == status and message in response.text, change
        # The form comes back with what was typed.
        assert 'id="adjust-form"' in response.text
    assert _count(app, LedgerTransaction) == before


def test_operations_and_finance_cannot_adjust(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ids = _ids(app)
    for username in ("ops", "finance"):
        response = _login(app, username).post(
            "/console/points/adjustments", {"member_id": str(ids["dave"]), "points": "5", "reason": "x", "idempotency_key": f"k-{username}"}
        )
        assert response.status_code == 403 and "无权访问" in response.text
    assert _count(app, LedgerTransaction, LedgerTransaction.kind == TxKind.adjust) == 1  # the demo's grant


def test_owner_runs_a_settlement_and_sees_it_finish(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ids, owner = _ids(app), _login(app, "owner")
    with app.app_context():
        sess = db.session()
        post_to(sess, sess.get(Member, ids["alice"]), AccountKind.matured, 4_321, tx_kind=TxKind.stage_bonus)
        db.commit()
    with app.app_context():
        before = member_balances(db.session(), ids["alice"])
    assert before.matured == 4_321  # the demo's own settlement run took what had matured before
    response = owner.post("/console/points/settlements")
    assert response.status_code == 303
    claim_id = int(response.location.rsplit("=", 1)[1])
    # Tests run background tasks inline: the run is over when the answer arrives.
    page = owner.get(response.location).text
    assert 'data-state="done"' in page and "结算已完成" in page
    fragment = owner.get(f"/console/points/settlements/jobs/{claim_id}").text
    assert 'data-state="done"' in fragment and "hx-trigger" not in fragment
    assert _available(app, ids["alice"]) == before.available + before.matured
    with app.app_context():
        claim = db.session().get(JobClaim, claim_id)
        assert claim is not None
        run = db.session().scalars(select(SettlementRun).where(SettlementRun.period == claim.period)).one()
        run_id = run.id
        assert run.period.startswith("manual:") and run.actor.startswith("staff:") and run.mode == "weekly"
        statement_members = set(db.session().scalars(select(Statement.member_id).where(Statement.run_id == run_id)))
        assert statement_members == {ids["alice"]}
    run_page = owner.get(f"/console/points/settlements/{run_id}").text
    assert "爱丽丝" in run_page and "阶段奖励" in run_page and "43.21" in run_page
    assert owner.get("/console/points/settlements/999999").status_code == 404
    assert owner.get("/console/points/settlements/jobs/999999").status_code == 404


def test_a_second_start_while_one_runs_is_refused(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    owner = _login(app, "owner")
    with app.app_context():
        # A run in progress elsewhere: its claim holds the slot.
        db.session().add(JobClaim(job=settlement.MANUAL_JOB, period=settlement.RUNNING, claimed_by="staff:1"))
        db.commit()
    page = owner.get("/console/points/settlements").text
    assert 'data-state="running"' in page and 'hx-trigger="every 1s"' in page and "disabled" in page
    refused = owner.post("/console/points/settlements")
    assert refused.status_code == 409 and "已有一次结算正在进行" in refused.text
    assert _count(app, SettlementRun) == 1 and _count(app, JobClaim, JobClaim.job == settlement.MANUAL_JOB) == 1
    # A claim whose process died long ago is replaced by the next start.
    with app.app_context():
        row = db.session().scalars(select(JobClaim).where(JobClaim.job == settlement.MANUAL_JOB)).one()
        row.claimed_at = utcnow() - settlement.STALE_RUN * 2
        db.commit()
    assert owner.post("/console/points/settlements").status_code == 303
    with app.app_context():
        periods = sorted(db.session().scalars(select(JobClaim.period).where(JobClaim.job == settlement.MANUAL_JOB)))
        assert periods[0].startswith("abandoned:") and periods[1].startswith("manual:")


def test_only_the_owner_settles_and_finance_reads_the_runs(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    ops = _login(app, "ops")
    assert ops.post("/console/points/settlements").status_code == 403
    assert ops.get("/console/points/settlements/jobs/1").status_code == 403
    finance = _login(app, "finance")
    assert finance.post("/console/points/settlements").status_code == 403
    page = finance.get("/console/points/settlements")
    assert page.status_code == 200 and "结算批次" in page.text and "立即结算" not in page.text
    assert _count(app, JobClaim, JobClaim.job == settlement.MANUAL_JOB) == 0


def test_owner_sets_and_removes_overrides(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    owner = _login(app, "owner")
    with app.app_context():
        product_id = db.session().scalars(select(Product.id)).first()
    assert owner.post("/console/points/overrides", {"scope": "product", "ref_id": str(product_id), "level1_first_bp": "80", "level1_repeat_bp": ""}).status_code == 303
    assert owner.post("/console/points/overrides", {"scope": "product", "ref_id": str(product_id), "level1_first_bp": "90", "level1_repeat_bp": "120"}).status_code == 303
    with app.app_context():
        row = db.session().scalars(select(RewardOverride)).one()
        assert (row.level1_first_bp, row.level1_repeat_bp) == (90, 120)
        override_id = row.id
    page = owner.get("/console/points/rules").text
    assert "明前龙井礼盒" in page and "90 基点" in page and "reward_level1_first_bp" in page
    for form, message in (
        ({"scope": "shop", "ref_id": "1"}, "请选择商品或分销等级"),
        ({"scope": "product", "ref_id": "abc"}, "请输入商品或等级的 ID"),
        ({"scope": "grade", "ref_id": "999999", "level1_first_bp": "10"}, "找不到该商品或等级"),
        ({"scope": "product", "ref_id": str(product_id), "level1_first_bp": "5000"}, "订单积分上限"),
        ({"scope": "product", "ref_id": str(product_id), "level1_first_bp": "-1"}, "0 到 2000"),
        ({"scope": "product", "ref_id": str(product_id)}, "至少设置一个比例"),
    ):
        response = owner.post("/console/points/overrides", form)
        assert response.status_code == 422 and message in response.text, form
    assert owner.post(f"/console/points/overrides/{override_id}/delete").status_code == 303
    assert owner.post(f"/console/points/overrides/{override_id}/delete").status_code == 404
    assert _count(app, RewardOverride) == 0
    assert _login(app, "ops").post("/console/points/overrides", {"scope": "product", "ref_id": str(product_id), "level1_first_bp": "80"}).status_code == 403


def test_owner_adds_changes_and_switches_stage_rules(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    owner = _login(app, "owner")
    created = owner.post("/console/points/stage-rules", {"name": "月销冠", "min_monthly_sales_fen": "5000", "consecutive_months": "3", "bonus": "200.5"})
    assert created.status_code == 303
    with app.app_context():
        rule = db.session().scalars(select(StageBonusRule).where(StageBonusRule.name == "月销冠")).one()
        assert (rule.min_monthly_sales_fen, rule.consecutive_months, rule.bonus, rule.active) == (500_000, 3, 20_050, True)
        rule_id = rule.id
    assert owner.post(f"/console/points/stage-rules/{rule_id}", {"name": "月销冠", "min_monthly_sales_fen": "6000.50", "consecutive_months": "2", "bonus": "100"}).status_code == 303
    assert owner.post(f"/console/points/stage-rules/{rule_id}", {"active": "0"}).status_code == 303
    with app.app_context():
        rule = db.session().get(StageBonusRule, rule_id)
        assert rule is not None and (rule.min_monthly_sales_fen, rule.consecutive_months, rule.bonus, rule.active) == (600_050, 2, 10_000, False)
    for form, field in (
        ({"name": "", "min_monthly_sales_fen": "1", "bonus": "1"}, "name"),
        ({"name": "x", "min_monthly_sales_fen": "0", "bonus": "1"}, "min_monthly_sales_fen"),
        ({"name": "x", "min_monthly_sales_fen": "1.001", "bonus": "1"}, "min_monthly_sales_fen"),
        ({"name": "x", "min_monthly_sales_fen": "1", "bonus": "999999999"}, "bonus"),
        ({"name": "x", "min_monthly_sales_fen": "1", "bonus": "1", "consecutive_months": "13"}, "consecutive_months"),
    ):
        response = owner.post("/console/points/stage-rules", form)
        assert response.status_code == 422 and f'data-error="stage-new-{field}"' in response.text, form
    assert owner.post(f"/console/points/stage-rules/{rule_id}", {"consecutive_months": "0"}).status_code == 422
    assert owner.post("/console/points/stage-rules/999999", {"active": "1"}).status_code == 404
    assert _count(app, StageBonusRule) == 2  # the demo's and this one
    assert _login(app, "finance").post("/console/points/stage-rules", {"name": "x", "min_monthly_sales_fen": "1", "bonus": "1"}).status_code == 403


def test_compliance_report_page(app: Flask, demo: dict[str, Any]) -> None:  # noqa: F811
    owner = _login(app, "owner")
    page = owner.get("/console/points/compliance").text
    assert 'data-report="ok"' in page and page.count('data-ok="true"') == 7
    assert "最多两级奖励" in page and "reward_order_cap_bp" in page
    ids = _ids(app)
    with app.app_context():
        set_setting(db.session(), "reward_direct_only", True, by="test")
        # A level-2 reward above level 1, written around the services: the report names it.
        order_id = db.session().scalars(select(Order.id).where(Order.member_id == ids["bob"])).first()
        db.session().add(OrderReward(order_id=order_id, member_id=ids["grace"], level=2, amount=999_999, rule="hand-written"))
        db.commit()
    page = owner.get("/console/points/compliance").text
    assert 'data-report="violations"' in page and 'id="guard-4" data-ok="false"' in page and "level2_above_level1" in page
