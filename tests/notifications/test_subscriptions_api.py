"""POST and GET /api/v1/subscriptions: acceptances become allowances, strictly validated."""
from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.notifications.conftest import TEMPLATES

SHIPPED = TEMPLATES["order_shipped"]


def report(client: FlaskClient, who: Any, *results: tuple[str, str]) -> Any:
    return client.post("/api/v1/subscriptions", headers=who.headers, json={"results": [{"template_id": t, "result": r} for t, r in results]})


def test_each_acceptance_is_one_allowance_and_a_refusal_none(client: FlaskClient, notify, person) -> None:
    notify("order_shipped")
    alice = person()
    first = report(client, alice, (SHIPPED, "accept"))
    assert first.status_code == 200
    assert first.get_json()["data"]["results"] == [{"template_id": SHIPPED, "result": "accept", "remaining": 1}]
    assert report(client, alice, (SHIPPED, "accept")).get_json()["data"]["results"][0]["remaining"] == 2
    for refusal in ("reject", "ban", "filter"):
        assert report(client, alice, (SHIPPED, refusal)).get_json()["data"]["results"][0]["remaining"] == 2
    # Another member's acceptances are their own.
    assert report(client, person(), (SHIPPED, "reject")).get_json()["data"]["results"][0]["remaining"] == 0
    listed = client.get("/api/v1/subscriptions", headers=alice.headers).get_json()["data"]["events"]
    assert listed == [{"event": "order_shipped", "template_id": SHIPPED, "remaining": 2}]
    # Two calls' results reported together: each acceptance counts.
    both = report(client, alice, (SHIPPED, "accept"), (SHIPPED, "reject"), (SHIPPED, "accept")).get_json()["data"]
    assert [r["remaining"] for r in both["results"]] == [4, 4, 4]


def test_only_the_events_switched_on_are_listed(client: FlaskClient, notify, person) -> None:
    alice = person()
    assert client.get("/api/v1/subscriptions", headers=alice.headers).get_json()["data"]["events"] == []
    notify("lead_valid")
    notify("refund_result")
    events = client.get("/api/v1/subscriptions", headers=alice.headers).get_json()["data"]["events"]
    assert [e["event"] for e in events] == ["refund_result", "lead_valid"]
    assert all(e["remaining"] == 0 for e in events)


@pytest.mark.parametrize("body", [
    {},
    {"results": []},
    {"results": [{"template_id": SHIPPED, "result": "accepted"}]},
    {"results": [{"template_id": SHIPPED, "result": "accept", "extra": 1}]},
    {"results": [{"template_id": "", "result": "accept"}]},
    {"results": [{"template_id": "x" * 65, "result": "accept"}]},
    {"results": [{"template_id": "有中文", "result": "accept"}]},
    {"results": [{"template_id": "Q2*", "result": "accept"}]},  # good characters around a bad one
    {"results": [{"template_id": "*Q2", "result": "accept"}]},
    {"results": [{"template_id": 12, "result": "accept"}]},
    {"results": [{"template_id": f"t{i}", "result": "accept"} for i in range(21)]},
    {"results": {"template_id": SHIPPED, "result": "accept"}},
    {"results": [None]},
])
def test_a_bad_report_is_refused_and_records_nothing(client: FlaskClient, person, body: dict[str, Any]) -> None:
    alice = person()
    response = client.post("/api/v1/subscriptions", headers=alice.headers, json=body)
    assert response.status_code == 422 and response.get_json()["code"] == 42200
    assert client.post("/api/v1/subscriptions", headers=alice.headers, json={"results": [{"template_id": SHIPPED, "result": "reject"}]}).get_json()["data"]["results"][0]["remaining"] == 0


def test_not_json_or_not_signed_in(client: FlaskClient, person) -> None:
    alice = person()
    assert client.post("/api/v1/subscriptions", headers=alice.headers, data="[1,2]").status_code == 400
    assert client.post("/api/v1/subscriptions", headers=alice.headers, data="nope").status_code == 400
    assert client.post("/api/v1/subscriptions", json={"results": [{"template_id": SHIPPED, "result": "accept"}]}).status_code == 401
    assert client.get("/api/v1/subscriptions").status_code == 401
