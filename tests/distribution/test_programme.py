"""The distributor programme rules: versions, live rates, placeholders, escaping, and acceptance when applying."""
from __future__ import annotations

from sqlalchemy import select

from server.accounts.models import AuditEntry
from server.distribution.models import RulesAcceptance

ADMIN = "/admin/api/v1/distributor-rules"
BODY = "## 奖励\n一级奖励 {{reward_level1_first_bp}}，二级 {{ level2_reward }}。\n\n- 积分价值：{{points_value}}\n- 一级折扣：{{tier1_discount}}"


def draft(client, headers, body=BODY, title="推广员规则"):
    response = client.post(ADMIN, json={"title": title, "body": body}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["data"]


def publish(client, headers, rules_id):
    response = client.post(f"{ADMIN}/{rules_id}/publish", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def test_drafts_publish_as_numbered_versions_and_published_ones_never_change(client, owner, ops, sess):
    first = draft(client, ops)
    assert first["status"] == "draft" and first["number"] is None and not first["current"]
    edited = client.patch(f"{ADMIN}/{first['id']}", json={"title": "规则 v1"}, headers=ops)
    assert edited.status_code == 200 and edited.get_json()["data"]["title"] == "规则 v1"
    one = publish(client, ops, first["id"])
    assert one["number"] == 1 and one["current"] and one["published_at"]

    refused = client.patch(f"{ADMIN}/{first['id']}", json={"body": "新的文字"}, headers=ops)
    assert refused.status_code == 409 and refused.get_json()["code"] == 40936
    again = client.post(f"{ADMIN}/{first['id']}/publish", headers=ops)
    assert again.status_code == 409 and again.get_json()["code"] == 40936

    second = draft(client, owner, body="第二版 {{reward_level1_repeat_bp}}")
    two = publish(client, owner, second["id"])
    assert two["number"] == 2 and two["current"]
    listing = client.get(ADMIN, headers=ops).get_json()["data"]
    assert [(r["number"], r["current"]) for r in listing["items"]] == [(2, True), (1, False)]
    assert listing["current_id"] == second["id"]
    assert client.get(f"{ADMIN}/{first['id']}", headers=ops).get_json()["data"]["body"] == BODY

    with sess() as s:
        published = s.scalars(select(AuditEntry).where(AuditEntry.action == "programme_rules.publish").order_by(AuditEntry.id)).all()
        assert [(a.target, a.detail["number"]) for a in published] == [(f"programme_rules:{first['id']}", 1), (f"programme_rules:{second['id']}", 2)]


def test_placeholders_read_the_live_settings(client, owner, ops, wx_login):
    publish(client, ops, draft(client, ops)["id"])
    alice = wx_login("alice")
    shown = client.get("/api/v1/distributors/rules", headers=alice["headers"]).get_json()["data"]
    assert shown["number"] == 1
    assert "一级奖励 0.5%，二级 一级奖励的 10%。" in shown["rendered"]["text"]
    rates = {r["key"]: r["value"] for r in shown["rendered"]["rates"]}
    assert rates["reward_level1_first_bp"] == "0.5%" and rates["points_value"] == "1 积分 = ¥1" and rates["tier1_discount"] == "5%"
    assert '<table class="rates">' in shown["rendered"]["html"] and "<h3>奖励</h3>" in shown["rendered"]["html"]

    assert client.put("/admin/api/v1/settings/reward_level1_first_bp", json={"value": 80}, headers=owner).status_code == 200
    assert client.put("/admin/api/v1/settings/reward_direct_only", json={"value": True}, headers=owner).status_code == 200
    assert client.patch("/admin/api/v1/distributor-tiers/1", json={"discount_bp": 750}, headers=owner).status_code == 200
    shown = client.get("/api/v1/distributors/rules", headers=alice["headers"]).get_json()["data"]
    assert "一级奖励 0.8%，二级 不发放（仅直推）。" in shown["rendered"]["text"]
    rates = {r["key"]: r["value"] for r in shown["rendered"]["rates"]}
    assert rates["reward_level1_first_bp"] == "0.8%" and rates["tier1_discount"] == "7.5%"
    assert "<li>一级折扣：7.5%</li>" in shown["rendered"]["html"]


def test_unknown_placeholders_are_refused_by_name(client, ops):
    response = client.post(ADMIN, json={"title": "规则", "body": "奖励 {{level1_rate}} 与 {{ nope }} 和 {{reward_level1_first_bp}}"}, headers=ops)
    assert response.status_code == 422
    body = response.get_json()
    assert body["data"]["unknown"] == ["level1_rate", "nope"]
    assert "{{level1_rate}}" in body["data"]["errors"][0]["error"] and body["data"]["errors"][0]["field"] == "body"
    rules = draft(client, ops, body="好的")
    patched = client.patch(f"{ADMIN}/{rules['id']}", json={"body": "{{bad-name}}"}, headers=ops)
    assert patched.status_code == 422 and patched.get_json()["data"]["unknown"] == ["bad-name"]
    assert client.get(ADMIN, headers=ops).get_json()["data"]["items"][0]["body"] == "好的"


def test_staff_html_is_escaped(client, ops, wx_login):
    rules = draft(client, ops, body='<script>alert(1)</script> **重要** <b onclick="x">粗</b>\n第二行')
    publish(client, ops, rules["id"])
    html = client.get("/api/v1/distributors/rules", headers=wx_login("bob")["headers"]).get_json()["data"]["rendered"]["html"]
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b " not in html
    assert "<strong>重要</strong>" in html and "<br>第二行" in html


def test_no_published_rules_means_null_and_applying_as_before(client, wx_login, apply, ops):
    alice = wx_login("alice")
    assert client.get("/api/v1/distributors/rules", headers=alice["headers"]).get_json()["data"] is None
    draft(client, ops)  # a draft is not current
    assert client.get("/api/v1/distributors/rules", headers=alice["headers"]).get_json()["data"] is None
    response = apply(alice)
    assert response.status_code == 201 and response.get_json()["data"]["rules_acceptance"] is None
    stale = apply(wx_login("bob"), rules_version=1)
    assert stale.status_code == 409 and stale.get_json()["code"] == 40935 and stale.get_json()["data"]["current_version"] is None


def test_applying_accepts_the_current_version(client, wx_login, apply, ops, sess):
    first = publish(client, ops, draft(client, ops)["id"])
    alice = wx_login("alice")
    missing = apply(alice)
    assert missing.status_code == 400 and missing.get_json()["code"] == 40030
    assert missing.get_json()["data"] == {"current_version": 1}

    publish(client, ops, draft(client, ops, body="第二版")["id"])
    stale = apply(alice, rules_version=first["number"])
    assert stale.status_code == 409 and stale.get_json()["code"] == 40935
    assert stale.get_json()["data"] == {"current_version": 2, "rules_version": 1}
    with sess() as s:
        assert s.scalars(select(RulesAcceptance)).all() == []

    accepted = apply(alice, rules_version=2)
    assert accepted.status_code == 201, accepted.get_json()
    record = accepted.get_json()["data"]
    assert record["rules_acceptance"]["rules_version"] == 2 and "client_address" not in record["rules_acceptance"]
    staff_view = client.get(f"/admin/api/v1/distributors/{record['id']}", headers=ops).get_json()["data"]
    assert staff_view["rules_acceptance"]["rules_version"] == 2 and staff_view["rules_acceptance"]["client_address"] == "127.0.0.1"
    with sess() as s:
        rows = s.scalars(select(RulesAcceptance)).all()
        assert [(r.member_id, r.client_address) for r in rows] == [(alice["user"]["id"], "127.0.0.1")]


def test_bad_input_is_a_clear_error(client, ops, apply, wx_login):
    for payload in ({"title": "", "body": "x"}, {"title": "x", "body": "   "}, {"title": "x" * 65, "body": "x"}, {"title": "x"}, {"title": "x", "body": 5}):
        response = client.post(ADMIN, json=payload, headers=ops)
        assert response.status_code == 422 and response.get_json()["data"]["errors"], payload
    assert client.get(f"{ADMIN}/999999", headers=ops).get_json()["code"] == 40436
    assert client.post(f"{ADMIN}/999999/publish", headers=ops).status_code == 404
    alice = wx_login("alice")
    for version in (0, -1, "2", True, 1.5):
        assert apply(alice, rules_version=version).status_code == 422, version


def test_finance_cannot_touch_the_rules(client, staff_login):
    finance = staff_login("finance")
    assert client.get(ADMIN, headers=finance).status_code == 403
    assert client.post(ADMIN, json={"title": "x", "body": "y"}, headers=finance).status_code == 403


def test_concurrent_publishes_get_distinct_numbers(app, client, ops):
    """Two drafts published at once: the publish lock numbers them 1 and 2, neither fails."""
    import threading

    ids = [draft(client, ops, title=f"版本{n}")["id"] for n in range(2)]
    results: list[tuple[int, int | None]] = []
    barrier = threading.Barrier(len(ids))

    def publish_one(rules_id: int) -> None:
        local = app.test_client()
        barrier.wait()
        response = local.post(f"{ADMIN}/{rules_id}/publish", headers=ops)
        results.append((response.status_code, (response.get_json()["data"] or {}).get("number")))

    threads = [threading.Thread(target=publish_one, args=(rules_id,)) for rules_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [(200, 1), (200, 2)]
