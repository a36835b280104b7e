"""Notices: staff drafts, publishing and withdrawing; who sees which notice; read receipts."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry
from server.notices import services
from server.notices.models import NoticeReceipt

ADMIN = "/admin/api/v1/notices"


@pytest.fixture
def ops(staff_login):
    return staff_login("operations")


@pytest.fixture
def notice(client, ops):
    """``notice(title, audience=..., tier=..., pinned=..., publish=True)`` creates (and publishes) a notice; returns its id."""

    def make(title, publish=True, **fields):
        response = client.post(ADMIN, json={"title": title, "body": f"{title} 的正文\n第二行"} | fields, headers=ops)
        assert response.status_code == 201, response.get_json()
        notice_id = response.get_json()["data"]["id"]
        if publish:
            assert client.post(f"{ADMIN}/{notice_id}/publish", headers=ops).status_code == 200
        return notice_id

    return make


@pytest.fixture
def members(client, wx_login, ops):
    """alice: a member; t1: an approved tier-1 distributor; t2: an approved tier-2 one (recruited by t1); pend: pending."""
    t1 = wx_login("tier-one")
    applied = client.post("/api/v1/distributors/apply", json={"real_name": "一级", "phone": "13800138001"}, headers=t1["headers"]).get_json()["data"]
    client.post(f"/admin/api/v1/distributors/{applied['id']}/decisions", json={"action": "approve"}, headers=ops)
    scene = client.post("/api/v1/referral/scenes", json={"channel": "h5_link"}, headers=t1["headers"])
    assert scene.status_code in (200, 201), scene.get_json()
    t2 = wx_login("tier-two", scene=scene.get_json()["data"]["scene"])
    applied = client.post("/api/v1/distributors/apply", json={"real_name": "二级", "phone": "13800138002"}, headers=t2["headers"]).get_json()["data"]
    assert applied["tier"] == 2
    client.post(f"/admin/api/v1/distributors/{applied['id']}/decisions", json={"action": "approve"}, headers=ops)
    pend = wx_login("pending")
    client.post("/api/v1/distributors/apply", json={"real_name": "待审", "phone": "13800138003"}, headers=pend["headers"])
    return {"alice": wx_login("alice"), "t1": t1, "t2": t2, "pend": pend}


def titles(client, member, **params):
    data = client.get("/api/v1/notices", query_string=params, headers=member["headers"]).get_json()["data"]
    return [item["title"] for item in data["items"]]


def test_each_member_sees_the_notices_for_them(client, members, notice):
    everyone = notice("全员")
    for_distributors = notice("分销员", audience="distributors")
    tier1 = notice("一级", audience="tier", tier=1)
    tier2 = notice("二级", audience="tier", tier=2)
    notice("草稿", publish=False)
    assert titles(client, members["alice"]) == ["全员"]
    assert titles(client, members["pend"]) == ["全员"]
    assert titles(client, members["t1"]) == ["一级", "分销员", "全员"]
    assert titles(client, members["t2"]) == ["二级", "分销员", "全员"]
    for notice_id in (for_distributors, tier1, tier2):
        response = client.get(f"/api/v1/notices/{notice_id}", headers=members["alice"]["headers"])
        assert response.status_code == 404 and response.get_json()["code"] == 40480
    assert client.get(f"/api/v1/notices/{tier2}", headers=members["t1"]["headers"]).status_code == 404
    assert client.post(f"/api/v1/notices/{tier1}/read", headers=members["t2"]["headers"]).status_code == 404
    assert client.get(f"/api/v1/notices/{everyone}", headers=members["alice"]["headers"]).status_code == 200


def test_reading_marks_read_once_and_counts_unread(client, wx_login, notice, app):
    alice = wx_login("alice")
    first, second = notice("一"), notice("二")
    listing = client.get("/api/v1/notices", headers=alice["headers"]).get_json()["data"]
    assert listing["unread"] == 2 and [i["read"] for i in listing["items"]] == [False, False]
    shown = client.get(f"/api/v1/notices/{first}", headers=alice["headers"]).get_json()["data"]
    assert shown["read"] and shown["body"] == "一 的正文\n第二行"
    again = client.get(f"/api/v1/notices/{first}", headers=alice["headers"]).get_json()["data"]
    marked = client.post(f"/api/v1/notices/{first}/read", headers=alice["headers"]).get_json()["data"]
    assert again["read_at"] == shown["read_at"] == marked["read_at"]
    listing = client.get("/api/v1/notices", headers=alice["headers"]).get_json()["data"]
    assert listing["unread"] == 1 and {i["id"]: i["read"] for i in listing["items"]} == {first: True, second: False}
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(NoticeReceipt)) == 1


def test_pinned_first_then_newest_paged_by_keyset(client, wx_login, notice):
    alice = wx_login("alice")
    for n in range(5):
        notice(f"公告{n}")
    notice("置顶", pinned=True)
    seen, before = [], None
    while True:
        params = {"page_size": 2} | ({"before": before} if before else {})
        data = client.get("/api/v1/notices", query_string=params, headers=alice["headers"]).get_json()["data"]
        seen += [i["title"] for i in data["items"]]
        before = data["next_before"]
        if before is None:
            break
        notice("翻页时新发")  # a notice published meanwhile never shifts the pages being read
    assert seen == ["置顶", "公告4", "公告3", "公告2", "公告1", "公告0"]


def test_withdrawn_notices_disappear_and_drafts_alone_are_edited(client, ops, wx_login, notice, app):
    alice = wx_login("alice")
    notice_id = notice("撤回我")
    client.get(f"/api/v1/notices/{notice_id}", headers=alice["headers"])
    refused = client.patch(f"{ADMIN}/{notice_id}", json={"title": "改"}, headers=ops)
    assert refused.status_code == 409 and refused.get_json()["code"] == 40980
    withdrawn = client.post(f"{ADMIN}/{notice_id}/withdraw", headers=ops)
    assert withdrawn.status_code == 200 and withdrawn.get_json()["data"]["status"] == "withdrawn"
    assert client.get(f"/api/v1/notices/{notice_id}", headers=alice["headers"]).status_code == 404
    assert titles(client, alice) == []
    assert client.post(f"{ADMIN}/{notice_id}/withdraw", headers=ops).status_code == 409
    assert client.post(f"{ADMIN}/{notice_id}/publish", headers=ops).status_code == 409
    with app.app_context():
        actions = db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"notice:{notice_id}").order_by(AuditEntry.id)).all()
        assert actions == ["notice.create", "notice.publish", "notice.withdraw"]


def test_console_api_counts_reads_and_audience(client, ops, members, notice):
    notice_id = notice("分销员", audience="distributors")
    client.get(f"/api/v1/notices/{notice_id}", headers=members["t1"]["headers"])
    data = client.get(f"{ADMIN}/{notice_id}", headers=ops).get_json()["data"]
    assert data["read_count"] == 1 and data["audience_size"] == 2
    receipts = client.get(f"{ADMIN}/{notice_id}/receipts", headers=ops).get_json()["data"]
    assert receipts["total"] == 1 and receipts["items"][0]["member"]["id"] == members["t1"]["user"]["id"]
    listing = client.get(ADMIN, query_string={"status": "published"}, headers=ops).get_json()["data"]
    assert [i["id"] for i in listing["items"]] == [notice_id]


def test_draft_edits_and_audience_checks(client, ops, notice):
    notice_id = notice("草稿", publish=False)
    edited = client.patch(f"{ADMIN}/{notice_id}", json={"audience": "tier", "tier": 2, "pinned": True}, headers=ops).get_json()["data"]
    assert (edited["audience"], edited["tier"], edited["pinned"]) == ("tier", 2, True)
    back = client.patch(f"{ADMIN}/{notice_id}", json={"audience": "all"}, headers=ops).get_json()["data"]
    assert (back["audience"], back["tier"]) == ("all", None)
    for payload in ({"audience": "tier"}, {"tier": 1}, {"audience": "tier", "tier": 3}, {"title": ""}, {"body": " "}, {"audience": "everyone"}, {"pinned": "yes"}):
        response = client.patch(f"{ADMIN}/{notice_id}", json=payload, headers=ops)
        assert response.status_code == 422 and response.get_json()["data"]["errors"], payload
    bad = client.post(ADMIN, json={"title": "x", "body": "y", "audience": "tier"}, headers=ops)
    assert bad.status_code == 422 and bad.get_json()["data"]["errors"][0]["field"] == "tier"


def test_bad_input_never_fails(client, wx_login, ops):
    alice = wx_login("alice")
    for before in ("x", "1.2", "2.1.1", "1.99999999999999.1", "1.1." + "9" * 18, "0." + "9" * 11 + ".1", "0." + "9" * 12 + ".1"):
        response = client.get("/api/v1/notices", query_string={"before": before}, headers=alice["headers"])
        assert response.status_code in (200, 422), (before, response.get_json())
    assert client.get("/api/v1/notices", query_string={"before": "nonsense"}, headers=alice["headers"]).status_code == 422
    assert client.get("/api/v1/notices", query_string={"page_size": 0}, headers=alice["headers"]).status_code == 422
    assert client.get("/api/v1/notices/999999", headers=alice["headers"]).status_code == 404
    assert client.get(f"{ADMIN}/999999/receipts", headers=ops).status_code == 404
    assert client.get(ADMIN, query_string={"status": "gone"}, headers=ops).status_code == 422


def test_roles(client, staff_login):
    finance = staff_login("finance")
    assert client.get(ADMIN, headers=finance).status_code == 403
    assert client.post(ADMIN, json={"title": "x", "body": "y"}, headers=finance).status_code == 403
    owner = staff_login("owner")
    assert client.post(ADMIN, json={"title": "x", "body": "y"}, headers=owner).status_code == 201


def test_concurrent_first_reads_leave_one_receipt(app, client, wx_login, notice):
    """Many requests of one member reading one notice at once: one receipt, every request answered 200."""
    alice = wx_login("alice")
    notice_id = notice("同时读")
    results: list[int] = []
    barrier = threading.Barrier(6)

    def read() -> None:
        local = app.test_client()
        barrier.wait()
        results.append(local.post(f"/api/v1/notices/{notice_id}/read", headers=alice["headers"]).status_code)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 6
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(NoticeReceipt)) == 1
        assert services.read_at(db.session(), alice["user"]["id"], notice_id) is not None


def test_the_loser_of_a_first_read_race_returns_the_winners_receipt(app, client, wx_login, notice, monkeypatch):
    """The race made certain: the receipt exists, but this request's first look missed it (as a concurrent
    request's would); its insert hits the unique key and it answers with the stored time."""
    alice = wx_login("alice")
    notice_id = notice("竞争")
    first = client.get(f"/api/v1/notices/{notice_id}", headers=alice["headers"]).get_json()["data"]["read_at"]
    real = services.read_at
    monkeypatch.setattr(services, "read_at", lambda sess, member_id, nid, latest=False: real(sess, member_id, nid) if latest else None)
    again = client.post(f"/api/v1/notices/{notice_id}/read", headers=alice["headers"])
    assert again.status_code == 200 and again.get_json()["data"]["read_at"] == first
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(NoticeReceipt)) == 1
