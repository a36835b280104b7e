"""The lead pool, partner channels and the H5 landing page."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from server import db
from server.db import utcnow
from server.referral.models import Lead, PartnerCommission, Scene, TouchEvent, TouchKind


def test_new_member_through_a_share_is_a_lead_for_the_sharer(client, wx_login, scene_of, staff_login):
    alice = wx_login("alice")
    bob = wx_login("bob", scene=scene_of(alice))
    wx_login("bob", scene=scene_of(alice))  # signing in again never opens a second lead
    existing = wx_login("carol")
    wx_login("carol", scene=scene_of(alice))  # not new to the shop: no lead
    ops = staff_login("operations")
    leads = client.get("/admin/api/v1/leads", headers=ops).get_json()["data"]
    assert leads["total"] == 1
    lead = leads["items"][0]
    assert lead["member_id"] == bob["user"]["id"] and lead["sharer_id"] == alice["user"]["id"]
    assert lead["source"] == "arrival" and lead["status"] == "new" and lead["channel"] == "miniprogram_code"
    assert existing["user"]["id"] != lead["member_id"]


def test_operations_reviews_a_lead_once(app, client, wx_login, scene_of, staff_login):
    alice = wx_login("alice")
    bob = wx_login("bob", scene=scene_of(alice))
    client.post("/api/v1/referral/leads", headers=bob["headers"], json={"contact_name": "王先生", "phone": "13912345678", "note": "想要报价"})
    ops, finance = staff_login("operations"), staff_login("finance")
    lead_id = client.get("/admin/api/v1/leads", headers=ops, query_string={"source": "contact"}).get_json()["data"]["items"][0]["id"]
    assert client.post(f"/admin/api/v1/leads/{lead_id}/review", headers=finance, json={"status": "valid"}).status_code == 403
    assert client.post(f"/admin/api/v1/leads/{lead_id}/review", headers=ops, json={"status": "new"}).status_code == 422
    ok = client.post(f"/admin/api/v1/leads/{lead_id}/review", headers=ops, json={"status": "valid", "note": "called back"})
    assert ok.status_code == 200 and ok.get_json()["data"]["status"] == "valid"
    again = client.post(f"/admin/api/v1/leads/{lead_id}/review", headers=ops, json={"status": "invalid"})
    assert again.status_code == 409 and again.get_json()["code"] == 40920
    detail = client.get(f"/admin/api/v1/leads/{lead_id}", headers=ops).get_json()["data"]
    assert [e["event"] for e in detail["timeline"]][-1] == "lead_reviewed"
    assert client.get("/admin/api/v1/leads", headers=ops, query_string={"status": "valid"}).get_json()["data"]["total"] == 1
    assert client.get("/admin/api/v1/leads", headers=ops, query_string={"status": "bogus"}).status_code == 422


def test_member_leaves_contact_details(app, client, wx_login, scene_of, staff_login):
    alice = wx_login("alice")
    bob = wx_login("bob", scene=scene_of(alice))
    response = client.post(
        "/api/v1/referral/leads", headers=bob["headers"], json={"contact_name": "王先生", "phone": "13912345678", "note": "想要报价"}
    )
    assert response.status_code == 201
    ops = staff_login("operations")
    leads = client.get("/admin/api/v1/leads", headers=ops, query_string={"source": "contact"}).get_json()["data"]["items"]
    assert leads[0]["sharer_id"] == alice["user"]["id"]  # attributed to bob's inviter
    assert leads[0]["contact_phone"] == "139****5678" and leads[0]["contact_name"] == "王先生"
    bad = client.post("/api/v1/referral/leads", headers=bob["headers"], json={"contact_name": "x", "phone": "call me"})
    assert bad.status_code == 422


def test_landing_records_visits_and_takes_a_contact_form(app, client, wx_login, scene_of, staff_login):
    alice = wx_login("alice")
    client.patch("/api/v1/me", headers=alice["headers"], json={"nickname": "爱丽丝"})
    code = scene_of(alice, "moments_poster")
    page = client.get(f"/s/{code}", headers={"User-Agent": "MicroMessenger"})
    assert page.status_code == 200 and "text/html" in page.content_type
    # The sharer wants to be recognised on her own share page: her name is shown whole.
    assert "爱丽丝 邀请你" in page.get_data(as_text=True)
    assert client.get("/s/doesNotExist").status_code == 404
    assert client.get("/s/bad%20scene").status_code == 404
    sent = client.post(f"/s/{code}/lead", data={"contact_name": "李女士", "phone": "13700001111", "note": ""})
    assert sent.status_code == 200 and "已收到" in sent.get_data(as_text=True)
    with app.app_context():
        sess = db.session()
        visits = sess.scalars(select(TouchEvent).where(TouchEvent.kind == TouchKind.visit).order_by(TouchEvent.id)).all()
        assert [v.scene for v in visits] == [code, "doesNotExist"]  # dead scenes are visits too, for the record
        assert visits[0].actor.startswith("visitor:") and visits[0].channel == "moments_poster"
        assert visits[1].detail["state"] == "unknown_scene"
        lead = sess.scalars(select(Lead)).one()
        assert lead.sharer_id == alice["user"]["id"] and lead.member_id is None and lead.channel == "moments_poster"


def test_landing_shows_the_sharers_name_as_text(client, wx_login, scene_of):
    alice = wx_login("alice")
    client.patch("/api/v1/me", headers=alice["headers"], json={"nickname": "<b>爱丽丝</b>"})
    page = client.get(f"/s/{scene_of(alice, 'h5_link')}").get_data(as_text=True)
    assert "&lt;b&gt;爱丽丝&lt;/b&gt; 邀请你" in page and "<b>" not in page


def test_partner_channel_leads_earn_the_partner_not_members(app, client, wx_login, staff_login):
    ops, finance = staff_login("operations"), staff_login("finance")
    created = client.post(
        "/admin/api/v1/partners",
        headers=ops,
        json={"name": "知乎·产品圈", "platform": "zhihu", "commission_mode": "per_lead", "per_lead_fen": 5000},
    )
    assert created.status_code == 201
    partner_id = created.get_json()["data"]["id"]
    dup = client.post("/admin/api/v1/partners", headers=ops, json={"name": "知乎·产品圈", "commission_mode": "per_lead"})
    assert dup.status_code == 409
    link = client.post(f"/admin/api/v1/partners/{partner_id}/scenes", headers=ops, json={}).get_json()["data"]
    assert link["channel"] == "partner" and link["h5_url"].endswith(f"/s/{link['scene']}")

    eve = wx_login("eve", scene=link["scene"])
    assert eve["binding"]["bound"] is False and eve["binding"]["reason"] == "partner_channel"
    assert client.get("/api/v1/me", headers=eve["headers"]).get_json()["data"]["inviter"] is None
    lead = client.get("/admin/api/v1/leads", headers=ops, query_string={"partner_id": partner_id}).get_json()["data"]["items"][0]
    assert lead["sharer_id"] is None and lead["member_id"] == eve["user"]["id"]
    client.post(f"/admin/api/v1/leads/{lead['id']}/review", headers=ops, json={"status": "valid"})

    statement = client.get(f"/admin/api/v1/partners/{partner_id}/statement", headers=finance).get_json()["data"]
    assert statement["leads"] == 1 and statement["total_fen"] == 5000
    assert statement["lines"][0]["kind"] == "lead"
    window = client.get(
        f"/admin/api/v1/partners/{partner_id}/statement", headers=finance, query_string={"to": "2000-01-01T00:00:00"}
    ).get_json()["data"]
    assert window["total_fen"] == 0


def test_partner_deal_commission_is_floored_and_recorded_once(app, client, staff_login):
    from server.referral.services import record_partner_deal

    ops = staff_login("operations")
    partner_id = client.post(
        "/admin/api/v1/partners", headers=ops, json={"name": "外包公众号", "commission_mode": "per_deal", "deal_rate_bp": 150}
    ).get_json()["data"]["id"]
    with app.app_context():
        sess = db.session()
        first = record_partner_deal(sess, partner_id, "contract-9", 123_457)
        again = record_partner_deal(sess, partner_id, "contract-9", 123_457)
        db.commit()
        assert first.amount_fen == 1851  # 1.5% of 1234.57 yuan, floored to the fen
        assert again.id == first.id
        assert len(db.session().scalars(select(PartnerCommission)).all()) == 1


def test_a_member_may_leave_contact_details_more_than_once(client, wx_login):
    bob = wx_login("bob")
    for note in ("first", "second"):
        response = client.post("/api/v1/referral/leads", headers=bob["headers"], json={"contact_name": "鲍勃", "phone": "13912345678", "note": note})
        assert response.status_code == 201, response.get_json()


def test_statement_window_out_of_range_is_a_422(client, staff_login):
    ops = staff_login("operations")
    pid = client.post("/admin/api/v1/partners", headers=ops, json={"name": "p", "commission_mode": "per_lead"}).get_json()["data"]["id"]
    response = client.get(f"/admin/api/v1/partners/{pid}/statement", headers=ops, query_string={"from": "9999-12-31T23:59:59-23:59"})
    assert response.status_code == 422 and response.get_json()["data"]["errors"]


# -- abuse that would cost the merchant ---------------------------------------------------------


def visit_rows(app, code):
    with app.app_context():
        return db.session().scalars(select(TouchEvent).where(TouchEvent.kind == TouchKind.visit, TouchEvent.scene == code)).all()


def test_a_visit_is_recorded_once_per_visitor_scene_and_day(app, client, wx_login, scene_of):
    code = scene_of(wx_login("alice"), "h5_link")
    for _ in range(30):
        assert client.get(f"/s/{code}", headers={"User-Agent": "MicroMessenger"}).status_code == 200
    assert len(visit_rows(app, code)) == 1
    # Another visitor (another phone) is another visit.
    client.get(f"/s/{code}", headers={"User-Agent": "Mozilla/5.0 Android"})
    assert len(visit_rows(app, code)) == 2


def test_a_visit_already_on_the_timeline_today_is_not_recorded_again_when_the_counter_is_lost(app_factory, wx_login, scene_of):
    first = app_factory()
    code = scene_of(wx_login("alice"), "h5_link")
    first.test_client().get(f"/s/{code}")
    restarted = app_factory()  # a new process: without Redis its counters start empty
    if restarted.extensions["redis"] is not None:
        restarted.extensions["redis"].flushdb()
    restarted.test_client().get(f"/s/{code}")
    assert len(visit_rows(first, code)) == 1


def test_a_visit_on_another_day_is_recorded_again(app, client, wx_login, scene_of):
    code = scene_of(wx_login("alice"), "h5_link")
    client.get(f"/s/{code}")
    with app.app_context():
        db.session().execute(update(TouchEvent).where(TouchEvent.scene == code).values(created_at=utcnow() - timedelta(days=1)))
        db.commit()
        app.extensions["local_counters"] = type(app.extensions["local_counters"])()
        if app.extensions["redis"] is not None:
            app.extensions["redis"].flushdb()
    client.get(f"/s/{code}")
    assert len(visit_rows(app, code)) == 2


def test_the_landing_page_is_rate_limited_per_address(app_factory, wx_login, scene_of):
    app = app_factory(LANDING_RATE_LIMIT=5)
    client = app.test_client()
    code = scene_of(wx_login("alice"), "h5_link")
    statuses = [client.get(f"/s/{code}", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429, 429]
    # Random scenes from the same address are no way round it.
    assert client.get("/s/randomScene1", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 429
    limited = client.get(f"/s/{code}", environ_base={"REMOTE_ADDR": "203.0.113.7"}).get_json()
    assert limited["code"] == 42900 and limited["data"]["retry_after_seconds"] == 60
    assert client.get(f"/s/{code}", environ_base={"REMOTE_ADDR": "198.51.100.9"}).status_code == 200


def test_a_member_creates_at_most_the_daily_number_of_scenes(app, client, wx_login, set_setting):
    set_setting("scene_daily_limit", 3)
    alice = wx_login("alice")
    made = [
        client.post("/api/v1/referral/scenes", headers=alice["headers"], json={"content_type": "product", "content_id": str(n)})
        for n in range(4)
    ]
    assert [r.status_code for r in made] == [200, 200, 200, 429]
    refused = made[-1].get_json()
    assert refused["code"] == 42901 and refused["data"]["limit"] == 3 and 0 < refused["data"]["retry_after_seconds"] <= 86400
    # Asking again for a live scene creates nothing, so it is never refused.
    again = client.post("/api/v1/referral/scenes", headers=alice["headers"], json={"content_type": "product", "content_id": "0"})
    assert again.status_code == 200 and again.get_json()["data"]["scene"] == made[0].get_json()["data"]["scene"]
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(Scene)) == 3
    bob = wx_login("bob")
    assert client.post("/api/v1/referral/scenes", headers=bob["headers"], json={}).status_code == 200
