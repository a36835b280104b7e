"""Only a sales lead (a contact phone and a stated need) can be marked valid and earn its sharer points (guard 2)."""
from __future__ import annotations

from sqlalchemy import select

from server import db
from server.points import ledger
from server.points.compliance import compliance_report
from server.points.models import AccountKind, TxKind
from server.points.queries import member_balances
from server.referral.models import Lead


def _leads(client, ops, **query):
    return client.get("/admin/api/v1/leads", headers=ops, query_string=query).get_json()["data"]["items"]


def _review(client, ops, lead_id, status="valid"):
    return client.post(f"/admin/api/v1/leads/{lead_id}/review", headers=ops, json={"status": status})


def test_a_sign_in_through_a_poster_cannot_be_paid_as_a_valid_lead(app, client, wx_login, scene_of, staff_login):
    alice = wx_login("alice")
    wx_login("bob", scene=scene_of(alice, "moments_poster"))
    ops = staff_login("operations")
    arrival = _leads(client, ops, source="arrival")[0]
    refused = _review(client, ops, arrival["id"])
    body = refused.get_json()
    assert refused.status_code == 422 and body["code"] == 42265
    assert {e["field"] for e in body["data"]["errors"]} == {"status"} and len(body["data"]["errors"]) == 2
    assert _leads(client, ops)[0]["status"] == "new"  # nothing changed
    with app.app_context():
        assert member_balances(db.session(), alice["user"]["id"]).available == 0
    # Marking it invalid is always possible.
    assert _review(client, ops, arrival["id"], "invalid").status_code == 200
    with app.app_context():
        report = compliance_report(db.session())
        assert report.ok, report.violations


def test_a_contact_without_a_stated_need_is_refused_and_with_one_pays(app, client, wx_login, scene_of, staff_login):
    alice = wx_login("alice")
    bob = wx_login("bob", scene=scene_of(alice))
    ops = staff_login("operations")
    client.post("/api/v1/referral/leads", headers=bob["headers"], json={"contact_name": "王先生", "phone": "13912345678", "note": "  "})
    client.post("/api/v1/referral/leads", headers=bob["headers"], json={"contact_name": "王先生", "phone": "13912345678", "note": "想要团购报价"})
    blank, stated = sorted(_leads(client, ops, source="contact"), key=lambda lead: lead["id"])
    refused = _review(client, ops, blank["id"])
    assert refused.status_code == 422 and refused.get_json()["data"]["errors"] == [{"field": "status", "error": "the lead states no need"}]
    assert _review(client, ops, stated["id"]).status_code == 200
    with app.app_context():
        assert member_balances(db.session(), alice["user"]["id"]).available == 1_000  # 10 points
        report = compliance_report(db.session())
        assert report.ok, report.violations


def test_partner_leads_are_reviewed_as_before(client, wx_login, staff_login):
    ops = staff_login("operations")
    partner = client.post("/admin/api/v1/partners", headers=ops, json={"name": "知乎", "commission_mode": "per_lead", "per_lead_fen": 100}).get_json()["data"]
    link = client.post(f"/admin/api/v1/partners/{partner['id']}/scenes", headers=ops, json={}).get_json()["data"]
    wx_login("eve", scene=link["scene"])
    lead = _leads(client, ops, partner_id=partner["id"])[0]
    assert _review(client, ops, lead["id"]).status_code == 200


def test_the_report_flags_a_valid_lead_reward_without_a_contact(app, client, wx_login, scene_of, staff_login):
    """Points posted for an arrival lead around the review (a script, an older release) fail guard 2."""
    alice = wx_login("alice")
    wx_login("bob", scene=scene_of(alice))
    with app.app_context():
        sess = db.session()
        lead = sess.scalars(select(Lead)).one()
        ledger.post(
            sess,
            key=f"lead:{lead.id}:reward",
            kind=TxKind.lead_reward,
            legs=[(ledger.account(sess, None, AccountKind.issuance), -1_000), (ledger.account(sess, alice["user"]["id"], AccountKind.available), 1_000)],
            reason="paid for a sign-in",
            member_id=alice["user"]["id"],
        )
        ledger.post(
            sess,
            key="lead:999999:reward",
            kind=TxKind.lead_reward,
            legs=[(ledger.account(sess, None, AccountKind.issuance), -1_000), (ledger.account(sess, alice["user"]["id"], AccountKind.available), 1_000)],
            reason="paid for nothing",
            member_id=alice["user"]["id"],
        )
        db.commit()
        report = compliance_report(sess)
        assert not report.ok
        found = {(v.guard, v.check, v.ref["lead_id"]) for v in report.violations}
        assert found == {(2, "lead_reward_without_contact", lead.id), (2, "lead_reward_without_lead", None)}
    result = app.test_cli_runner().invoke(args=["compliance-report"])
    assert result.exit_code == 1 and "without a contact phone" in result.output
