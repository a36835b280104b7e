"""The admin API of the risk queue: who may read and decide, the evidence shown masked, decisions
once, the report over a date range, and bad input refused with a clear error."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from server import db
from server.accounts.models import AuditEntry, Member
from server.clock import local
from server.risk.models import RiskEvent, RiskReview
from tests.risk.generate import Builder, Merchant, inject_case

BASE = "/admin/api/v1/risk"


@pytest.fixture
def held(app):
    """A payment held for review (the buyer shares the sharer's phone), committed; no app context left
    open, so each request has its own unit of work."""
    with app.app_context():
        sess = db.session()
        merchant = Merchant()
        inject_case(Builder(sess, seed=5), merchant, "shared_phone")
        case = merchant.cases[0]
        review = sess.scalar(select(RiskReview).where(RiskReview.member_id == case.member_id, RiskReview.event == RiskEvent.payment))
        found = {"review_id": review.id, "sharer_id": case.member_id, "phone_masked": sess.get(Member, case.member_id).phone_masked}
        db.commit()
    return found


def test_the_queue_lists_reviews_for_readers_and_shows_masked_evidence(client, staff_login, held):
    finance = staff_login("finance")
    # The binding already shared the phone (a review of the sharer); the payment is held.
    everything = client.get(f"{BASE}/reviews?state=open", headers=finance).get_json()
    assert [i["event"] for i in everything["data"]["items"]] == ["payment", "bind"]
    listed = client.get(f"{BASE}/reviews?event=payment&member_id={held['sharer_id']}", headers=finance).get_json()
    assert listed["code"] == 0 and listed["data"]["total"] == 1
    item = listed["data"]["items"][0]
    assert item["held"] is True and item["score"] >= 60 and item["reasons"][0]["signal"] == "shared_identity"
    assert item["reasons"][0]["label"]

    detail = client.get(f"{BASE}/reviews/{held['review_id']}", headers=finance).get_json()["data"]
    assert detail["hold"] == "held"
    accounts = {a["member_id"]: a for a in detail["linked_accounts"]}
    sharer = accounts[held["sharer_id"]]
    assert sharer["phone"] == held["phone_masked"] and "*" in sharer["phone"] and "phone" in sharer["shared"]
    assert "sharer" in sharer["roles"]
    buyer = accounts[detail["focus_member_id"]]
    assert "focus" in buyer["roles"] and "*" in buyer["unionid"]
    assert detail["subject_detail"]["out_trade_no"] and "*" in detail["subject_detail"]["address"]
    assert [t["kind"] for t in detail["timeline"]][:1] == ["bind"] and "paid" in [t["kind"] for t in detail["timeline"]]
    # No identifier in the clear anywhere in the answer.
    assert "1880000" not in str(detail)


def test_finance_reads_but_cannot_decide(client, staff_login, held):
    finance = staff_login("finance")
    response = client.post(f"{BASE}/reviews/{held['review_id']}/decisions", headers=finance, json={"decision": "release"})
    assert response.status_code == 403


def test_a_decision_is_made_once_and_audited(app, client, staff_login, held):
    ops = staff_login("operations")
    url = f"{BASE}/reviews/{held['review_id']}/decisions"
    first = client.post(url, headers=ops, json={"decision": "reverse", "note": "自买自返"})
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["data"]["state"] == "reversed" and first.get_json()["data"]["hold"] == "reversed"
    again = client.post(url, headers=ops, json={"decision": "release"})
    assert again.status_code == 409 and again.get_json()["code"] == 40995 and again.get_json()["data"]["state"] == "reversed"
    with app.app_context():
        audit = db.session().scalar(select(AuditEntry).where(AuditEntry.action == "risk_review.reverse"))
        assert audit is not None and audit.detail["note"] == "自买自返"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"decision": "approve"}, 422, 42200),
        ({}, 422, 42200),
        ({"decision": "release", "note": "x" * 256}, 422, 42200),
        ({"decision": "release", "extra": 1}, 422, 42200),
        ("release", 400, None),
    ],
)
def test_bad_decisions_are_refused_and_change_nothing(app, client, staff_login, held, body, status, code):
    ops = staff_login("operations")
    url = f"{BASE}/reviews/{held['review_id']}/decisions"
    response = client.post(url, headers=ops, json=body)
    assert response.status_code == status, response.get_json()
    if code is not None:
        assert response.get_json()["code"] == code
    with app.app_context():
        assert db.session().get(RiskReview, held["review_id"]).state.value == "open"


def test_unknown_reviews_and_bad_filters(client, staff_login, held):
    ops = staff_login("operations")
    assert client.get(f"{BASE}/reviews/999999", headers=ops).get_json()["code"] == 40495
    assert client.post(f"{BASE}/reviews/999999/decisions", headers=ops, json={"decision": "release"}).get_json()["code"] == 40495
    assert client.get(f"{BASE}/reviews/99999999999999999999999", headers=ops).status_code == 404
    for query in ("state=nope", "event=x", "member_id=0", "page=0", "page_size=1000", "member_id=abc"):
        response = client.get(f"{BASE}/reviews?{query}", headers=ops)
        assert response.status_code == 422, query


def test_the_report_counts_signals_by_type_and_outcome(app, client, staff_login, held):
    ops = staff_login("operations")
    client.post(f"{BASE}/reviews/{held['review_id']}/decisions", headers=ops, json={"decision": "false_positive"})
    today = local(db.utcnow()).date()
    report = client.get(f"{BASE}/report?from={today - timedelta(days=6)}&to={today}", headers=staff_login("finance")).get_json()["data"]
    # The payment's review marked a false positive; the binding's is still open.
    assert sorted(report["totals"], key=lambda r: r["outcome"]) == [
        {"signal": "shared_identity", "outcome": "false_positive", "count": 1},
        {"signal": "shared_identity", "outcome": "open", "count": 1},
    ]
    assert {"day": today.isoformat(), "signal": "shared_identity", "outcome": "false_positive", "count": 1} in report["days"]
    earlier = client.get(f"{BASE}/report?from=2025-01-01&to=2025-01-31", headers=ops).get_json()["data"]
    assert earlier["totals"] == [] and earlier["days"] == []


@pytest.mark.parametrize("query", ["from=2026-13-01", "from=2026-02-01&to=2026-01-01", "from=2024-01-01&to=2026-01-01", "to=yesterday"])
def test_bad_report_ranges_are_refused(client, staff_login, query):
    response = client.get(f"{BASE}/report?{query}", headers=staff_login("owner"))
    assert response.status_code == 422 and response.get_json()["code"] == 42200


def test_members_cannot_see_the_queue(client, wx_login):
    alice = wx_login("alice")
    assert client.get(f"{BASE}/reviews", headers=alice["headers"]).status_code == 401
