"""Offline contracts: from a valid lead to installments, finance's confirmation, phases and refusals."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry
from server.orders.models import Installment, Order, OrderEvent
from server.referral.models import PartnerCommission, TouchEvent, TouchKind

ADMIN = "/admin/api/v1"


@pytest.fixture
def staff(staff_login):
    """One signed-in header per console role, made once per test."""
    return {role: staff_login(role) for role in ("operations", "finance")}


@pytest.fixture
def scene_of(client):
    def scene(member):
        response = client.post("/api/v1/referral/scenes", headers=member["headers"], json={"channel": "miniprogram_code"})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]["scene"]

    return scene


@pytest.fixture
def lead_for(client, staff, wx_login, scene_of):
    """``lead_for("bob", sharer=alice)``: bob arrives through alice's share and leaves his phone and what he
    needs (a sales lead); operations marks the lead (valid by default)."""

    def make(name, *, sharer, status="valid"):
        member = wx_login(name, scene=scene_of(sharer))
        left = client.post("/api/v1/referral/leads", headers=member["headers"], json={"contact_name": name, "phone": "13912345678", "note": "要做小程序"})
        assert left.status_code == 201, left.get_json()
        query = {"sharer_id": sharer["user"]["id"], "source": "contact"}
        leads = client.get(f"{ADMIN}/leads", headers=staff["operations"], query_string=query).get_json()["data"]
        lead = next(item for item in leads["items"] if item["member_id"] == member["user"]["id"])
        if status is not None:
            reviewed = client.post(f"{ADMIN}/leads/{lead['id']}/review", headers=staff["operations"], json={"status": status})
            assert reviewed.status_code == 200, reviewed.get_json()
        return lead["id"], member

    return make


def open_contract(client, headers, lead_id, amounts, *, title="外包大师 · 小程序一期", **extra):
    body = {"lead_id": lead_id, "title": title, "amount_fen": sum(amounts), "installments": [{"amount_fen": a} for a in amounts], **extra}
    return client.post(f"{ADMIN}/contracts", headers=headers, json=body)


def receive(client, headers, contract_id, seq, **body):
    return client.post(f"{ADMIN}/contracts/{contract_id}/installments/{seq}/receive", headers=headers, json=body)


def confirm(client, headers, contract_id):
    return client.post(f"{ADMIN}/contracts/{contract_id}/confirm-final", headers=headers)


def paid_contract(client, staff, lead_id, amounts, **extra):
    """A contract whose installments have all been received and confirmed by finance."""
    cid = open_contract(client, staff["operations"], lead_id, amounts, **extra).get_json()["data"]["id"]
    for seq in range(1, len(amounts) + 1):
        assert receive(client, staff["finance"], cid, seq).status_code == 200
    assert confirm(client, staff["finance"], cid).status_code == 200
    return cid


def events(data):
    return [e["event"] for e in data["timeline"]]


def test_a_lead_becomes_a_contract_paid_in_installments_and_confirmed_by_finance(app, client, staff, wx_login, scene_of, lead_for):
    ops, fin = staff["operations"], staff["finance"]
    zoe = wx_login("zoe")
    alice = wx_login("alice", scene=scene_of(zoe))
    lead_id, bob = lead_for("bob", sharer=alice)
    created = client.post(
        f"{ADMIN}/contracts",
        headers=ops,
        json={
            "lead_id": lead_id,
            "title": "外包大师 · 小程序一期",
            "amount_fen": 100_000_00,
            "installments": [
                {"amount_fen": 30_000_00, "due_date": "2031-01-15"},
                {"amount_fen": 50_000_00, "due_date": "2031-03-15"},
                {"amount_fen": 20_000_00},
            ],
        },
    )
    assert created.status_code == 201, created.get_json()
    contract = created.get_json()["data"]
    cid = contract["id"]
    assert contract["kind"] == "contract" and contract["status"] == "created" and contract["out_trade_no"].startswith("C")
    assert (contract["member_id"], contract["inviter_id"], contract["upline_id"]) == (bob["user"]["id"], alice["user"]["id"], zoe["user"]["id"])
    assert contract["lead_id"] == lead_id and contract["partner_id"] is None and contract["repeat_business"] is False
    assert contract["total_fee"] == 100_000_00 and contract["paid_fee"] == 0
    assert [(i["seq"], i["amount_fen"], i["due_date"], i["final"]) for i in contract["installments"]] == [
        (1, 30_000_00, "2031-01-15", False),
        (2, 50_000_00, "2031-03-15", False),
        (3, 20_000_00, None, True),
    ]
    assert events(contract) == ["created"] and contract["phases"] == [
        {
            "phase": 1,
            "id": cid,
            "out_trade_no": contract["out_trade_no"],
            "title": "外包大师 · 小程序一期",
            "status": "created",
            "total_fee": 100_000_00,
            "repeat_business": False,
            "parent_order_id": None,
            "created_at": contract["created_at"],
        }
    ]
    lead_timeline = client.get(f"{ADMIN}/leads/{lead_id}", headers=ops).get_json()["data"]["timeline"]
    assert lead_timeline[-1]["event"] == "order" and lead_timeline[-1]["content"] == f"order:{cid}"

    early = confirm(client, fin, cid)
    assert early.status_code == 409 and early.get_json()["code"] == 40966 and early.get_json()["data"]["outstanding"] == [1, 2, 3]

    first = receive(client, fin, cid, 1)
    assert first.status_code == 200, first.get_json()
    data = first.get_json()["data"]
    assert data["status"] == "paid" and data["paid_fee"] == 30_000_00 and data["paid_at"]
    assert events(data) == ["created", "installment_received", "paid"]
    assert data["installments"][0]["received_at"] and data["installments"][1]["received_at"] is None
    assert confirm(client, fin, cid).get_json()["data"]["outstanding"] == [2, 3]

    assert receive(client, fin, cid, 2, note="对公转账").status_code == 200
    again = receive(client, fin, cid, 2)
    assert again.status_code == 409 and again.get_json()["code"] == 40965
    queue = client.get(f"{ADMIN}/finance/confirmations", headers=fin).get_json()["data"]
    assert queue["total"] == 0

    arrived = "2024-06-01T09:30:00+08:00"  # the bank statement's time, in Beijing time
    last = receive(client, fin, cid, 3, received_at=arrived, note="尾款")
    data = last.get_json()["data"]
    assert data["status"] == "paid" and data["paid_fee"] == data["total_fee"]
    assert events(data) == ["created", "installment_received", "paid", "installment_received", "installment_received"]
    assert data["timeline"][-1]["detail"]["final"] is True
    assert datetime.fromisoformat(data["installments"][2]["received_at"]) == datetime.fromisoformat(arrived)
    queue = client.get(f"{ADMIN}/finance/confirmations", headers=fin).get_json()["data"]
    assert queue["total"] == 1 and queue["items"][0]["id"] == cid and queue["items"][0]["installments_received"] == 3

    done = confirm(client, fin, cid)
    assert done.status_code == 200, done.get_json()
    data = done.get_json()["data"]
    assert data["status"] == "completed" and data["completed_at"] and data["finance_confirmed_at"] and data["finance_confirmed_by"]
    assert data["timeline"][-1]["event"] == "completed" and data["timeline"][-1]["detail"]["final_payment_confirmed"] is True
    assert client.get(f"{ADMIN}/finance/confirmations", headers=fin).get_json()["data"]["total"] == 0
    repeat = confirm(client, fin, cid)
    assert repeat.status_code == 409 and repeat.get_json()["code"] == 40967

    listed = client.get(f"{ADMIN}/contracts", headers=ops, query_string={"status": "completed", "lead_id": lead_id}).get_json()["data"]
    assert listed["total"] == 1 and listed["items"][0]["installments_total"] == 3
    assert client.get(f"{ADMIN}/contracts", headers=fin, query_string={"member_id": alice["user"]["id"]}).get_json()["data"]["total"] == 0
    assert client.get(f"{ADMIN}/orders", headers=ops, query_string={"kind": "contract"}).get_json()["data"]["total"] == 1
    with app.app_context():
        sess = db.session()
        actions = sess.scalars(select(AuditEntry.action).where(AuditEntry.target == f"order:{cid}").order_by(AuditEntry.id)).all()
        assert actions == ["contract.create"] + ["contract.installment_receive"] * 3 + ["contract.confirm_final"]
        kinds = sess.scalars(select(TouchEvent.kind).where(TouchEvent.content == f"order:{cid}").order_by(TouchEvent.id)).all()
        assert kinds == [TouchKind.order, TouchKind.paid, TouchKind.completed]
        assert sess.scalar(select(func.count()).select_from(PartnerCommission)) == 0


def test_a_partner_brought_deal_earns_its_commission_when_finance_confirms(client, staff, wx_login):
    ops, fin = staff["operations"], staff["finance"]
    partner = client.post(
        f"{ADMIN}/partners", headers=ops, json={"name": "外包公众号", "commission_mode": "per_deal", "deal_rate_bp": 150}
    ).get_json()["data"]
    link = client.post(f"{ADMIN}/partners/{partner['id']}/scenes", headers=ops, json={}).get_json()["data"]
    eve = wx_login("eve", scene=link["scene"])
    lead = client.get(f"{ADMIN}/leads", headers=ops, query_string={"partner_id": partner["id"]}).get_json()["data"]["items"][0]
    client.post(f"{ADMIN}/leads/{lead['id']}/review", headers=ops, json={"status": "valid"})

    contract = open_contract(client, ops, lead["id"], [40_000_00, 60_000_01]).get_json()["data"]
    assert contract["partner_id"] == partner["id"] and contract["member_id"] == eve["user"]["id"] and contract["inviter_id"] is None
    receive(client, fin, contract["id"], 1)
    receive(client, fin, contract["id"], 2)
    statement = client.get(f"{ADMIN}/partners/{partner['id']}/statement", headers=fin).get_json()["data"]
    assert statement["deals"] == 0  # nothing is owed before finance confirms the final payment
    assert confirm(client, fin, contract["id"]).status_code == 200
    statement = client.get(f"{ADMIN}/partners/{partner['id']}/statement", headers=fin).get_json()["data"]
    assert statement["deals"] == 1 and statement["total_fen"] == 10_000_001 * 150 // 10_000


def test_phase_two_is_repeat_business_linked_to_its_parent(app, client, staff, wx_login, lead_for, scene_of):
    ops, fin = staff["operations"], staff["finance"]
    alice = wx_login("alice")
    lead_id, bob = lead_for("bob", sharer=alice)
    phase1 = open_contract(client, ops, lead_id, [50_000_00]).get_json()["data"]["id"]
    # Phase 1 not paid yet: it cannot be continued, and a contract beside it is not repeat business.
    refused = open_contract(client, ops, lead_id, [10_000_00], parent_order_id=phase1)
    assert refused.status_code == 422 and refused.get_json()["code"] == 42264
    assert refused.get_json()["data"]["errors"][0]["field"] == "parent_order_id"
    side = open_contract(client, ops, lead_id, [10_000_00], title="另一个项目").get_json()["data"]
    assert side["repeat_business"] is False

    receive(client, fin, phase1, 1)  # paid, not yet completed: phase 2 may already be signed
    phase2 = open_contract(client, ops, lead_id, [80_000_00, 20_000_00], title="小程序二期", parent_order_id=phase1)
    assert phase2.status_code == 201, phase2.get_json()
    phase2 = phase2.get_json()["data"]
    assert phase2["repeat_business"] is True and phase2["parent_order_id"] == phase1
    assert phase2["inviter_id"] == alice["user"]["id"]
    receive(client, fin, phase2["id"], 1)
    phase3 = open_contract(client, ops, lead_id, [30_000_00], title="小程序三期", parent_order_id=phase2["id"]).get_json()["data"]
    assert phase3["repeat_business"] is True
    chain = [(p["phase"], p["id"]) for p in phase3["phases"]]
    assert chain == [(1, phase1), (2, phase2["id"]), (3, phase3["id"])]
    from_the_start = client.get(f"{ADMIN}/contracts/{phase1}", headers=fin).get_json()["data"]["phases"]
    assert [(p["phase"], p["id"]) for p in from_the_start] == chain

    # Without a parent, a member with a completed contract is a returning customer.
    assert confirm(client, fin, phase1).status_code == 200
    later = open_contract(client, ops, lead_id, [5_000_00], title="运维服务").get_json()["data"]
    assert later["repeat_business"] is True and later["parent_order_id"] is None

    # Someone else's contract, or an online order, is never a parent.
    carol_lead, _ = lead_for("carol", sharer=alice)
    foreign = open_contract(client, ops, carol_lead, [10_000_00], parent_order_id=phase1)
    assert foreign.status_code == 422 and foreign.get_json()["code"] == 42264
    with app.app_context():
        assert db.session().get(Order, phase2["id"]).parent_order_id == phase1


def test_refusals(app, client, staff, wx_login, lead_for, staff_login):
    ops, fin = staff["operations"], staff["finance"]
    owner = staff_login("owner")
    alice = wx_login("alice")
    unreviewed, _ = lead_for("bob", sharer=alice, status=None)
    invalid, _ = lead_for("carol", sharer=alice, status="invalid")
    valid, dave = lead_for("dave", sharer=alice)

    for lead_id, status in ((unreviewed, "new"), (invalid, "invalid")):
        refused = open_contract(client, ops, lead_id, [1000])
        assert refused.status_code == 422 and refused.get_json()["code"] == 42261
        assert refused.get_json()["data"]["status"] == status

    scene = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={"channel": "moments_poster"}).get_json()["data"]["scene"]
    client.post(f"/s/{scene}/lead", data={"contact_name": "李女士", "phone": "13700001111", "note": "要做小程序"})
    contact = client.get(f"{ADMIN}/leads", headers=ops, query_string={"source": "contact"}).get_json()["data"]["items"][0]
    client.post(f"{ADMIN}/leads/{contact['id']}/review", headers=ops, json={"status": "valid"})
    memberless = open_contract(client, ops, contact["id"], [1000])
    assert memberless.status_code == 422 and memberless.get_json()["code"] == 42262
    assert "sign in" in memberless.get_json()["message"]

    unknown = open_contract(client, ops, 999_999, [1000])
    assert unknown.status_code == 422 and unknown.get_json()["data"]["errors"][0]["field"] == "lead_id"
    mismatch = client.post(
        f"{ADMIN}/contracts", headers=ops, json={"lead_id": valid, "title": "x", "amount_fen": 10_000, "installments": [{"amount_fen": 3000}, {"amount_fen": 3000}]}
    )
    assert mismatch.status_code == 422 and mismatch.get_json()["code"] == 42263
    assert mismatch.get_json()["data"]["installments_fen"] == 6000

    good = {"lead_id": valid, "title": "官网改版", "amount_fen": 1000, "installments": [{"amount_fen": 1000}]}
    for bad in (
        {"amount_fen": 1000.5, "installments": [{"amount_fen": 1000.5}]},
        {"amount_fen": "1000", "installments": [{"amount_fen": "1000"}]},
        {"amount_fen": 0, "installments": [{"amount_fen": 0}]},
        {"installments": []},
        {"installments": [{"amount_fen": 1000, "due_date": "next month"}]},
        {"title": ""},
        {"lead_id": True},
        {"currency": "CNY"},
    ):
        response = client.post(f"{ADMIN}/contracts", headers=ops, json=good | bad)
        assert response.status_code == 422 and response.get_json()["data"]["errors"], bad

    assert open_contract(client, fin, valid, [1000]).status_code == 403
    assert open_contract(client, dave["headers"], valid, [1000]).status_code == 401
    cid = open_contract(client, owner, valid, [600, 400]).get_json()["data"]["id"]
    assert receive(client, ops, cid, 1).status_code == 403
    assert client.post(f"{ADMIN}/contracts/{cid}/cancel", headers=fin).status_code == 403
    assert client.get(f"{ADMIN}/finance/confirmations", headers=ops).status_code == 403
    assert client.get(f"{ADMIN}/contracts/{cid}", headers=dave["headers"]).status_code == 401

    missing = receive(client, fin, cid, 3)
    assert missing.status_code == 404 and missing.get_json()["code"] == 40464
    assert receive(client, fin, 999_999, 1).get_json()["code"] == 40463
    future = (datetime.now(timezone.utc) + timedelta(days=2)).isoformat()
    assert receive(client, fin, cid, 1, received_at=future).status_code == 422
    assert client.post(f"{ADMIN}/contracts/{cid}/installments/1/receive", headers=fin, data="not json").status_code == 400
    assert receive(client, fin, cid, 1).status_code == 200
    early = confirm(client, fin, cid)
    assert early.status_code == 409 and early.get_json()["data"]["outstanding"] == [2]

    with app.app_context():
        assert db.session().get(Order, cid).paid_fee == 600


def test_an_unpaid_contract_can_be_cancelled_a_paid_one_cannot(app, client, staff, wx_login, lead_for):
    ops, fin = staff["operations"], staff["finance"]
    lead_id, _ = lead_for("bob", sharer=wx_login("alice"))
    first = open_contract(client, ops, lead_id, [1000, 2000]).get_json()["data"]["id"]
    cancelled = client.post(f"{ADMIN}/contracts/{first}/cancel", headers=ops, json={"reason": "客户改变计划"})
    assert cancelled.status_code == 200, cancelled.get_json()
    data = cancelled.get_json()["data"]
    assert data["status"] == "closed" and data["closed_at"]
    assert data["timeline"][-1]["event"] == "closed" and data["timeline"][-1]["detail"]["reason"] == "客户改变计划"
    late = receive(client, fin, first, 1)
    assert late.status_code == 409 and late.get_json()["code"] == 40962
    assert confirm(client, fin, first).status_code == 409
    assert client.post(f"{ADMIN}/contracts/{first}/cancel", headers=ops).status_code == 409

    second = open_contract(client, ops, lead_id, [1000, 2000]).get_json()["data"]["id"]
    receive(client, fin, second, 1)
    refused = client.post(f"{ADMIN}/contracts/{second}/cancel", headers=ops)
    assert refused.status_code == 409 and refused.get_json()["code"] == 40962
    assert client.get(f"{ADMIN}/contracts/{second}", headers=ops).get_json()["data"]["status"] == "paid"
    assert client.get(f"{ADMIN}/contracts", headers=ops, query_string={"status": "closed"}).get_json()["data"]["total"] == 1
    with app.app_context():
        actions = db.session().scalars(select(AuditEntry.action).where(AuditEntry.action == "contract.cancel")).all()
        assert actions == ["contract.cancel"]


def _race(app, requests):
    """Fire ``requests`` (path, headers) as POSTs at the same moment from separate threads; returns the statuses."""
    statuses: list[int] = []
    barrier = threading.Barrier(len(requests))

    def call(path, headers):
        local = app.test_client()
        barrier.wait()
        statuses.append(local.post(path, headers=headers).status_code)

    threads = [threading.Thread(target=call, args=request) for request in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(statuses)


def test_two_clerks_recording_the_same_installment_count_it_once(app, client, staff, wx_login, lead_for):
    lead_id, _ = lead_for("bob", sharer=wx_login("alice"))
    cid = open_contract(client, staff["operations"], lead_id, [30_000, 70_000]).get_json()["data"]["id"]
    path = f"{ADMIN}/contracts/{cid}/installments/1/receive"
    assert _race(app, [(path, staff["finance"]), (path, staff["finance"])]) == [200, 409]
    with app.app_context():
        sess = db.session()
        assert sess.get(Order, cid).paid_fee == 30_000
        assert sess.scalar(select(func.count()).select_from(Installment).where(Installment.order_id == cid, Installment.received_at.is_not(None))) == 1
        names = sess.scalars(select(OrderEvent.event).where(OrderEvent.order_id == cid).order_by(OrderEvent.id)).all()
        assert names == ["created", "installment_received", "paid"]


def test_two_installments_recorded_at_once_both_count_and_pay_the_contract_once(app, client, staff, wx_login, lead_for):
    lead_id, _ = lead_for("bob", sharer=wx_login("alice"))
    cid = open_contract(client, staff["operations"], lead_id, [30_000, 70_000]).get_json()["data"]["id"]
    paths = [f"{ADMIN}/contracts/{cid}/installments/{seq}/receive" for seq in (1, 2)]
    assert _race(app, [(p, staff["finance"]) for p in paths]) == [200, 200]
    with app.app_context():
        sess = db.session()
        order = sess.get(Order, cid)
        assert order.paid_fee == order.total_fee == 100_000
        names = sess.scalars(select(OrderEvent.event).where(OrderEvent.order_id == cid)).all()
        assert sorted(names) == ["created", "installment_received", "installment_received", "paid"]
