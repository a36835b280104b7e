"""Distributor applications, staff decisions, tiers, recruitment, the sharer guard and grades."""
from __future__ import annotations

import inspect

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from server import db, security
from server.accounts.models import AuditEntry, Member
from server.distribution import queries, services
from server.distribution.models import Distributor, DistributorStatus, DistributorTier, Grade
from server.referral.models import Binding
from server.referral.services import record_visit

ADMIN = "/admin/api/v1/distributors"


def me(client, member):
    return client.get("/api/v1/distributors/me", headers=member["headers"])


def audit_actions(sess, distributor_id):
    with sess() as s:
        rows = s.scalars(
            select(AuditEntry).where(AuditEntry.target == f"distributor:{distributor_id}").order_by(AuditEntry.id)
        ).all()
        return [(row.action, row.staff_id, row.detail) for row in rows]


# -- applying ---------------------------------------------------------------------------


def test_member_with_no_orders_applies_and_is_approved_free(client, wx_login, apply, decide, sess):
    alice = wx_login("alice")
    response = apply(alice, real_name="爱丽丝", phone="13800138000", wechat_id="alice_wx", intro="母婴博主")
    assert response.status_code == 201, response.get_json()
    record = response.get_json()["data"]
    assert record["status"] == "pending" and record["tier"] == 1 and record["recruited_by"] is None
    assert record["phone"] == "138****8000"
    assert record["member"]["id"] == alice["user"]["id"]
    # She has bought nothing, and nothing was asked of her but her contact details.
    assert record["record"]["orders"] == 0 and record["record"]["order_amount_fen"] == 0

    approved = decide(record["id"], "approve")
    assert approved.status_code == 200, approved.get_json()
    assert approved.get_json()["data"]["status"] == "approved"

    mine = me(client, alice).get_json()["data"]
    assert mine["status"] == "approved" and mine["tier"] == 1
    assert mine["permissions"] == {
        "tier": 1,
        "discount_bp": 500,
        "material_audiences": [1, 2, 3],
        "can_recruit": True,
        "max_recruits": 50,
        "updated_at": None,
    }
    assert "decided_by" not in mine  # staff detail, not the distributor's business


def test_there_is_no_entry_fee_anywhere():
    columns = set(Distributor.__table__.columns.keys())
    assert not {c for c in columns if any(word in c for word in ("fee", "pay", "price", "deposit", "order", "purchase"))}
    # Contact details and the programme rules the member accepted: nothing to pay or buy.
    assert set(inspect.signature(services.apply).parameters) == {
        "sess", "member", "real_name", "phone", "wechat_id", "intro", "rules_version", "client_address"
    }


def test_phone_is_stored_encrypted(app, wx_login, apply, sess):
    alice = wx_login("alice")
    distributor_id = apply(alice, phone="13912345678").get_json()["data"]["id"]
    with sess() as s:
        row = s.get(Distributor, distributor_id)
        assert "13912345678" not in row.phone_ciphertext
        assert security.decrypt(row.phone_ciphertext, "phone") == "13912345678"
        assert row.phone_digest == security.digest("13912345678", "phone")
        assert row.phone_masked == "139****5678"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"real_name": "", "phone": "13800138000"}, "real_name"),
        ({"real_name": "张三", "phone": "call me"}, "phone"),
        ({"real_name": "张三"}, "phone"),
        ({"real_name": "张三", "phone": 13800138000}, "phone"),
        ({"real_name": "张三", "phone": "13800138000", "fee_fen": 0}, "fee_fen"),
    ],
)
def test_application_is_validated(client, wx_login, body, field):
    alice = wx_login("alice")
    response = client.post("/api/v1/distributors/apply", json=body, headers=alice["headers"])
    assert response.status_code == 422
    assert field in {e["field"] for e in response.get_json()["data"]["errors"]}


def test_me_before_applying_is_not_found(client, wx_login):
    response = me(client, wx_login("alice"))
    assert response.status_code == 404 and response.get_json()["code"] == 40430


def test_member_routes_need_a_member_token(client, ops):
    assert client.get("/api/v1/distributors/me").status_code == 401
    assert client.post("/api/v1/distributors/apply", json={}, headers=ops).status_code == 401


def test_reapply_only_after_rejection(client, wx_login, apply, decide):
    alice = wx_login("alice")
    distributor_id = apply(alice).get_json()["data"]["id"]
    again = apply(alice)
    assert again.status_code == 409 and again.get_json()["code"] == 40930

    rejected = decide(distributor_id, "reject", reason="资料不全")
    assert rejected.get_json()["data"]["status"] == "rejected"
    assert me(client, alice).get_json()["data"]["status_reason"] == "资料不全"

    reapplied = apply(alice, real_name="爱丽丝", phone="13700001111")
    assert reapplied.status_code == 201
    data = reapplied.get_json()["data"]
    assert data["id"] == distributor_id  # the same record, reopened
    assert data["status"] == "pending" and data["status_reason"] == "" and data["decided_at"] is None
    assert data["real_name"] == "爱丽丝" and data["phone"] == "137****1111"

    decide(distributor_id, "approve")
    approved_again = apply(alice)
    assert approved_again.status_code == 409 and approved_again.get_json()["code"] == 40930


@pytest.mark.parametrize("final", ["freeze", "disable"])
def test_frozen_or_disabled_cannot_reapply(client, distributor, apply, decide, final):
    alice = distributor("alice")
    assert decide(alice["distributor"]["id"], final, reason="刷单").status_code == 200
    response = apply(alice)
    assert response.status_code == 409 and response.get_json()["code"] == 40931
    assert response.get_json()["data"] == {"status": {"freeze": "frozen", "disable": "disabled"}[final]}


# -- the decision state machine ---------------------------------------------------------------


def test_transition_table_is_the_only_source_of_moves():
    # Each decision leads to exactly one status, and every target is reachable from somewhere.
    assert services.TARGETS == {
        "apply": DistributorStatus.pending,
        "appoint": DistributorStatus.approved,
        "approve": DistributorStatus.approved,
        "reject": DistributorStatus.rejected,
        "freeze": DistributorStatus.frozen,
        "unfreeze": DistributorStatus.approved,
        "disable": DistributorStatus.disabled,
    }


def test_full_lifecycle_is_audited(client, wx_login, apply, decide, sess, make_staff):
    alice = wx_login("alice")
    distributor_id = apply(alice).get_json()["data"]["id"]
    assert decide(distributor_id, "approve").status_code == 200
    assert decide(distributor_id, "freeze", reason="投诉核查中").status_code == 200
    assert me(client, alice).get_json()["data"]["status"] == "frozen"
    assert decide(distributor_id, "unfreeze").status_code == 200
    final = decide(distributor_id, "disable", reason="违规宣传")
    assert final.status_code == 200
    data = final.get_json()["data"]
    assert data["status"] == "disabled" and data["status_reason"] == "违规宣传" and data["decided_by"] is not None

    entries = audit_actions(sess, distributor_id)
    assert [(action, detail["from"], detail["to"]) for action, _, detail in entries] == [
        ("distributor.approve", "pending", "approved"),
        ("distributor.freeze", "approved", "frozen"),
        ("distributor.unfreeze", "frozen", "approved"),
        ("distributor.disable", "approved", "disabled"),
    ]
    assert all(staff_id == data["decided_by"] for _, staff_id, _ in entries)
    assert entries[1][2]["reason"] == "投诉核查中"


ILLEGAL = {
    "pending": ["freeze", "unfreeze", "disable"],
    "approved": ["approve", "reject", "unfreeze"],
    "rejected": ["approve", "reject", "freeze", "unfreeze", "disable"],
    "frozen": ["approve", "reject", "freeze"],
    "disabled": ["approve", "reject", "freeze", "unfreeze", "disable"],
}
#: The decisions that bring a fresh application to each status.
PATH = {
    "pending": [],
    "approved": ["approve"],
    "rejected": ["reject"],
    "frozen": ["approve", "freeze"],
    "disabled": ["approve", "disable"],
}


@pytest.mark.parametrize("status", list(ILLEGAL))
def test_illegal_moves_are_refused(wx_login, apply, decide, sess, status):
    alice = wx_login("alice")
    distributor_id = apply(alice).get_json()["data"]["id"]
    for action in PATH[status]:
        assert decide(distributor_id, action, reason="x").status_code == 200
    audited = len(audit_actions(sess, distributor_id))
    for action in ILLEGAL[status]:
        response = decide(distributor_id, action, reason="x")
        assert response.status_code == 409, (status, action)
        body = response.get_json()
        assert body["code"] == 40932 and body["data"] == {"status": status, "action": action}
    with sess() as s:
        assert s.get(Distributor, distributor_id).status.value == status
    assert len(audit_actions(sess, distributor_id)) == audited


@pytest.mark.parametrize("reason", ["", "\x1c"])
@pytest.mark.parametrize("action", ["reject", "freeze", "disable"])
def test_refusing_decisions_need_a_reason(wx_login, apply, decide, action, reason):
    """A blank reason is no reason: whitespace as str.strip sees it, as the spec's pattern does."""
    alice = wx_login("alice")
    distributor_id = apply(alice).get_json()["data"]["id"]
    if action != "reject":
        decide(distributor_id, "approve")
    response = decide(distributor_id, action, reason=reason)
    assert response.status_code == 422
    assert response.get_json()["data"]["errors"][0]["field"] == "reason"


def test_decisions_on_unknown_distributor_and_unknown_action(decide, client, ops):
    assert decide(999_999, "approve").status_code == 404
    bad = client.post(f"{ADMIN}/1/decisions", json={"action": "promote"}, headers=ops)
    assert bad.status_code == 422


# -- roles ------------------------------------------------------------------------------------


def test_console_roles(client, wx_login, apply, staff_login, ops, owner):
    finance = staff_login("finance")
    alice = wx_login("alice")
    distributor_id = apply(alice).get_json()["data"]["id"]
    for method, path, body in [
        ("get", ADMIN, None),
        ("get", f"{ADMIN}/{distributor_id}", None),
        ("post", f"{ADMIN}/{distributor_id}/decisions", {"action": "approve"}),
        ("post", ADMIN, {"member_id": alice["user"]["id"], "real_name": "A", "phone": "13800138000"}),
        ("get", "/admin/api/v1/distributor-tiers", None),
        ("get", "/admin/api/v1/grades", None),
    ]:
        response = getattr(client, method)(path, json=body, headers=finance)
        assert response.status_code == 403 and response.get_json()["code"] == 40311, path
        assert getattr(client, method)(path, json=body, headers=alice["headers"]).status_code == 401, path

    assert client.get(ADMIN, headers=ops).status_code == 200
    assert client.get(ADMIN, headers=owner).status_code == 200
    # Tier permissions and grades are the owner's to change.
    assert client.patch("/admin/api/v1/distributor-tiers/1", json={"discount_bp": 600}, headers=ops).status_code == 403
    assert client.post("/admin/api/v1/grades", json={"name": "银牌", "min_sales_fen": 1}, headers=ops).status_code == 403
    assert client.patch("/admin/api/v1/distributor-tiers/1", json={"discount_bp": 600}, headers=owner).status_code == 200


# -- appointing ---------------------------------------------------------------------------


def test_staff_appoint_a_member_as_tier_one(client, wx_login, apply, decide, ops, sess):
    alice = wx_login("alice")
    response = client.post(
        ADMIN,
        json={"member_id": alice["user"]["id"], "tier": 1, "real_name": "爱丽丝", "phone": "13800138000", "reason": "老客户"},
        headers=ops,
    )
    assert response.status_code == 201, response.get_json()
    data = response.get_json()["data"]
    assert data["status"] == "approved" and data["tier"] == 1 and data["decided_by"] is not None
    assert [a for a, _, _ in audit_actions(sess, data["id"])] == ["distributor.appoint"]

    again = client.post(ADMIN, json={"member_id": alice["user"]["id"], "real_name": "A", "phone": "13800138000"}, headers=ops)
    assert again.status_code == 409 and again.get_json()["code"] == 40932

    bob = wx_login("bob")
    bob_id = apply(bob).get_json()["data"]["id"]
    pending = client.post(ADMIN, json={"member_id": bob["user"]["id"], "real_name": "B", "phone": "13800138000"}, headers=ops)
    assert pending.status_code == 409  # a pending application is approved, not appointed over
    decide(bob_id, "reject", reason="x")
    after_rejection = client.post(ADMIN, json={"member_id": bob["user"]["id"], "real_name": "B", "phone": "13800138000"}, headers=ops)
    assert after_rejection.status_code == 201
    assert after_rejection.get_json()["data"]["id"] == bob_id


@pytest.mark.parametrize(
    "body, field",
    [
        ({"member_id": 999_999, "real_name": "A", "phone": "13800138000"}, "member_id"),
        ({"member_id": "1", "real_name": "A", "phone": "13800138000"}, "member_id"),
        ({"tier": 2, "real_name": "A", "phone": "13800138000"}, "tier"),
    ],
)
def test_appoint_is_validated(client, wx_login, ops, body, field):
    alice = wx_login("alice")
    response = client.post(ADMIN, json={"member_id": alice["user"]["id"]} | body, headers=ops)
    assert response.status_code == 422
    assert field in {e["field"] for e in response.get_json()["data"]["errors"]}


# -- tier 2: recruitment through the referral chain ---------------------------------------------------


def test_member_brought_by_tier_one_applies_as_her_tier_two(client, distributor, wx_login, apply, decide, share_scene):
    alice = distributor("alice")
    bob = wx_login("bob", scene=share_scene(alice["user"]["id"]))
    response = apply(bob)
    assert response.status_code == 201
    data = response.get_json()["data"]
    assert data["tier"] == 2 and data["status"] == "pending"  # manual approval by default
    assert data["recruited_by"]["id"] == alice["user"]["id"]

    assert decide(data["id"], "approve").get_json()["data"]["status"] == "approved"
    mine = me(client, bob).get_json()["data"]
    assert mine["permissions"]["material_audiences"] == [2, 3]
    assert mine["permissions"]["discount_bp"] == 200 and mine["permissions"]["can_recruit"] is False
    assert me(client, alice).get_json()["data"]["record"]["recruits"] == 1


def test_auto_approval_setting_applies_to_tier_two_only(client, distributor, wx_login, apply, share_scene, owner, sess):
    response = client.put("/admin/api/v1/settings/distributor_approval", json={"value": "auto"}, headers=owner)
    assert response.status_code == 200, response.get_json()
    alice = distributor("alice")
    bob = wx_login("bob", scene=share_scene(alice["user"]["id"]))
    data = apply(bob).get_json()["data"]
    assert data["tier"] == 2 and data["status"] == "approved" and data["decided_at"] is not None
    [(action, staff_id, detail)] = audit_actions(sess, data["id"])
    assert action == "distributor.approve" and staff_id is None and detail["automatic"] is True

    # Tier 1 is the merchant's appointment: staff decide even with auto approval on.
    carol = wx_login("carol")
    assert apply(carol).get_json()["data"] == me(client, carol).get_json()["data"]
    assert me(client, carol).get_json()["data"]["status"] == "pending"


def test_bad_approval_setting_is_refused(client, owner):
    response = client.put("/admin/api/v1/settings/distributor_approval", json={"value": "sometimes"}, headers=owner)
    assert response.status_code == 422
    settings = client.get("/admin/api/v1/settings", headers=owner).get_json()["data"]["items"]
    [spec] = [s for s in settings if s["key"] == "distributor_approval"]
    assert spec["default"] == "manual" and spec["choices"] == ["auto", "manual"]


def test_max_recruits_is_enforced(client, distributor, wx_login, apply, decide, share_scene, owner):
    assert client.patch("/admin/api/v1/distributor-tiers/1", json={"max_recruits": 1}, headers=owner).status_code == 200
    alice = distributor("alice")
    scene = share_scene(alice["user"]["id"])
    bob = wx_login("bob", scene=scene)
    bob_app = apply(bob).get_json()["data"]
    assert bob_app["tier"] == 2

    carol = wx_login("carol", scene=scene)
    carol_app = apply(carol).get_json()["data"]
    assert carol_app["tier"] == 1 and carol_app["recruited_by"] is None  # alice's one place is taken

    # A rejected recruit gives the place back.
    decide(bob_app["id"], "reject", reason="x")
    dave = wx_login("dave", scene=scene)
    assert apply(dave).get_json()["data"]["tier"] == 2


def test_member_brought_by_tier_two_applies_as_tier_two_under_her_recruiter(client, distributor, wx_login, apply, decide, share_scene, owner):
    zed = distributor("zed")
    alice = distributor("alice", scene=share_scene(zed["user"]["id"]))
    assert alice["distributor"]["tier"] == 2
    bob = wx_login("bob", scene=share_scene(alice["user"]["id"]))
    data = apply(bob).get_json()["data"]
    # Never above the distributor who brought him, never a third tier: a tier 2 beside alice.
    assert data["tier"] == 2 and data["status"] == "pending"
    assert data["recruited_by"]["id"] == zed["user"]["id"]
    assert me(client, zed).get_json()["data"]["record"]["recruits"] == 2


def test_member_brought_by_tier_two_whose_recruiter_has_no_place_waits_for_staff_as_tier_two(
    client, distributor, wx_login, apply, decide, share_scene, owner
):
    assert client.put("/admin/api/v1/settings/distributor_approval", json={"value": "auto"}, headers=owner).status_code == 200
    zed = distributor("zed")
    alice = distributor("alice", scene=share_scene(zed["user"]["id"]))
    assert client.patch("/admin/api/v1/distributor-tiers/1", json={"max_recruits": 1}, headers=owner).status_code == 200
    bob = wx_login("bob", scene=share_scene(alice["user"]["id"]))
    data = apply(bob).get_json()["data"]
    assert data["tier"] == 2 and data["recruited_by"] is None and data["status"] == "pending"


@pytest.mark.parametrize("alice_state", ["pending", "frozen", "tier_cannot_recruit"])
def test_no_recruitment_without_an_approved_recruiting_inviter(client, distributor, wx_login, apply, decide, share_scene, owner, alice_state):
    alice = distributor("alice", approve=alice_state != "pending")
    if alice_state == "frozen":
        decide(alice["distributor"]["id"], "freeze", reason="x")
    if alice_state == "tier_cannot_recruit":
        client.patch("/admin/api/v1/distributor-tiers/1", json={"can_recruit": False}, headers=owner)
    scene = share_scene(alice["user"]["id"])
    bob = wx_login("bob", scene=scene)
    data = apply(bob).get_json()["data"]
    assert data["tier"] == 1 and data["recruited_by"] is None


# -- tier permissions -----------------------------------------------------------------------------


def test_owner_edits_tier_permissions(client, owner, ops, sess):
    listed = client.get("/admin/api/v1/distributor-tiers", headers=ops).get_json()["data"]["items"]
    assert [(t["tier"], t["discount_bp"], t["can_recruit"], t["max_recruits"], t["material_audiences"]) for t in listed] == [
        (1, 500, True, 50, [1, 2, 3]),
        (2, 200, False, 0, [2, 3]),
    ]
    changed = client.patch("/admin/api/v1/distributor-tiers/2", json={"discount_bp": 300}, headers=owner)
    assert changed.status_code == 200
    assert changed.get_json()["data"]["discount_bp"] == 300 and changed.get_json()["data"]["updated_at"] is not None
    assert client.get("/admin/api/v1/distributor-tiers", headers=ops).get_json()["data"]["items"][1]["discount_bp"] == 300
    with sess() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "distributor_tier.update")).one()
        assert entry.target == "distributor_tier:2"
        assert entry.detail["old"]["discount_bp"] == 200 and entry.detail["new"]["discount_bp"] == 300


@pytest.mark.parametrize(
    "tier, body, status",
    [
        (1, {"discount_bp": 5001}, 422),
        (1, {"discount_bp": -1}, 422),
        (1, {"discount_bp": "500"}, 422),
        (1, {"max_recruits": -1}, 422),
        (1, {"material_audience": [1]}, 422),
        (2, {"can_recruit": True}, 422),
        (3, {"discount_bp": 100}, 404),
    ],
)
def test_tier_changes_are_validated(client, owner, tier, body, status):
    response = client.patch(f"/admin/api/v1/distributor-tiers/{tier}", json=body, headers=owner)
    assert response.status_code == status, response.get_json()


@pytest.mark.parametrize(
    "column, value, constraint",
    [
        ("recruited_by_id", "other", "recruiter_only_tier2"),
        ("tier", 3, "tier_range"),
        ("can_recruit", True, "only_tier1_recruits"),
    ],
)
def test_database_refuses_a_third_tier(distributor, wx_login, sess, column, value, constraint):
    alice = distributor("alice")
    other = wx_login("bob")["user"]["id"]
    with sess() as s:
        if column == "can_recruit":
            row = s.get(DistributorTier, 2) or DistributorTier(tier=2, **services.TIER_DEFAULTS[2])
            s.add(row)
            s.flush()
        else:
            row = s.get(Distributor, alice["distributor"]["id"])
        setattr(row, column, other if value == "other" else value)
        # MariaDB reports a failed CHECK as an OperationalError, SQLite as an IntegrityError.
        with pytest.raises(DBAPIError, match=constraint):
            s.flush()
        s.rollback()


def test_tier_rows_hold_the_seeded_defaults(sess):
    with sess() as s:
        assert {t: (services.get_tier(s, t).discount_bp, services.get_tier(s, t).can_recruit) for t in (1, 2)} == {
            1: (500, True),
            2: (200, False),
        }


# -- the sharer guard that binding calls ------------------------------------------------------------------


def test_sharer_refusal(wx_login, distributor, apply, decide, sess):
    nobody = wx_login("nobody")
    pending = wx_login("pending")
    apply(pending)
    rejected = wx_login("rejected")
    decide(apply(rejected).get_json()["data"]["id"], "reject", reason="x")
    approved = distributor("approved")
    frozen = distributor("frozen")
    decide(frozen["distributor"]["id"], "freeze", reason="x")
    disabled = distributor("disabled")
    decide(disabled["distributor"]["id"], "disable", reason="x")
    members = {"nobody": nobody, "pending": pending, "rejected": rejected, "approved": approved, "frozen": frozen, "disabled": disabled}
    with sess() as s:
        got = {name: queries.sharer_refusal(s, m["user"]["id"]) for name, m in members.items()}
    assert got == {
        "nobody": None,
        "pending": None,
        "rejected": None,
        "approved": None,
        "frozen": "sharer_frozen",
        "disabled": "sharer_disabled",
    }


def test_a_frozen_distributor_binds_nobody(wx_login, distributor, decide, share_scene, sess):
    alice = distributor("alice")
    scene = share_scene(alice["user"]["id"])
    decide(alice["distributor"]["id"], "freeze", reason="x")
    bob = wx_login("bob", scene=scene)
    with sess() as s:
        assert s.get(Binding, bob["user"]["id"]) is None


# -- the distributor record in the console -------------------------------------------------------------


def test_list_filters_and_pages(client, wx_login, apply, distributor, ops):
    distributor("alice")
    apply(wx_login("bob"), real_name="鲍勃")
    apply(wx_login("carol"), real_name="卡罗尔")

    def listing(**params):
        response = client.get(ADMIN, query_string=params, headers=ops)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]

    everyone = listing()
    assert everyone["total"] == 3 and everyone["page"] == 1
    assert [d["real_name"] for d in everyone["items"]][0] == "卡罗尔"  # newest application first
    assert {d["real_name"] for d in listing(status="pending")["items"]} == {"鲍勃", "卡罗尔"}
    assert [d["real_name"] for d in listing(status="approved", tier=1)["items"]] == ["Alice"]
    assert listing(tier=2)["total"] == 0
    assert [d["real_name"] for d in listing(q="鲍")["items"]] == ["鲍勃"]
    # Wildcards are searched for, not obeyed.
    assert listing(q="%")["total"] == 0 and listing(q="_")["total"] == 0
    second = listing(page=2, page_size=2)
    assert second["total"] == 3 and len(second["items"]) == 1
    assert client.get(ADMIN, query_string={"status": "sleeping"}, headers=ops).status_code == 422
    assert client.get(ADMIN, query_string={"tier": 3}, headers=ops).status_code == 422
    assert all("phone_ciphertext" not in d and d["phone"] == "138****8000" for d in everyone["items"])


def test_detail_is_the_distributor_record(client, distributor, wx_login, share_scene, sess, ops):
    alice = distributor("alice")
    scene = share_scene(alice["user"]["id"])
    bob = wx_login("bob", scene=scene)  # a scan, a binding and an arrival lead
    with sess() as s:
        record_visit(s, scene, visitor="visitor:abc")
        db.commit()
    wx_login("carol", scene=share_scene(bob["user"]["id"]))  # alice's indirect team

    response = client.get(f"{ADMIN}/{alice['distributor']['id']}", headers=ops)
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert data["phone"] == "138****8000" and data["member"]["id"] == alice["user"]["id"]
    assert data["record"] == {
        "visits": 2,
        "leads": 1,
        "team_direct": 1,
        "team_indirect": 1,
        "recruits": 0,
        "orders": 0,
        "order_amount_fen": 0,
        "points": {"available": 0, "pending": 0, "matured": 0, "debt": 0},
    }
    assert client.get(f"{ADMIN}/999999", headers=ops).status_code == 404


# -- grades -------------------------------------------------------------------------------------


def test_owner_manages_grades(client, owner, ops, sess):
    created = client.post("/admin/api/v1/grades", json={"name": "银牌", "min_sales_fen": 100_000, "perks": "专属客服"}, headers=owner)
    assert created.status_code == 201, created.get_json()
    silver = created.get_json()["data"]
    client.post("/admin/api/v1/grades", json={"name": "铜牌", "min_sales_fen": 0, "sort": -1}, headers=owner)
    listed = client.get("/admin/api/v1/grades", headers=ops).get_json()["data"]["items"]
    assert [g["name"] for g in listed] == ["铜牌", "银牌"]

    for body in ({"name": "银牌", "min_sales_fen": 5}, {"name": "金牌", "min_sales_fen": 100_000}):
        dup = client.post("/admin/api/v1/grades", json=body, headers=owner)
        assert dup.status_code == 409 and dup.get_json()["code"] == 40933
    clash = client.patch(f"/admin/api/v1/grades/{silver['id']}", json={"min_sales_fen": 0}, headers=owner)
    assert clash.status_code == 409
    renamed = client.patch(f"/admin/api/v1/grades/{silver['id']}", json={"name": "白银", "min_sales_fen": 200_000}, headers=owner)
    assert renamed.status_code == 200 and renamed.get_json()["data"]["name"] == "白银"
    assert client.post("/admin/api/v1/grades", json={"name": "负", "min_sales_fen": -1}, headers=owner).status_code == 422
    assert client.patch("/admin/api/v1/grades/999999", json={"name": "x"}, headers=owner).status_code == 404

    assert client.delete(f"/admin/api/v1/grades/{silver['id']}", headers=owner).status_code == 200
    assert [g["name"] for g in client.get("/admin/api/v1/grades", headers=ops).get_json()["data"]["items"]] == ["铜牌"]
    with sess() as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.action.like("grade.%")).order_by(AuditEntry.id)).all()
    assert actions == ["grade.create", "grade.create", "grade.update", "grade.delete"]


def test_grades_follow_own_sales_only(client, distributor, owner, sess):
    for name, threshold in (("铜牌", 0), ("银牌", 100_000), ("金牌", 1_000_000)):
        client.post("/admin/api/v1/grades", json={"name": name, "min_sales_fen": threshold}, headers=owner)
    alice = distributor("alice")
    with sess() as s:
        assert services.grade_for_sales(s, 99_999).name == "铜牌"
        assert services.grade_for_sales(s, 100_000).name == "银牌"
        assert services.grade_for_sales(s, 5_000_000).name == "金牌"
        d = s.get(Distributor, alice["distributor"]["id"])
        assert services.assign_grade(s, d, 150_000).name == "银牌"
        db.commit()
        with pytest.raises(ValueError):
            services.assign_grade(s, d, -1)
    grade = client.get("/api/v1/distributors/me", headers=alice["headers"]).get_json()["data"]["grade"]
    assert grade["name"] == "银牌"

    in_use = client.delete(f"/admin/api/v1/grades/{grade['id']}", headers=owner)
    assert in_use.status_code == 409 and in_use.get_json()["code"] == 40934


def test_grading_ignores_team_size(client, distributor, owner, sess):
    """A hundred invitees and no sales earn nothing above the lowest grade (compliance guard 2)."""
    client.post("/admin/api/v1/grades", json={"name": "金牌", "min_sales_fen": 1_000_000}, headers=owner)
    alice = distributor("alice")
    with sess() as s:
        members = [Member(openid=f"invitee-{i}") for i in range(100)]
        s.add_all(members)
        s.flush()
        s.add_all(Binding(member_id=m.id, inviter_id=alice["user"]["id"]) for m in members)
        db.commit()
        d = s.get(Distributor, alice["distributor"]["id"])
        assert queries.distributor_stats(s, d)["team_direct"] == 100
        assert services.assign_grade(s, d, 0) is None
        s.add(Grade(name="铜牌", min_sales_fen=0))
        s.flush()
        assert services.assign_grade(s, d, 0).name == "铜牌"
    # Nothing about a team can even be passed in.
    assert list(inspect.signature(services.grade_for_sales).parameters) == ["sess", "sales_fen"]
    assert list(inspect.signature(services.assign_grade).parameters) == ["sess", "distributor", "sales_fen"]
    assert not {c for c in Grade.__table__.columns.keys() if any(w in c for w in ("team", "member", "invite", "recruit", "count"))}
