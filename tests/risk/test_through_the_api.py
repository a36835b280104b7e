"""The signals through the member API as clients reach it: sign-ins with a scene, shares and leads."""
from __future__ import annotations

from sqlalchemy import select

from server import db
from server.points.models import HoldState, RewardHold
from server.risk.models import RiskEvent, RiskIdentity, RiskReview


def scene_of(client, member) -> str:
    return client.post("/api/v1/referral/scenes", headers=member["headers"], json={}).get_json()["data"]["scene"]


def test_members_signing_in_from_one_address_under_one_sharer_are_a_cluster(app, client, wx_login):
    """The test client is always 127.0.0.1: five members brought by one sharer sign in from one place."""
    sharer = wx_login("farmer")
    scene = scene_of(client, sharer)
    for n in range(4):
        wx_login(f"fake-{n}", scene=scene)
    with app.app_context():
        sess = db.session()
        assert sess.scalar(select(RiskReview).where(RiskReview.event == RiskEvent.sign_in)) is None  # four is below the setting
        assert sess.scalar(select(RiskIdentity).where(RiskIdentity.kind == "client")) is not None
    wx_login("fake-4", scene=scene)
    with app.app_context():
        review = db.session().scalar(select(RiskReview).where(RiskReview.event == RiskEvent.sign_in))
        assert review is not None and review.member_id == sharer["user"]["id"]
        assert review.reasons[0]["signal"] == "client_cluster" and review.reasons[0]["detail"]["members"] == 5
        assert not review.held  # a sign-in holds nothing


def test_a_burst_of_similar_leads_holds_the_last_ones(app, client, wx_login):
    sharer = wx_login("lead-farmer")
    scene = scene_of(client, sharer)
    answers = []
    for n in range(5):
        visitor = wx_login(f"visitor-{n}")
        response = client.post("/api/v1/referral/leads", headers=visitor["headers"], json={"contact_name": "张先生", "phone": f"1391234{n:04d}", "scene": scene})
        assert response.status_code == 201, response.get_json()
        answers.append(response.get_json()["data"]["id"])
    with app.app_context():
        sess = db.session()
        held = set(sess.scalars(select(RewardHold.ref_id).where(RewardHold.subject == "lead", RewardHold.state == HoldState.held)))
        assert held == set(answers[3:])  # the fourth alike within the window and after
        assert {r.member_id for r in sess.scalars(select(RiskReview).where(RiskReview.event == RiskEvent.lead))} == {sharer["user"]["id"]}
