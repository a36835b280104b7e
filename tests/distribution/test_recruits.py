"""A tier-1 distributor's recruits: the tier-2 distributors they brought in, with their own sales, and the
recruiter's own recruiting limit."""
from __future__ import annotations

from server import db
from server.accounts.models import Member
from tests.points import make_member, make_sku, pay, place


def _recruits(client, member, query=""):
    response = client.get(f"/api/v1/distributors/me/recruits{query}", headers=member["headers"])
    return response.status_code, response.get_json()


def test_recruiter_sees_recruits_with_their_own_sales_and_the_places_left(client, distributor, wx_login, apply, decide, share_scene, owner, sess):
    assert client.patch("/admin/api/v1/distributor-tiers/1", json={"max_recruits": 3}, headers=owner).status_code == 200
    alice = distributor("alice")
    scene = share_scene(alice["user"]["id"])
    bob = wx_login("bob", scene=scene)
    bob_app = apply(bob).get_json()["data"]
    decide(bob_app["id"], "approve")
    carol = wx_login("carol", scene=scene)
    carol_app = apply(carol).get_json()["data"]
    decide(carol_app["id"], "reject", reason="资料不全")
    with sess() as s:
        seller = s.get(Member, bob["user"]["id"])
        sku = make_sku(s, price_fen=12_300)
        pay(s, place(s, make_member(s, "buyer-of-bob", inviter=seller), sku))
        # Alice's own buyer: her sales are hers, never counted as a recruit's.
        pay(s, place(s, make_member(s, "buyer-of-alice", inviter=s.get(Member, alice["user"]["id"])), make_sku(s, price_fen=999)))
        db.commit()

    status, body = _recruits(client, alice)
    assert status == 200, body
    data = body["data"]
    assert data["total"] == 2
    by_status = {item["status"]: item for item in data["items"]}
    assert by_status["approved"]["sales_fen"] == 12_300 and by_status["approved"]["tier"] == 2
    assert by_status["rejected"]["sales_fen"] == 0
    assert all("*" in item["nickname"] for item in data["items"])
    assert "member_id" not in data["items"][0] and "phone" not in data["items"][0]
    # The rejected recruit gave her place back: one of three is taken.
    assert data["limit"] == {"can_recruit": True, "max_recruits": 3, "live_recruits": 1, "remaining": 2}

    status, body = _recruits(client, alice, "?page=2&page_size=1")
    assert status == 200 and len(body["data"]["items"]) == 1 and body["data"]["page"] == 2


def test_a_tier_two_distributor_recruits_nobody_and_an_applicant_of_nothing_is_told_so(client, distributor, wx_login, apply, share_scene):
    alice = distributor("alice")
    bob = distributor("bob", scene=share_scene(alice["user"]["id"]))
    assert bob["distributor"]["tier"] == 2
    status, body = _recruits(client, bob)
    assert status == 200
    assert body["data"]["items"] == [] and body["data"]["limit"]["can_recruit"] is False and body["data"]["limit"]["remaining"] == 0

    dave = wx_login("dave")
    status, body = _recruits(client, dave)
    assert status == 404 and body["code"] == 40430
    status, body = _recruits(client, alice, "?page=0")
    assert status == 422


def test_no_limit_reads_as_unlimited(client, distributor, owner):
    assert client.patch("/admin/api/v1/distributor-tiers/1", json={"max_recruits": 0}, headers=owner).status_code == 200
    alice = distributor("alice")
    status, body = _recruits(client, alice)
    assert body["data"]["limit"] == {"can_recruit": True, "max_recruits": 0, "live_recruits": 0, "remaining": None}
