"""The two-level chain: who binds to whom, what is refused, and what the timeline shows."""
from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, insert, select, update

from server import db
from server.accounts.models import Member
from server.db import utcnow
from server.referral.models import Binding, Channel, Scene
from server.referral.services import create_scene, is_ancestor
from server.wechat.formats import SCENE_RE


def me(client, member):
    return client.get("/api/v1/me", headers=member["headers"]).get_json()["data"]


def team(client, member, **params):
    return client.get("/api/v1/referral/team", headers=member["headers"], query_string=params).get_json()["data"]


def test_scene_is_opaque_and_in_wechat_charset(client, wx_login, scene_of):
    alice = wx_login("alice")
    code = scene_of(alice)
    assert SCENE_RE.fullmatch(code) and len(code) <= 32
    assert scene_of(alice) == code  # the same live scene for the same channel and content
    assert scene_of(alice, "h5_link") != code
    assert scene_of(alice, content_type="product", content_id="7") != code


def test_two_level_chain_and_team(client, wx_login, scene_of):
    alice = wx_login("alice")
    bob = wx_login("bob", scene=scene_of(alice))
    assert bob["binding"] == {"bound": True, "changed": True, "reason": None, "inviter": {"id": alice["user"]["id"], "nickname": "微信用户"}}
    carol = wx_login("carol", scene=scene_of(bob))
    dave = wx_login("dave", scene=scene_of(carol))

    assert me(client, bob)["inviter"]["id"] == alice["user"]["id"]
    assert me(client, carol)["inviter"]["id"] == bob["user"]["id"]
    assert me(client, dave)["inviter"]["id"] == carol["user"]["id"]
    assert me(client, alice)["inviter"] is None

    alice_team = team(client, alice)
    assert [m["id"] for m in alice_team["direct"]] == [bob["user"]["id"]]
    assert [m["id"] for m in alice_team["indirect"]] == [carol["user"]["id"]]
    assert alice_team["total_direct"] == 1 and alice_team["total_indirect"] == 1
    everyone = {m["id"] for m in alice_team["direct"] + alice_team["indirect"]}
    assert dave["user"]["id"] not in everyone

    item = alice_team["direct"][0]
    assert item["nickname"] == "微**户"  # masked
    assert set(item) >= {"id", "nickname", "joined_at", "orders", "amount_fen"}


def test_cycles_and_self_are_refused_without_failing_sign_in(client, wx_login, scene_of):
    alice = wx_login("alice")
    bob = wx_login("bob", scene=scene_of(alice))
    carol = wx_login("carol", scene=scene_of(bob))
    dave = wx_login("dave", scene=scene_of(carol))

    again = wx_login("alice", scene=scene_of(dave))
    assert again["binding"]["bound"] is False and again["binding"]["reason"] == "cycle"
    assert me(client, alice)["inviter"] is None

    own = wx_login("alice", scene=scene_of(alice))
    assert own["binding"]["reason"] == "self"
    assert me(client, alice)["inviter"] is None


def test_cycle_refused_under_last_touch_too(client, wx_login, scene_of, set_setting):
    set_setting("binding_policy", "last_touch")
    alice = wx_login("alice")
    bob = wx_login("bob", scene=scene_of(alice))
    carol = wx_login("carol", scene=scene_of(bob))
    response = client.post("/api/v1/referral/bind", headers=alice["headers"], json={"scene": scene_of(carol)})
    assert response.get_json()["data"]["reason"] == "cycle"
    response = client.post("/api/v1/referral/bind", headers=bob["headers"], json={"scene": scene_of(carol)})
    assert response.get_json()["data"]["reason"] == "cycle"


def test_first_touch_is_permanent(client, wx_login, scene_of):
    alice, zoe = wx_login("alice"), wx_login("zoe")
    bob = wx_login("bob", scene=scene_of(alice))
    later = client.post("/api/v1/referral/bind", headers=bob["headers"], json={"scene": scene_of(zoe)}).get_json()["data"]
    assert later["bound"] is False and later["reason"] == "already_bound"
    assert later["inviter"]["id"] == alice["user"]["id"]
    same = client.post("/api/v1/referral/bind", headers=bob["headers"], json={"scene": scene_of(alice)}).get_json()["data"]
    assert same["bound"] is True and same["changed"] is False


def test_protection_period_then_rebind_moves_uplines(app, client, wx_login, scene_of, set_setting):
    set_setting("binding_policy", "protection_period")
    set_setting("binding_protection_days", 7)
    alice, zoe = wx_login("alice"), wx_login("zoe")
    bob = wx_login("bob", scene=scene_of(alice))
    carol = wx_login("carol", scene=scene_of(bob))
    early = client.post("/api/v1/referral/bind", headers=bob["headers"], json={"scene": scene_of(zoe)}).get_json()["data"]
    assert early["reason"] == "protected"

    with app.app_context():
        sess = db.session()
        sess.execute(update(Binding).where(Binding.member_id == bob["user"]["id"]).values(bound_at=utcnow() - timedelta(days=8)))
        db.commit()
    late = client.post("/api/v1/referral/bind", headers=bob["headers"], json={"scene": scene_of(zoe)}).get_json()["data"]
    assert late["bound"] is True and late["inviter"]["id"] == zoe["user"]["id"]
    # carol's level 2 follows bob to zoe; alice keeps nothing of bob's branch
    assert [m["id"] for m in team(client, zoe)["indirect"]] == [carol["user"]["id"]]
    assert team(client, alice)["total_direct"] == 0 and team(client, alice)["total_indirect"] == 0
    with app.app_context():
        assert db.session().get(Binding, carol["user"]["id"]).upline_id == zoe["user"]["id"]


def test_binding_a_member_who_already_has_invitees_sets_their_upline(app, client, wx_login, scene_of):
    bob = wx_login("bob")
    carol = wx_login("carol", scene=scene_of(bob))
    alice = wx_login("alice")
    client.post("/api/v1/referral/bind", headers=bob["headers"], json={"scene": scene_of(alice)})
    assert [m["id"] for m in team(client, alice)["indirect"]] == [carol["user"]["id"]]


def test_unknown_revoked_and_expired_scenes(app, client, wx_login, scene_of):
    alice = wx_login("alice")
    assert wx_login("bob", scene="NoSuchScene123")["binding"]["reason"] == "unknown_scene"
    code = scene_of(alice)
    assert client.delete(f"/api/v1/referral/scenes/{code}", headers=alice["headers"]).status_code == 200
    assert wx_login("carol", scene=code)["binding"]["reason"] == "scene_revoked"
    fresh = scene_of(alice)
    assert fresh != code
    with app.app_context():
        db.session().execute(update(Scene).where(Scene.code == fresh).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.commit()
    assert wx_login("dave", scene=fresh)["binding"]["reason"] == "scene_expired"


def test_member_cannot_revoke_someone_elses_scene(client, wx_login, scene_of):
    alice, bob = wx_login("alice"), wx_login("bob")
    code = scene_of(alice)
    assert client.delete(f"/api/v1/referral/scenes/{code}", headers=bob["headers"]).status_code == 404


def test_disabled_sharer_is_refused(client, wx_login, scene_of, staff_login):
    alice = wx_login("alice")
    code = scene_of(alice)
    ops = staff_login("operations")
    client.patch(f"/admin/api/v1/members/{alice['user']['id']}", headers=ops, json={"status": "disabled"})
    assert wx_login("bob", scene=code)["binding"]["reason"] == "sharer_disabled"


def test_timeline_shows_scan_sign_in_bind(client, wx_login, scene_of, staff_login):
    alice = wx_login("alice")
    code = scene_of(alice)
    bob = wx_login("bob", scene=code)
    ops = staff_login("operations")
    events = client.get(f"/admin/api/v1/members/{bob['user']['id']}/timeline", headers=ops).get_json()["data"]["items"]
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["scan", "sign_in", "bind"]
    assert "lead" in kinds
    scan, _, bind = events[:3]
    assert scan["scene"] == code and scan["channel"] == "miniprogram_code" and scan["time"]
    assert bind["detail"]["inviter_id"] == alice["user"]["id"]
    assert bind["actor"] == f"member:{bob['user']['id']}"


def test_concurrent_opposite_binds_never_make_a_cycle(app, client, wx_login, scene_of, set_setting):
    """alice binds to bob while bob binds to alice: at most one wins."""
    set_setting("binding_policy", "last_touch")
    for _ in range(3):
        alice, bob = wx_login("alice"), wx_login("bob")
        a_scene, b_scene = scene_of(alice), scene_of(bob)
        results: list[dict] = []

        def bind(member, scene):
            response = app.test_client().post("/api/v1/referral/bind", headers=member["headers"], json={"scene": scene})
            results.append(response.get_json()["data"])

        threads = [threading.Thread(target=bind, args=(alice, b_scene)), threading.Thread(target=bind, args=(bob, a_scene))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r["bound"] for r in results) == 1, results
        with app.app_context():
            rows = db.session().scalars(select(Binding)).all()
            assert len(rows) == 1
            db.session().execute(Binding.__table__.delete())
            db.commit()


def test_a_cycle_through_a_chain_thousands_deep_is_refused(app, client, wx_login, scene_of, set_setting):
    """MariaDB stops a recursive CTE after max_recursive_iterations (1000 by default) without an error;
    the cycle check must still see the whole chain."""
    set_setting("binding_policy", "last_touch")
    root = wx_login("alice")
    depth = 5_000
    with app.app_context():
        sess = db.session()
        first = (sess.scalar(select(func.max(Member.id))) or 0) + 1
        ids = list(range(first, first + depth))
        sess.execute(insert(Member), [{"id": i, "openid": f"oDeepChain{i:010d}", "nickname": f"m{i}"} for i in ids])
        parents = [root["user"]["id"], *ids[:-1]]
        grandparents = [None, root["user"]["id"], *ids[:-2]]
        sess.execute(
            insert(Binding),
            [{"member_id": i, "inviter_id": p, "upline_id": g, "channel": "miniprogram"} for i, p, g in zip(ids, parents, grandparents)],
        )
        scene = create_scene(sess, channel=Channel.miniprogram_code, sharer_id=ids[-1]).code
        db.commit()
        assert is_ancestor(sess, root["user"]["id"], ids[-1])
        assert not is_ancestor(sess, ids[-1], root["user"]["id"])
    answer = client.post("/api/v1/referral/bind", headers=root["headers"], json={"scene": scene}).get_json()["data"]
    assert (answer["bound"], answer["reason"]) == (False, "cycle")
    assert me(client, root)["inviter"] is None
