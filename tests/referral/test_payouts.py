"""Marking a partner's commissions of a period paid: once, idempotent, audited, by finance or the owner."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from server import db
from server.accounts.models import AuditEntry
from server.db import utcnow
from server.referral.models import PartnerCommission
from server.referral.services import record_partner_deal


def _partner_with_deals(app, client, ops) -> int:
    partner_id = client.post(
        "/admin/api/v1/partners", headers=ops, json={"name": "外包公众号", "commission_mode": "per_deal", "deal_rate_bp": 1000}
    ).get_json()["data"]["id"]
    with app.app_context():
        sess = db.session()
        for number, days_ago in ((1, 40), (2, 10), (3, 0)):
            line = record_partner_deal(sess, partner_id, f"contract-{number}", 100_000 * number)
            assert line is not None
            sess.execute(update(PartnerCommission).where(PartnerCommission.id == line.id).values(created_at=utcnow() - timedelta(days=days_ago, minutes=10)))
        db.commit()
    return partner_id


def test_a_period_is_paid_once_and_the_statement_shows_it(app, client, staff_login):
    ops, finance, owner = staff_login("operations"), staff_login("finance"), staff_login("owner")
    partner_id = _partner_with_deals(app, client, ops)
    now = utcnow()
    period = {"from": (now - timedelta(days=30)).isoformat(), "to": (now - timedelta(minutes=30)).isoformat(), "reference": "转账 001"}
    url = f"/admin/api/v1/partners/{partner_id}/payouts"
    assert client.post(url, headers=ops, json=period).status_code == 403
    paid = client.post(url, headers=finance, json=period)
    assert paid.status_code == 201
    payout = paid.get_json()["data"]
    assert payout["lines"] == 1 and payout["total_fen"] == 20_000 and payout["reference"] == "转账 001"
    again = client.post(url, headers=owner, json=period)
    assert again.status_code == 200 and again.get_json()["data"]["id"] == payout["id"]
    # An overlapping period pays only what is still unpaid; a period with nothing left is refused.
    wider = {"from": (now - timedelta(days=60)).isoformat(), "to": period["to"]}
    assert client.post(url, headers=finance, json=wider).get_json()["data"]["total_fen"] == 10_000
    nothing = client.post(url, headers=finance, json={"from": (now - timedelta(days=90)).isoformat(), "to": period["to"]})
    assert nothing.status_code == 409 and nothing.get_json()["code"] == 40925
    statement = client.get(f"/admin/api/v1/partners/{partner_id}/statement", headers=finance).get_json()["data"]
    assert statement["total_fen"] == 60_000 and statement["paid_fen"] == 30_000
    assert sorted(line["payout_id"] is not None for line in statement["lines"]) == [False, True, True]
    listed = client.get(url, headers=ops).get_json()["data"]["items"]
    assert [p["total_fen"] for p in listed] == [10_000, 20_000]  # the same end: the later payout first
    with app.app_context():
        entries = db.session().scalars(select(AuditEntry).where(AuditEntry.action == "partner.payout")).all()
        assert len(entries) == 2 and entries[0].target == f"partner:{partner_id}" and entries[0].detail["total_fen"] == 20_000


def test_a_period_must_be_over_and_in_order(app, client, staff_login):
    ops, finance = staff_login("operations"), staff_login("finance")
    partner_id = _partner_with_deals(app, client, ops)
    now = utcnow()
    url = f"/admin/api/v1/partners/{partner_id}/payouts"
    future = client.post(url, headers=finance, json={"from": (now - timedelta(days=1)).isoformat(), "to": (now + timedelta(days=1)).isoformat()})
    assert future.status_code == 422 and future.get_json()["data"]["errors"][0]["field"] == "to"
    backwards = client.post(url, headers=finance, json={"from": (now - timedelta(days=1)).isoformat(), "to": (now - timedelta(days=2)).isoformat()})
    assert backwards.status_code == 422
    assert client.post(url, headers=finance, json={"from": "yesterday", "to": "today"}).status_code == 422
    assert client.post("/admin/api/v1/partners/999999/payouts", headers=finance, json={"from": "2020-01-01T00:00:00", "to": "2020-02-01T00:00:00"}).status_code == 404
    with app.app_context():
        assert db.session().scalars(select(AuditEntry).where(AuditEntry.action == "partner.payout")).all() == []
