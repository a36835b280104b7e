"""The console's risk pages: the queue and a review's evidence for every reader, decisions for owner and
operations through the form, refusals explained, and the signals report."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from server import db
from server.points.models import HoldState, RewardHold
from server.risk.models import ReviewState, RiskEvent, RiskReview
from tests.risk.generate import Builder, Merchant, inject_case


@pytest.fixture
def review(app: Flask) -> dict[str, Any]:
    """A payment held because the buyer shares the sharer's phone."""
    with app.app_context():
        sess = db.session()
        merchant = Merchant()
        inject_case(Builder(sess, seed=11), merchant, "shared_phone")
        found = sess.scalar(select(RiskReview).where(RiskReview.member_id == merchant.cases[0].member_id, RiskReview.event == RiskEvent.payment))
        db.commit()
        return {"id": found.id, "order_id": found.ref_id}


@pytest.mark.parametrize("role", ["owner", "operations", "finance"])
def test_every_reader_sees_the_queue_and_the_evidence(console: Any, review: dict[str, Any], role: str) -> None:
    browser = console(role)
    queue = browser.get("/console/risk")
    assert queue.status_code == 200 and f'id="review-{review["id"]}"' in queue.text and "买家与邀请人或上级共用" in queue.text
    assert ">风控</a>" in queue.text  # in the navigation
    page = browser.get(f"/console/risk/{review['id']}")
    assert page.status_code == 200
    assert "关联账号" in page.text and "188****" in page.text and "当事人轨迹" in page.text and "扣留中" in page.text
    assert ('action="/console/risk/%d/decisions"' % review["id"] in page.text) is (role != "finance")


def test_finance_cannot_post_a_decision(console: Any, review: dict[str, Any]) -> None:
    finance = console("finance")
    finance.get(f"/console/risk/{review['id']}")
    response = finance.post(f"/console/risk/{review['id']}/decisions", {"decision": "release"})
    assert response.status_code == 403


def test_operations_reverse_through_the_form_then_a_second_decision_is_explained(app: Flask, console: Any, review: dict[str, Any]) -> None:
    ops = console("operations")
    ops.get(f"/console/risk/{review['id']}")
    done = ops.post(f"/console/risk/{review['id']}/decisions", {"decision": "reverse", "note": "自买自返"})
    assert done.status_code == 303
    page = ops.get(f"/console/risk/{review['id']}").text
    assert "已冲回" in page and "自买自返" in page and "该审核已处理完毕" in page
    again = ops.post(f"/console/risk/{review['id']}/decisions", {"decision": "release"})
    assert again.status_code == 409 and "不能这样处理" in again.text
    with app.app_context():
        sess = db.session()
        assert sess.get(RiskReview, review["id"]).state == ReviewState.reversed
        assert sess.scalar(select(RewardHold.state).where(RewardHold.ref_id == review["order_id"])) == HoldState.reversed


def test_bad_forms_and_ids_are_answered_without_changing_anything(app: Flask, console: Any, review: dict[str, Any]) -> None:
    ops = console("operations")
    ops.get(f"/console/risk/{review['id']}")
    assert ops.post(f"/console/risk/{review['id']}/decisions", {"decision": "approve"}).status_code == 422
    assert ops.post(f"/console/risk/{review['id']}/decisions", {"decision": "release"}, csrf=False).status_code in (400, 403)
    assert ops.get("/console/risk/999999").status_code == 404
    assert ops.post("/console/risk/999999/decisions", {"decision": "release"}).status_code == 404
    assert ops.post(f"/console/risk/{review['id']}/decisions", {"decision": "freeze"}).status_code == 409
    listed = ops.get("/console/risk?state=nope&member=abc")
    assert listed.status_code == 200 and "未知的状态" in listed.text and "会员 ID 应为数字" in listed.text
    with app.app_context():
        assert db.session().get(RiskReview, review["id"]).state == ReviewState.open


def test_the_report_page_counts_signals_by_outcome(console: Any, review: dict[str, Any]) -> None:
    owner = console("owner")
    page = owner.get("/console/risk/report")
    assert page.status_code == 200 and 'id="risk-totals"' in page.text and "买家与邀请人或上级共用" in page.text
    bad = owner.get("/console/risk/report?from=2026-99-01&to=x")
    assert bad.status_code == 200 and "日期格式应为" in bad.text
    empty = owner.get("/console/risk/report?from=2025-01-01&to=2025-01-02")
    assert "这段时间没有触发任何信号" in empty.text


def test_the_dashboard_counts_open_reviews_for_those_who_decide(console: Any, review: dict[str, Any]) -> None:
    ops = console("operations").get("/console/").text
    assert "风控审核待处理" in ops and "/console/risk?state=open" in ops
    assert "风控审核待处理" not in console("finance").get("/console/").text
