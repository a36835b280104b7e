"""Mini-program sign-in, tokens and the member's own profile, through the API."""
from __future__ import annotations

import threading
from datetime import timedelta

import requests
from sqlalchemy import func, select, update

from server import db
from server.accounts.models import AuthSession, Member
from server.db import utcnow
from server.referral.models import TouchEvent, TouchKind


def test_same_name_same_member_other_name_other_member(wx_login):
    first = wx_login("alice")
    again = wx_login("alice")
    bob = wx_login("bob")
    assert first["user"]["id"] == again["user"]["id"]
    assert first["created"] is True and again["created"] is False
    assert bob["user"]["id"] != first["user"]["id"]
    assert first["token"] != again["token"]


def test_me_with_token_shows_own_openid_and_no_session_key(client, wx_login):
    alice = wx_login("alice")
    response = client.get("/api/v1/me", headers=alice["headers"])
    body = response.get_json()
    assert response.status_code == 200
    assert body["code"] == 0 and body["message"] == "ok"
    assert body["data"]["id"] == alice["user"]["id"]
    assert body["data"]["openid"].startswith("o") and len(body["data"]["openid"]) == 28
    assert "session_key" not in response.get_data(as_text=True)


def _one_character_changed(token: str):
    """Every position, each changed to a neighbouring character of the same alphabet."""
    for i, ch in enumerate(token):
        replacement = "." if ch == "-" else chr(ord(ch) ^ 1) if ch.isalnum() else "A"
        yield token[:i] + replacement + token[i + 1 :]


def test_tampered_missing_and_malformed_tokens_get_401(client, wx_login):
    token = wx_login("alice")["token"]
    for forged in _one_character_changed(token):
        response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401
        assert response.get_json()["code"] == 40101
    for header in ({}, {"Authorization": token}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        response = client.get("/api/v1/me", headers=header)
        assert response.status_code == 401
        assert response.get_json()["code"] == 40100


def test_expired_token_gets_401(app, client, wx_login):
    alice = wx_login("alice")
    with app.app_context():
        db.session().execute(update(AuthSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.commit()
    assert client.get("/api/v1/me", headers=alice["headers"]).status_code == 401


def test_logout_revokes_only_that_token(client, wx_login):
    one = wx_login("alice")
    two = wx_login("alice")
    assert client.post("/api/v1/auth/logout", headers=one["headers"]).status_code == 200
    assert client.get("/api/v1/me", headers=one["headers"]).status_code == 401
    assert client.get("/api/v1/me", headers=two["headers"]).status_code == 200


def test_staff_token_is_not_a_member_token(client, staff_login):
    headers = staff_login("owner")
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_bad_bodies_are_4xx_in_the_envelope(client):
    cases = [
        ({"data": "not json", "content_type": "application/json"}, 400, 40001),
        ({"data": "code=sandbox:alice", "content_type": "application/x-www-form-urlencoded"}, 400, 40001),
        ({"json": ["sandbox:alice"]}, 400, 40001),
        ({"json": {"code": 123}}, 422, 42200),
        ({"json": {}}, 422, 42200),
        ({"json": {"code": "sandbox:alice", "extra": 1}}, 422, 42200),
        ({"json": {"code": "sandbox:alice", "scene": "x" * 33}}, 422, 42200),
        ({"json": {"code": "sandbox:alice", "scene": "has space"}}, 422, 42200),
        ({"json": {"code": "never-issued"}}, 400, 40010),
    ]
    for kwargs, status, code in cases:
        response = client.post("/api/v1/auth/wx-login", **kwargs)
        assert response.status_code == status, (kwargs, response.get_json())
        body = response.get_json()
        assert body["code"] == code and body["message"], kwargs
    with client.application.app_context():
        assert db.session().scalar(select(func.count()).select_from(Member)) == 0


def test_validation_error_names_the_field(client):
    body = client.post("/api/v1/auth/wx-login", json={"code": 5}).get_json()
    assert body["data"]["errors"][0]["field"] == "code"


def test_unknown_route_and_wrong_method_are_envelopes(client):
    response = client.get("/api/v1/nowhere")
    assert response.status_code == 404 and response.get_json()["code"] == 40400
    response = client.delete("/api/v1/auth/wx-login")
    assert response.status_code == 405 and response.get_json()["code"] == 40500
    assert "POST" in response.headers["Allow"]


def test_scene_is_recorded_on_sign_in(app, wx_login):
    bob = wx_login("bob", scene="aB3-x_9")
    with app.app_context():
        event = db.session().scalars(
            select(TouchEvent).where(TouchEvent.member_id == bob["user"]["id"], TouchEvent.kind == TouchKind.sign_in)
        ).one()
        assert event.kind == TouchKind.sign_in
        assert event.scene == "aB3-x_9"
        assert event.channel == "miniprogram"


def test_profile_update_with_chinese_nickname(client, wx_login):
    alice = wx_login("alice")
    response = client.patch(
        "/api/v1/me", headers=alice["headers"], json={"nickname": "爱丽丝", "avatar_url": "https://example.com/a.png"}
    )
    assert response.status_code == 200
    assert response.get_json()["data"]["nickname"] == "爱丽丝"
    assert "爱丽丝" in response.get_data(as_text=True)  # not \u-escaped
    for bad in ({"nickname": ""}, {"nickname": "x" * 33}, {"avatar_url": "javascript:alert(1)"}, {"nickname": 7}):
        response = client.patch("/api/v1/me", headers=alice["headers"], json=bad)
        assert response.status_code == 422, bad
    assert client.get("/api/v1/me", headers=alice["headers"]).get_json()["data"]["nickname"] == "爱丽丝"


def test_an_empty_avatar_url_clears_the_avatar_and_null_keeps_it(client, wx_login):
    alice = wx_login("alice")
    me = "/api/v1/me"
    client.patch(me, headers=alice["headers"], json={"avatar_url": "https://example.com/a.png"})
    kept = client.patch(me, headers=alice["headers"], json={"avatar_url": None, "nickname": "爱丽丝"})
    assert kept.status_code == 200 and kept.get_json()["data"]["avatar_url"] == "https://example.com/a.png"
    cleared = client.patch(me, headers=alice["headers"], json={"avatar_url": ""})
    assert cleared.status_code == 200, cleared.get_json()
    assert cleared.get_json()["data"]["avatar_url"] == ""
    assert client.get(me, headers=alice["headers"]).get_json()["data"]["avatar_url"] == ""
    assert client.patch(me, headers=alice["headers"], json={"avatar_url": "ftp://example.com/a.png"}).status_code == 422


def test_phone_is_stored_encrypted_and_shown_masked(app, client, wx_login):
    alice = wx_login("alice")
    response = client.post("/api/v1/me/phone", headers=alice["headers"], json={"code": "sandbox-phone:13800138000"})
    assert response.status_code == 200
    assert response.get_json()["data"]["phone"] == "138****8000"
    assert "13800138000" not in response.get_data(as_text=True)
    with app.app_context():
        member = db.session().get(Member, alice["user"]["id"])
        assert "13800138000" not in (member.phone_ciphertext or "")
        from server import security

        assert security.decrypt(member.phone_ciphertext, "phone") == "13800138000"
    response = client.post("/api/v1/me/phone", headers=alice["headers"], json={"code": "forged"})
    assert response.status_code == 400 and response.get_json()["code"] == 40011


def test_login_is_rate_limited_per_client(app_factory):
    app = app_factory(LOGIN_RATE_LIMIT=3)
    client = app.test_client()
    statuses = [client.post("/api/v1/auth/wx-login", json={"code": f"sandbox:u{i}"}).status_code for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_login_rate_limit_is_shared_through_redis(app_factory, redis_url):
    """Two app instances (two workers) share one counter when Redis is configured."""
    first = app_factory(LOGIN_RATE_LIMIT=2, REDIS_URL=redis_url)
    second = app_factory(LOGIN_RATE_LIMIT=2, REDIS_URL=redis_url)
    statuses = [
        app.test_client().post("/api/v1/auth/wx-login", json={"code": "sandbox:carol"}).status_code
        for app in (first, second, first)
    ]
    assert statuses == [200, 200, 429]


def test_concurrent_first_sign_ins_create_one_member(app):
    results: list[int] = []
    errors: list[BaseException] = []

    def sign_in() -> None:
        try:
            response = app.test_client().post("/api/v1/auth/wx-login", json={"code": "sandbox:racer"})
            assert response.status_code == 200, response.get_json()
            results.append(response.get_json()["data"]["user"]["id"])
        except BaseException as error:  # surfaced below; a thread cannot fail the test itself
            errors.append(error)

    threads = [threading.Thread(target=sign_in) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 8 and len(set(results)) == 1
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(Member)) == 1


def test_disabled_member_cannot_sign_in_or_use_old_tokens(client, wx_login, staff_login):
    alice = wx_login("alice")
    ops = staff_login("operations")
    response = client.patch(f"/admin/api/v1/members/{alice['user']['id']}", headers=ops, json={"status": "disabled"})
    assert response.status_code == 200
    assert client.get("/api/v1/me", headers=alice["headers"]).status_code == 401
    response = client.post("/api/v1/auth/wx-login", json={"code": "sandbox:alice"})
    assert response.status_code == 403 and response.get_json()["code"] == 40310


def test_ids_and_pages_beyond_bigint_are_client_errors(client, staff_login):
    ops = staff_login("operations")
    assert client.get(f"/admin/api/v1/members/{2**63}", headers=ops).status_code == 404
    assert client.get("/admin/api/v1/members", headers=ops, query_string={"page": 10**17}).status_code == 422
    assert client.get("/admin/api/v1/members", headers=ops, query_string={"q": "100%_"}).status_code == 200


def test_a_wechat_login_code_signs_in_once(client, sandbox):
    # Real wx.login() codes work once; the sandbox issues such codes when it plays a member.
    code = requests.post(sandbox.base_url + "sandbox/users/erin/code", timeout=10).json()["code"]
    first = client.post("/api/v1/auth/wx-login", json={"code": code})
    assert first.status_code == 200
    again = client.post("/api/v1/auth/wx-login", json={"code": code})
    assert again.status_code == 400 and again.get_json()["code"] == 40010
