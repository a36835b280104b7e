"""Feedback and reports: members send and read them; staff move them through the queue, one move at a time."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry
from server.feedback.models import FeedbackItem

API = "/api/v1/feedback"
ADMIN = "/admin/api/v1/feedback"


def _send(client: FlaskClient, member: dict[str, Any], **body: Any) -> Any:
    payload = {"kind": "feedback", "category": "suggestion", "body": "希望增加夜间配送"} | body
    return client.post(API, json=payload, headers=member["headers"])


def test_member_sends_feedback_and_reads_it_back(client, wx_login) -> None:
    carol = wx_login("carol")
    sent = _send(client, carol, contact="微信 carol88")
    assert sent.status_code == 201
    item = sent.get_json()["data"]
    assert item["state"] == "new" and item["reply"] == "" and item["reported_member_id"] is None and "member_id" not in item
    mine = client.get(API, headers=carol["headers"]).get_json()["data"]
    assert mine["total"] == 1 and mine["items"][0]["id"] == item["id"]
    dave = wx_login("dave")
    assert client.get(API, headers=dave["headers"]).get_json()["data"]["total"] == 0


def test_a_report_names_the_distributor_by_member_id_or_scene(client, wx_login, distributor, share_scene) -> None:
    alice = distributor("alice")
    carol = wx_login("carol")
    by_id = _send(client, carol, kind="report", category="false_advertising", body="夸大宣传疗效", distributor_member_id=alice["user"]["id"])
    assert by_id.status_code == 201 and by_id.get_json()["data"]["reported_member_id"] == alice["user"]["id"]
    scene = share_scene(alice["user"]["id"])
    by_scene = _send(client, carol, kind="report", category="harassment", body="反复骚扰", scene=scene)
    assert by_scene.status_code == 201
    assert by_scene.get_json()["data"]["reported_member_id"] == alice["user"]["id"] and by_scene.get_json()["data"]["scene"] == scene


@pytest.mark.parametrize("body,field", [
    ({"kind": "feedback", "category": "false_advertising"}, "category"),
    ({"kind": "report", "category": "suggestion", "distributor_member_id": 1}, "category"),
    ({"kind": "report", "category": "harassment"}, "distributor_member_id"),
    ({"kind": "report", "category": "harassment", "scene": "nosuchscene"}, "scene"),
    ({"kind": "report", "category": "harassment", "distributor_member_id": 999999}, "distributor_member_id"),
    ({"kind": "feedback", "category": "other", "distributor_member_id": 1}, "distributor_member_id"),
    ({"body": "   "}, "body"),
    ({"body": "x" * 2001}, "body"),
    ({"contact": "x" * 65}, "contact"),
    ({"kind": "praise"}, "kind"),
    ({"distributor_member_id": 0, "kind": "report", "category": "other"}, "distributor_member_id"),
    ({"scene": "a" * 33, "kind": "report", "category": "other"}, "scene"),
])
def test_bad_feedback_is_refused_and_stores_nothing(app, client, wx_login, body, field) -> None:
    carol = wx_login("carol")
    response = _send(client, carol, **body)
    assert response.status_code == 422, response.get_json()
    assert field in {e["field"] for e in response.get_json()["data"]["errors"]}
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(FeedbackItem)) == 0


def test_reporting_a_member_who_is_not_a_distributor_or_oneself_is_refused(client, wx_login, distributor) -> None:
    alice = distributor("alice")
    dave = wx_login("dave")
    carol = wx_login("carol")
    response = _send(client, carol, kind="report", category="other", distributor_member_id=dave["user"]["id"])
    assert response.status_code == 422
    own = _send(client, alice, kind="report", category="other", distributor_member_id=alice["user"]["id"])
    assert own.status_code == 422


def test_feedback_is_rate_limited_per_member(app_factory, wx_login) -> None:
    app = app_factory(FEEDBACK_RATE_LIMIT=2)
    client = app.test_client()
    carol = client.post("/api/v1/auth/wx-login", json={"code": "sandbox:carol"}).get_json()["data"]
    headers = {"Authorization": f"Bearer {carol['token']}"}
    body = {"kind": "feedback", "category": "service", "body": "客服回复慢"}
    assert [client.post(API, json=body, headers=headers).status_code for _ in range(3)] == [201, 201, 429]
    dave = client.post("/api/v1/auth/wx-login", json={"code": "sandbox:dave"}).get_json()["data"]
    assert client.post(API, json=body, headers={"Authorization": f"Bearer {dave['token']}"}).status_code == 201


def test_the_queue_moves_new_to_in_progress_to_resolved_with_a_reply_the_member_sees(app, client, wx_login, ops) -> None:
    carol = wx_login("carol")
    item_id = _send(client, carol).get_json()["data"]["id"]
    started = client.post(f"{ADMIN}/{item_id}/transitions", json={"action": "start"}, headers=ops)
    assert started.status_code == 200 and started.get_json()["data"]["state"] == "in_progress"
    assert started.get_json()["data"]["assignee_id"] is not None
    resolved = client.post(f"{ADMIN}/{item_id}/transitions", json={"action": "resolve", "reply": "已安排夜间配送试点"}, headers=ops)
    assert resolved.status_code == 200 and resolved.get_json()["data"]["closed_at"]
    mine = client.get(API, headers=carol["headers"]).get_json()["data"]["items"][0]
    assert mine["state"] == "resolved" and mine["reply"] == "已安排夜间配送试点" and mine["replied_at"]
    with app.app_context():
        actions = list(db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"feedback:{item_id}").order_by(AuditEntry.id)))
    assert actions == ["feedback.start", "feedback.resolve"]


@pytest.mark.parametrize("moves,refused", [
    (["resolve"], "resolve"),  # new cannot be resolved without being worked on
    (["dismiss", "start"], "start"),
    (["start", "resolve", "dismiss"], "dismiss"),
    (["start", "start"], "start"),
])
def test_illegal_moves_are_refused(client, wx_login, ops, moves, refused) -> None:
    carol = wx_login("carol")
    item_id = _send(client, carol).get_json()["data"]["id"]
    for action in moves[:-1]:
        assert client.post(f"{ADMIN}/{item_id}/transitions", json={"action": action}, headers=ops).status_code == 200
    response = client.post(f"{ADMIN}/{item_id}/transitions", json={"action": refused}, headers=ops)
    assert response.status_code == 409 and response.get_json()["code"] == 40990


def test_a_move_from_a_state_the_item_left_is_refused(client, wx_login, ops) -> None:
    carol = wx_login("carol")
    item_id = _send(client, carol).get_json()["data"]["id"]
    client.post(f"{ADMIN}/{item_id}/transitions", json={"action": "start"}, headers=ops)
    stale = client.post(f"{ADMIN}/{item_id}/transitions", json={"action": "dismiss", "expected_state": "new"}, headers=ops)
    assert stale.status_code == 409 and stale.get_json()["data"]["state"] == "in_progress"


def test_two_staff_moving_one_item_at_once_exactly_one_wins(app, client, wx_login, staff_login, make_staff) -> None:
    carol = wx_login("carol")
    item_id = _send(client, carol).get_json()["data"]["id"]
    first = staff_login("operations")
    make_staff("owner", username="second-owner")
    token = client.post("/admin/api/v1/auth/login", json={"username": "second-owner", "password": "correct-horse"}).get_json()["data"]["token"]
    second = {"Authorization": f"Bearer {token}"}
    barrier = threading.Barrier(2)
    answers: list[tuple[str, int]] = []

    def move(headers: dict[str, str], action: str) -> None:
        with app.test_client() as own:
            barrier.wait()
            answers.append((action, own.post(f"{ADMIN}/{item_id}/transitions", json={"action": action, "expected_state": "new"}, headers=headers).status_code))

    threads = [threading.Thread(target=move, args=(first, "start")), threading.Thread(target=move, args=(second, "dismiss"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(status for _a, status in answers) == [200, 409]
    winner = next(action for action, status in answers if status == 200)
    state = client.get(f"{ADMIN}/{item_id}", headers=first).get_json()["data"]["state"]
    assert state == {"start": "in_progress", "dismiss": "dismissed"}[winner]
    with app.app_context():
        moves = db.session().scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.target == f"feedback:{item_id}"))
    assert moves == 1


def test_the_admin_list_filters_by_state_kind_and_reported_distributor(client, wx_login, distributor, ops) -> None:
    alice = distributor("alice")
    carol = wx_login("carol")
    _send(client, carol)
    report = _send(client, carol, kind="report", category="false_advertising", body="虚假宣传", distributor_member_id=alice["user"]["id"])
    report_id = report.get_json()["data"]["id"]
    client.post(f"{ADMIN}/{report_id}/transitions", json={"action": "start"}, headers=ops)

    def ids(**query: Any) -> list[int]:
        response = client.get(ADMIN, query_string=query, headers=ops)
        assert response.status_code == 200, response.get_json()
        return [i["id"] for i in response.get_json()["data"]["items"]]

    assert len(ids()) == 2
    assert ids(kind="report") == [report_id] == ids(state="in_progress") == ids(reported_member_id=alice["user"]["id"])
    assert len(ids(state="new", kind="feedback")) == 1
    assert client.get(ADMIN, query_string={"state": "open"}, headers=ops).status_code == 422


def test_finance_has_no_queue(client, staff_login) -> None:
    finance = staff_login("finance")
    assert client.get(ADMIN, headers=finance).status_code == 403
    assert client.post(f"{ADMIN}/1/transitions", json={"action": "start"}, headers=finance).status_code == 403
