"""The console's notifications page: owner and operations see every message with its state and reason,
filter them, and send a dropped or failed one again; finance is refused."""
from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server import db
from server.accounts.models import AuditEntry
from server.notifications.models import OutboxState
from tests.console.conftest import console  # noqa: F401  (the console's signed-in browser)
from tests.notifications.conftest import Sandbox, outbox
from tests.notifications.test_outbox import paid_order, ship_order


def test_owner_and_operations_see_each_message_and_why_it_was_not_sent(app: Flask, console: Any, notify, person, subscribe, sandbox_messages: Sandbox) -> None:
    notify("order_shipped")
    sent_to, dropped_for = person(), person()
    subscribe(sent_to, "order_shipped")
    ship_order(app, paid_order(app, sent_to))
    ship_order(app, paid_order(app, dropped_for))
    sent, dropped = outbox(app)
    for role in ("owner", "operations"):
        page = console(role).get("/console/notifications")
        assert page.status_code == 200
        assert f"notification-{sent.id}" in page.text and f"notification-{dropped.id}" in page.text
        assert "已发送" in page.text and "未发出" in page.text and "订单发货" in page.text
        assert "no subscription left for the template" in page.text
        assert 'href="/console/notifications"' in page.text  # in the navigation
    ops = console("operations", username="ops-filter")
    only_dropped = ops.get("/console/notifications?state=dropped")
    assert f"notification-{dropped.id}" in only_dropped.text and f"notification-{sent.id}" not in only_dropped.text
    by_member = ops.get(f"/console/notifications?member={sent_to.id}&event=order_shipped")
    assert f"notification-{sent.id}" in by_member.text and f"notification-{dropped.id}" not in by_member.text
    odd = ops.get("/console/notifications?state=lost&member=abc&page=x")
    assert odd.status_code == 200 and "未知的状态" in odd.text and "会员 ID 应为数字" in odd.text


def test_finance_is_refused(console: Any) -> None:
    finance = console("finance")
    assert finance.get("/console/notifications").status_code == 403
    assert 'href="/console/notifications"' not in finance.get("/console/").text


def test_a_dropped_message_is_sent_again_once_the_member_has_an_allowance(app: Flask, console: Any, notify, person, subscribe, sandbox_messages: Sandbox) -> None:
    notify("order_shipped")
    buyer = person()
    ship_order(app, paid_order(app, buyer))
    [row] = outbox(app)
    assert row.state == OutboxState.dropped
    subscribe(buyer, "order_shipped")
    ops = console("operations")
    ops.get("/console/notifications")
    resent = ops.post(f"/console/notifications/{row.id}/resend", {"back": "/console/notifications?state=dropped"})
    assert resent.status_code == 303 and resent.headers["Location"] == "/console/notifications?state=dropped"
    [row] = outbox(app)
    assert row.state == OutboxState.sent and row.attempts == 1
    assert len(sandbox_messages.messages(buyer.openid)) == 1
    with app.app_context():
        assert db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"notification:{row.id}")).all() == ["notification.resend"]
    again = ops.post(f"/console/notifications/{row.id}/resend", {})
    assert again.status_code == 409 and "不能重发" in again.text
    assert ops.post("/console/notifications/999999/resend", {}).status_code == 404


def test_the_admin_api_lists_and_resends(app: Flask, client: FlaskClient, staff_login: Any, notify, person, subscribe, sandbox_messages: Sandbox) -> None:
    notify("order_shipped")
    buyer = person()
    ship_order(app, paid_order(app, buyer))
    ops = staff_login("operations")
    listed = client.get("/admin/api/v1/notifications", headers=ops, query_string={"state": "dropped"}).get_json()["data"]
    assert listed["total"] == 1 and listed["items"][0]["reason"] == "no subscription left for the template"
    assert listed["items"][0]["data"]["phrase4"] == "已发货" and listed["items"][0]["channel"] is None
    subscribe(buyer, "order_shipped")
    outbox_id = listed["items"][0]["id"]
    resent = client.post(f"/admin/api/v1/notifications/{outbox_id}/resend", headers=ops)
    assert resent.status_code == 200 and resent.get_json()["data"]["state"] == "queued"
    assert client.get("/admin/api/v1/notifications", headers=ops, query_string={"state": "sent"}).get_json()["data"]["total"] == 1
    conflict = client.post(f"/admin/api/v1/notifications/{outbox_id}/resend", headers=ops)
    assert conflict.status_code == 409 and conflict.get_json() == {"code": 40970, "message": "only a dropped or failed notification can be sent again", "data": {"state": "sent"}}
    assert client.post("/admin/api/v1/notifications/999999/resend", headers=ops).get_json()["code"] == 40470
    assert client.get("/admin/api/v1/notifications", headers=staff_login("finance")).status_code == 403
    assert client.get("/admin/api/v1/notifications", headers=ops, query_string={"state": "lost"}).status_code == 422
