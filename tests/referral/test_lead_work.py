"""Working the lead pool through /admin/api/v1: assignment, follow-up with notes, revealing the phone, linking to a member."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import select

from server import db
from server.accounts.models import AuditEntry, Member, MemberStatus, Staff
from server.referral.lead_work import FOLLOW_UP_TRANSITIONS
from server.referral.models import Lead, LeadFollowUp, TouchEvent, TouchKind

PHONE = "13712345678"


@pytest.fixture
def h5_lead(app, client, wx_login, scene_of) -> dict[str, Any]:
    """An anonymous lead left on alice's H5 page: no member yet, a phone and a need."""
    alice = wx_login("alice")
    code = scene_of(alice, "h5_link")
    assert client.post(f"/s/{code}/lead", data={"contact_name": "李女士", "phone": PHONE, "note": "想要报价"}).status_code == 200
    with app.app_context():
        lead_id = db.session().scalars(select(Lead.id)).one()
    return {"id": lead_id, "alice": alice}


def _audit(app, action: str) -> list[tuple[str, dict[str, Any]]]:
    """(target, detail) of each audit entry of ``action``, oldest first."""
    with app.app_context():
        rows = db.session().scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))
        return [(e.target, e.detail) for e in rows]


def test_the_follow_up_table_has_every_state_and_a_final_one() -> None:
    assert set(FOLLOW_UP_TRANSITIONS) == set(LeadFollowUp)
    assert FOLLOW_UP_TRANSITIONS[LeadFollowUp.converted] == frozenset()
    assert LeadFollowUp.new not in set().union(*FOLLOW_UP_TRANSITIONS.values())


def test_a_lead_is_assigned_to_owner_or_operations_staff_and_audited(app, client, h5_lead, staff_login, make_staff):
    ops = staff_login("operations")
    clerk = make_staff("finance", username="clerk")
    colleague = make_staff("operations", username="colleague")
    url = f"/admin/api/v1/leads/{h5_lead['id']}/assign"
    refused = client.post(url, headers=ops, json={"assignee_id": clerk.id})
    assert refused.status_code == 422 and refused.get_json()["data"]["errors"][0]["field"] == "assignee_id"
    assert client.post(url, headers=ops, json={"assignee_id": 999_999}).status_code == 422
    assert client.post(url, headers=ops, json={}).status_code == 422
    done = client.post(url, headers=ops, json={"assignee_id": colleague.id})
    assert done.status_code == 200 and done.get_json()["data"]["assignee_id"] == colleague.id
    assert client.post(url, headers=ops, json={"assignee_id": colleague.id}).status_code == 200  # no change, no entry
    listed = client.get("/admin/api/v1/leads", headers=ops, query_string={"assignee_id": colleague.id}).get_json()["data"]
    assert listed["total"] == 1
    assert client.get("/admin/api/v1/leads", headers=ops, query_string={"assignee_id": 0}).get_json()["data"]["total"] == 0
    assert client.post(url, headers=ops, json={"assignee_id": None}).get_json()["data"]["assignee_id"] is None
    assert [detail for _, detail in _audit(app, "lead.assign")] == [{"from": None, "to": colleague.id}, {"from": colleague.id, "to": None}]
    with app.app_context():
        disabled = db.session().get(Staff, colleague.id)
        assert disabled is not None
        disabled.active = False
        db.commit()
    assert client.post(url, headers=ops, json={"assignee_id": colleague.id}).status_code == 422
    assert client.post(url, headers=staff_login("finance"), json={"assignee_id": None}).status_code == 403
    assert client.post("/admin/api/v1/leads/999999/assign", headers=ops, json={"assignee_id": None}).status_code == 404


def test_follow_up_moves_along_the_table_with_notes(app, client, h5_lead, staff_login):
    ops = staff_login("operations")
    url = f"/admin/api/v1/leads/{h5_lead['id']}/follow-up"
    illegal = client.post(url, headers=ops, json={"state": "converted", "note": "签了"})
    assert illegal.status_code == 409 and illegal.get_json()["data"] == {"from": "new", "to": "converted", "status": "new"}
    assert client.post(url, headers=ops, json={"state": "contacted", "note": "   "}).status_code == 422
    assert client.post(url, headers=ops, json={"state": "called", "note": "x"}).status_code == 422
    assert client.post(url, headers=ops, json={"note": "x" * 1001}).status_code == 422
    first = client.post(url, headers=ops, json={"state": "contacted", "note": "已电话联系"})
    assert first.status_code == 201 and first.get_json()["data"]["follow_up"] == "contacted"
    plain = client.post(url, headers=ops, json={"note": "下周上门"}).get_json()["data"]
    assert plain["follow_up"] is None
    same = client.post(url, headers=ops, json={"state": "contacted", "note": "又打了一次"}).get_json()["data"]
    assert same["follow_up"] is None
    assert client.post(url, headers=ops, json={"state": "lost", "note": "不需要了"}).status_code == 201
    assert client.post(url, headers=ops, json={"state": "contacted", "note": "回电了"}).status_code == 201
    assert client.post(url, headers=ops, json={"state": "converted", "note": "成交"}).status_code == 201
    final = client.post(url, headers=ops, json={"state": "lost", "note": "x"})
    assert final.status_code == 409 and final.get_json()["code"] == 40923
    detail = client.get(f"/admin/api/v1/leads/{h5_lead['id']}", headers=ops).get_json()["data"]
    assert detail["follow_up"] == "converted" and detail["follow_up_at"] is not None
    notes = detail["notes"]
    assert [n["note"] for n in notes][:2] == ["成交", "回电了"] and len(notes) == 6
    assert all(n["staff_id"] and n["created_at"] for n in notes)
    assert client.get("/admin/api/v1/leads", headers=ops, query_string={"follow_up": "converted"}).get_json()["data"]["total"] == 1
    assert client.get("/admin/api/v1/leads", headers=ops, query_string={"follow_up": "lost"}).get_json()["data"]["total"] == 0
    assert len(_audit(app, "lead.follow_up")) == 6


def test_an_invalid_lead_is_never_converted(app, client, h5_lead, staff_login):
    ops = staff_login("operations")
    client.post(f"/admin/api/v1/leads/{h5_lead['id']}/review", headers=ops, json={"status": "invalid"})
    url = f"/admin/api/v1/leads/{h5_lead['id']}/follow-up"
    assert client.post(url, headers=ops, json={"state": "contacted", "note": "打过"}).status_code == 201
    refused = client.post(url, headers=ops, json={"state": "converted", "note": "成交"})
    assert refused.status_code == 409 and refused.get_json()["data"]["status"] == "invalid"


def test_revealing_the_phone_is_audited_and_the_number_is_written_nowhere(app, client, h5_lead, staff_login, caplog):
    ops, finance = staff_login("operations"), staff_login("finance")
    url = f"/admin/api/v1/leads/{h5_lead['id']}/reveal-phone"
    assert client.post(url, headers=finance).status_code == 403
    caplog.set_level(logging.DEBUG)
    revealed = client.post(url, headers=ops)
    assert revealed.status_code == 200 and revealed.get_json()["data"] == {"id": h5_lead["id"], "phone": PHONE}
    assert _audit(app, "lead.reveal_phone") == [(f"lead:{h5_lead['id']}", {})]
    assert PHONE not in caplog.text
    listed = client.get("/admin/api/v1/leads", headers=ops).get_data(as_text=True)
    assert PHONE not in listed and "137****5678" in listed
    assert PHONE not in client.get(f"/admin/api/v1/leads/{h5_lead['id']}", headers=ops).get_data(as_text=True)
    assert client.post("/admin/api/v1/leads/999999/reveal-phone", headers=ops).status_code == 404


def test_a_lead_without_a_phone_has_nothing_to_reveal(app, client, wx_login, scene_of, staff_login):
    alice = wx_login("alice")
    wx_login("bob", scene=scene_of(alice))  # an arrival lead: a sign-in, no phone
    ops = staff_login("operations")
    lead_id = client.get("/admin/api/v1/leads", headers=ops).get_json()["data"]["items"][0]["id"]
    missing = client.post(f"/admin/api/v1/leads/{lead_id}/reveal-phone", headers=ops)
    assert missing.status_code == 404 and missing.get_json()["code"] == 40412
    assert _audit(app, "lead.reveal_phone") == []


def test_an_anonymous_lead_is_linked_once_to_a_member_who_signed_in_later(app, client, h5_lead, wx_login, staff_login):
    ops = staff_login("operations")
    url = f"/admin/api/v1/leads/{h5_lead['id']}/member"
    own_sharer = client.post(url, headers=ops, json={"member_id": h5_lead["alice"]["user"]["id"]})
    assert own_sharer.status_code == 422 and own_sharer.get_json()["data"]["errors"][0]["field"] == "member_id"
    assert client.post(url, headers=ops, json={"member_id": 999_999}).status_code == 422
    dora = wx_login("dora")
    with app.app_context():
        member = db.session().get(Member, dora["user"]["id"])
        assert member is not None
        member.status = MemberStatus.disabled
        db.commit()
    assert client.post(url, headers=ops, json={"member_id": dora["user"]["id"]}).status_code == 422
    lina = wx_login("lina")
    linked = client.post(url, headers=ops, json={"member_id": lina["user"]["id"]})
    assert linked.status_code == 200
    data = linked.get_json()["data"]
    assert data["member_id"] == lina["user"]["id"] and data["sharer_id"] == h5_lead["alice"]["user"]["id"]
    again = client.post(url, headers=ops, json={"member_id": dora["user"]["id"]})
    assert again.status_code == 409 and again.get_json()["data"] == {"member_id": lina["user"]["id"]}
    assert [detail for _, detail in _audit(app, "lead.link_member")] == [{"member_id": lina["user"]["id"]}]
    with app.app_context():
        events = db.session().scalars(select(TouchEvent).where(TouchEvent.member_id == lina["user"]["id"], TouchEvent.kind == TouchKind.lead)).all()
        assert [e.detail["lead_id"] for e in events] == [h5_lead["id"]] and events[0].actor.startswith("staff:")
    assert client.post(url, headers=staff_login("finance"), json={"member_id": lina["user"]["id"]}).status_code == 403


def test_a_linked_valid_lead_becomes_a_contract(app, client, h5_lead, wx_login, staff_login):
    ops = staff_login("operations")
    lina = wx_login("lina")
    body = {"lead_id": h5_lead["id"], "title": "年度服务", "amount_fen": 100_000, "installments": [{"amount_fen": 100_000}]}
    client.post(f"/admin/api/v1/leads/{h5_lead['id']}/review", headers=ops, json={"status": "valid"})
    assert client.post("/admin/api/v1/contracts", headers=ops, json=body).get_json()["code"] == 42262  # no member yet
    client.post(f"/admin/api/v1/leads/{h5_lead['id']}/member", headers=ops, json={"member_id": lina["user"]["id"]})
    created = client.post("/admin/api/v1/contracts", headers=ops, json=body)
    assert created.status_code == 201 and created.get_json()["data"]["member_id"] == lina["user"]["id"]
