"""The official account as a channel: WeChat's callback, members' QR codes, pending attribution, the member zone.

WeChat is the session's sandbox, and it plays the users: it posts signed (and in safe
mode encrypted) XML to the app, which is served on a real port as WeChat would reach it.
"""
from __future__ import annotations

import hashlib
import io
import time
from datetime import timedelta
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select, update

from server import db
from server.db import utcnow
from server.referral.models import Lead, OAAttribution, TouchEvent
from server.memberzone.session import ZONE_COOKIE
from server.wechat import official_account
from wechat_sandbox import SandboxServer, SandboxState, serve_in_thread

#: A key of its own, so safe mode is shown to use the configured key and not the default.
AES_KEY = "c2FmZS1tb2RlLWtleS1mb3ItdGhlLXJlZmVycmFsLXQ"


@pytest.fixture
def app(request: pytest.FixtureRequest, app_factory: Callable[..., Flask]) -> Flask:
    """The app in safe mode, or (``indirect`` param "plain") with no AES key, in plaintext mode."""
    return app_factory(WECHAT_OA_AES_KEY="" if getattr(request, "param", "aes") == "plain" else AES_KEY)


@pytest.fixture
def wechat_pushes(app: Flask, sandbox: SandboxServer) -> Iterator[SandboxServer]:
    """The app on a real port, and the sandbox's message push (服务器配置) pointed at it."""
    served = serve_in_thread(app)
    push = {
        "appid": app.config["WECHAT_OA_APPID"],
        "token": app.config["WECHAT_OA_TOKEN"],
        "aes_key": app.config["WECHAT_OA_AES_KEY"] or None,
        "callback_url": f"{served.base_url}wechat/oa",
    }
    assert requests.put(sandbox.base_url + "sandbox/oa/push", json=push, timeout=10).status_code == 200
    yield served
    requests.delete(sandbox.base_url + "sandbox/oa/push", timeout=10)
    requests.post(sandbox.base_url + "sandbox/oa/reset", timeout=10)
    served.shutdown()


@pytest.fixture
def play(sandbox: SandboxServer, wechat_pushes: SandboxServer) -> Callable[..., dict[str, Any]]:
    """``play("bob", "subscribe", ticket)``: the sandbox makes bob do it; returns the app's reply, decrypted."""

    def do(user: str, event: str, ticket: str | None = None) -> dict[str, Any]:
        body = {"user": user, "event": event} | ({"ticket": ticket} if ticket else {})
        res = requests.post(sandbox.base_url + "sandbox/oa/events", json=body, timeout=30)
        assert res.status_code == 200, res.text
        return res.json()

    return do


@pytest.fixture
def sandbox_state(sandbox: SandboxServer) -> SandboxState:
    return sandbox.app.extensions["sandbox_state"]


@pytest.fixture
def oa_qrcode(client: FlaskClient) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def get(member: dict[str, Any]) -> dict[str, Any]:
        res = client.post("/api/v1/referral/oa-qrcode", headers=member["headers"])
        assert res.status_code == 200, res.get_json()
        return res.get_json()["data"]

    return get


def inviter_of(client: FlaskClient, member: dict[str, Any]) -> int | None:
    inviter = client.get("/api/v1/me", headers=member["headers"]).get_json()["data"]["inviter"]
    return inviter["id"] if inviter else None


def timeline(client: FlaskClient, ops: dict[str, str], member: dict[str, Any]) -> list[dict[str, Any]]:
    res = client.get(f"/admin/api/v1/members/{member['user']['id']}/timeline", headers=ops)
    return res.get_json()["data"]["items"]


def count(app: Flask, model: Any) -> int:
    with app.app_context():
        return db.session().scalar(select(func.count()).select_from(model)) or 0


def signed_query(token: str, **extra: str) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), "271828"
    signature = hashlib.sha1("".join(sorted((token, timestamp, nonce))).encode()).hexdigest()
    return {"signature": signature, "timestamp": timestamp, "nonce": nonce, **extra}


# -- WeChat's callback -------------------------------------------------------------------------


def test_url_verification(app: Flask, client: FlaskClient) -> None:
    good = signed_query(app.config["WECHAT_OA_TOKEN"], echostr="4242424242")
    res = client.get("/wechat/oa", query_string=good)
    assert res.status_code == 200 and res.data == b"4242424242" and res.mimetype == "text/plain"
    bad = signed_query("not-the-token", echostr="4242424242")
    res = client.get("/wechat/oa", query_string=bad)
    assert res.status_code == 403 and b"4242424242" not in res.data
    assert client.get("/wechat/oa").status_code == 403


@pytest.mark.parametrize("app", ["plain", "aes"], indirect=True)
def test_existing_member_follows_through_a_members_qr_code(
    app: Flask, client: FlaskClient, wx_login: Any, oa_qrcode: Any, play: Any, staff_login: Any
) -> None:
    alice, bob = wx_login("alice"), wx_login("bob")
    qr = oa_qrcode(alice)

    answer = play("bob", "subscribe", qr["ticket"])
    assert answer["status"] == 200 and answer["error"] is None
    assert answer["reply"]["MsgType"] == "text"
    assert "欢迎关注" in answer["reply"]["Content"] and "/h5/member" in answer["reply"]["Content"]
    assert "还不是会员" not in answer["reply"]["Content"]
    assert inviter_of(client, bob) == alice["user"]["id"]

    events = timeline(client, staff_login("operations"), bob)
    scan = next(e for e in events if e["event"] == "scan")
    assert scan["channel"] == "official_account_qr" and scan["scene"] == qr["scene"]
    assert scan["detail"]["event"] == "subscribe" and scan["actor"] == f"member:{bob['user']['id']}"
    assert any(e["event"] == "bind" and e["detail"]["inviter_id"] == alice["user"]["id"] for e in events)


@pytest.mark.parametrize("app", ["plain", "aes"], indirect=True)
def test_follower_who_is_not_a_member_yet_is_bound_at_first_sign_in(
    app: Flask, client: FlaskClient, wx_login: Any, oa_qrcode: Any, play: Any, sandbox_state: SandboxState
) -> None:
    alice = wx_login("alice")
    qr = oa_qrcode(alice)

    answer = play("bob", "subscribe", qr["ticket"])
    assert "还不是会员" in answer["reply"]["Content"]
    with app.app_context():
        pending = db.session().scalars(select(OAAttribution)).one()
        assert pending.unionid == sandbox_state.unionid("bob") and pending.scene_code == qr["scene"]
        scan = db.session().scalars(select(TouchEvent).where(TouchEvent.kind == "scan")).one()
        oa_openid = sandbox_state.openid(app.config["WECHAT_OA_APPID"], "bob")
        assert scan.member_id is None and scan.actor.startswith("oa:") and oa_openid not in scan.actor

    bob = wx_login("bob")  # no scene: the pending attribution supplies it
    assert bob["binding"]["bound"] and bob["binding"]["inviter"]["id"] == alice["user"]["id"]
    assert inviter_of(client, bob) == alice["user"]["id"]
    with app.app_context():
        lead = db.session().scalars(select(Lead)).one()
        assert lead.member_id == bob["user"]["id"] and lead.sharer_id == alice["user"]["id"]
        assert lead.channel == "official_account_qr"
    assert count(app, OAAttribution) == 0

    again = wx_login("bob")  # once: nothing left to apply
    assert again["binding"] is None and count(app, Lead) == 1


def test_own_scene_wins_over_a_pending_one_and_uses_it_up(
    app: Flask, client: FlaskClient, wx_login: Any, oa_qrcode: Any, play: Any, scene_of: Any
) -> None:
    alice, carol = wx_login("alice"), wx_login("carol")
    play("bob", "subscribe", oa_qrcode(alice)["ticket"])
    bob = wx_login("bob", scene=scene_of(carol))
    assert bob["binding"]["inviter"]["id"] == carol["user"]["id"]
    assert count(app, OAAttribution) == 0


def test_first_scan_is_protected_and_expires(
    app: Flask, client: FlaskClient, wx_login: Any, oa_qrcode: Any, play: Any
) -> None:
    alice, carol = wx_login("alice"), wx_login("carol")
    play("bob", "subscribe", oa_qrcode(alice)["ticket"])
    play("bob", "unsubscribe")
    play("bob", "subscribe", oa_qrcode(carol)["ticket"])
    with app.app_context():
        assert db.session().scalars(select(OAAttribution.scene_code)).one() == oa_qrcode(alice)["scene"]
        # An expired pending attribution binds nobody.
        db.session().execute(update(OAAttribution).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.commit()
    bob = wx_login("bob")
    assert bob["binding"] is None and inviter_of(client, bob) is None


def test_scan_by_an_existing_follower(
    app: Flask, client: FlaskClient, wx_login: Any, oa_qrcode: Any, play: Any, staff_login: Any
) -> None:
    alice, bob = wx_login("alice"), wx_login("bob")
    before = count(app, TouchEvent)
    followed = play("bob", "subscribe")  # through a search, no QR code: welcomed, nothing recorded
    assert "欢迎关注" in followed["reply"]["Content"] and count(app, TouchEvent) == before
    assert "还不是会员" not in followed["reply"]["Content"]
    qr = oa_qrcode(alice)
    answer = play("bob", "SCAN", qr["ticket"])
    assert "欢迎回到" in answer["reply"]["Content"]
    assert inviter_of(client, bob) == alice["user"]["id"]
    scan = next(e for e in timeline(client, staff_login("operations"), bob) if e["event"] == "scan")
    assert scan["detail"]["event"] == "SCAN" and scan["channel"] == "official_account_qr"


def test_unknown_messages_and_unsubscribe_answer_success(app: Flask, play: Any, sandbox: SandboxServer) -> None:
    play("bob", "subscribe")
    texted = requests.post(sandbox.base_url + "sandbox/oa/events", json={"user": "bob", "text": "你好"}, timeout=30).json()
    assert texted["status"] == 200 and texted["body"] == "success" and texted["error"] is None
    left = play("bob", "unsubscribe")
    assert left["body"] == "success" and left["reply"] is None


def sealed(app: Flask, xml: str) -> tuple[dict[str, str], str]:
    """``xml`` as WeChat sends it in safe mode: the query with both signatures, and the encrypted body."""
    token = app.config["WECHAT_OA_TOKEN"]
    query = signed_query(token, encrypt_type="aes")
    codec = app.extensions["wechat_oa_messages"]
    encrypt = codec.crypto.encrypt_message(xml, query["nonce"]).split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    query["msg_signature"] = hashlib.sha1("".join(sorted((token, query["timestamp"], query["nonce"], encrypt))).encode()).hexdigest()
    return query, f"<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"


def scan_xml(openid: str, scene: str, created: int) -> str:
    return (f"<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event>"
            f"<EventKey><![CDATA[{scene}]]></EventKey><Ticket><![CDATA[t]]></Ticket></xml>")


def test_a_retried_push_is_recorded_once(
    app: Flask, client: FlaskClient, wx_login: Any, oa_qrcode: Any, play: Any, sandbox_state: SandboxState
) -> None:
    alice, bob = wx_login("alice"), wx_login("bob")
    play("bob", "subscribe")
    openid = sandbox_state.openid(app.config["WECHAT_OA_APPID"], "bob")
    query, body = sealed(app, scan_xml(openid, oa_qrcode(alice)["scene"], int(time.time())))
    before = count(app, TouchEvent)
    # WeChat retries a push three times when the answer is slow; FromUserName and CreateTime are the same.
    for _ in range(3):
        res = client.post("/wechat/oa", query_string=query, data=body)
        assert res.status_code == 200 and res.mimetype == "application/xml" and b"<Encrypt>" in res.data
    assert count(app, TouchEvent) == before + 2  # one scan, one bind
    assert inviter_of(client, bob) == alice["user"]["id"]


def test_forged_callbacks_are_refused_and_change_nothing(
    app: Flask, client: FlaskClient, wx_login: Any, oa_qrcode: Any, sandbox_state: SandboxState
) -> None:
    alice, bob = wx_login("alice"), wx_login("bob")
    qr = oa_qrcode(alice)
    before = count(app, TouchEvent)
    openid = sandbox_state.openid(app.config["WECHAT_OA_APPID"], "bob")
    xml = (f"<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
           f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
           f"<Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_{qr['scene']}]]></EventKey></xml>")
    forged = signed_query("guessed-token")
    assert client.post("/wechat/oa", query_string=forged, data=xml).status_code == 403
    # The right signature, but plaintext while safe mode is configured: a replayable body is refused.
    plaintext = signed_query(app.config["WECHAT_OA_TOKEN"])
    assert client.post("/wechat/oa", query_string=plaintext, data=xml).status_code == 403
    bad_msg_signature = signed_query(app.config["WECHAT_OA_TOKEN"], encrypt_type="aes", msg_signature="0" * 40)
    assert client.post("/wechat/oa", query_string=bad_msg_signature,
                       data="<xml><Encrypt><![CDATA[AAAA]]></Encrypt></xml>").status_code == 403
    assert count(app, TouchEvent) == before and inviter_of(client, bob) is None


@pytest.mark.parametrize("app", ["plain", "aes"], indirect=True)
@pytest.mark.parametrize("body", [b"", b"garbage", b"<xml><a>", b"<xml></xml>", "<xml>\u00ff</xml>".encode("latin-1"),
                                  b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]><xml><MsgType>&a;</MsgType></xml>"])
def test_garbage_never_makes_a_500(app: Flask, client: FlaskClient, body: bytes) -> None:
    token = app.config["WECHAT_OA_TOKEN"]
    extra = {"encrypt_type": "aes", "msg_signature": "0" * 40} if app.config["WECHAT_OA_AES_KEY"] else {}
    res = client.post("/wechat/oa", query_string=signed_query(token, **extra), data=body)
    assert res.status_code in (400, 403) and res.mimetype == "text/plain"


@pytest.mark.parametrize("app", ["plain"], indirect=True)
def test_a_failing_service_still_welcomes(app: Flask, play: Any, wx_login: Any, oa_qrcode: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from server.referral import official_account as services

    qr = oa_qrcode(wx_login("alice"))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(services, "record_oa_scan", broken)
    answer = play("bob", "subscribe", qr["ticket"])
    assert answer["status"] == 200 and "欢迎关注" in answer["reply"]["Content"]


# -- members' QR codes ---------------------------------------------------------------------------


def test_qr_code_is_created_once_and_cached(
    client: FlaskClient, wx_login: Any, oa_qrcode: Any, sandbox_state: SandboxState, set_setting: Any
) -> None:
    alice = wx_login("alice")
    created = sandbox_state.calls["/cgi-bin/qrcode/create"]
    first = oa_qrcode(alice)
    assert set(first) == {"scene", "ticket", "qrcode_url", "image_url", "expire_seconds"}
    assert first["expire_seconds"] is None  # permanent by default
    assert oa_qrcode(alice) == first
    assert sandbox_state.calls["/cgi-bin/qrcode/create"] == created + 1

    set_setting("oa_qr_expire_days", 7)
    temporary = oa_qrcode(alice)
    assert temporary["scene"] == first["scene"] and temporary["ticket"] != first["ticket"]
    assert 7 * 86400 - 5 <= temporary["expire_seconds"] <= 7 * 86400
    assert oa_qrcode(alice)["ticket"] == temporary["ticket"]
    assert sandbox_state.calls["/cgi-bin/qrcode/create"] == created + 2
    assert client.post("/api/v1/referral/oa-qrcode").status_code == 401


def test_qr_image_decodes_to_the_code_url(client: FlaskClient, wx_login: Any, oa_qrcode: Any) -> None:
    zxingcpp = pytest.importorskip("zxingcpp")
    qr = oa_qrcode(wx_login("alice"))
    res = requests.get(qr["image_url"], timeout=10)
    assert res.status_code == 200
    assert [b.text for b in zxingcpp.read_barcodes(Image.open(io.BytesIO(res.content)))] == [qr["qrcode_url"]]


# -- the member zone (会员专区) ---------------------------------------------------------------------


def follow_oauth(client: FlaskClient, response: Any, user: str, hops: list[str]) -> Any:
    """Play WeChat's OAuth page for ``user`` until the app stops sending the browser there."""
    while response.status_code == 302 and "connect/oauth2/authorize" in response.headers["Location"]:
        location = response.headers["Location"]
        assert location.endswith("#wechat_redirect")
        hops.append(parse_qs(urlsplit(location).query)["scope"][0])
        wechat = requests.get(location.split("#")[0] + f"&sandbox_user={user}", allow_redirects=False, timeout=10)
        assert wechat.status_code == 302
        back = urlsplit(wechat.headers["Location"])
        assert back.path == "/h5/member/oauth"
        response = client.get(f"{back.path}?{back.query}")
    return response


@pytest.mark.parametrize(("follows", "scopes"), [(True, ["snsapi_base"]), (False, ["snsapi_base", "snsapi_userinfo"])])
def test_member_zone_through_oauth(
    app: Flask, client: FlaskClient, wx_login: Any, play: Any, scene_of: Any, follows: bool, scopes: list[str]
) -> None:
    alice = wx_login("alice")
    wx_login("bob", scene=scene_of(alice))
    if follows:
        play("alice", "subscribe")
    hops: list[str] = []
    landed = follow_oauth(client, client.get("/h5/member"), "alice", hops)
    # A follower is known from snsapi_base; anyone else needs snsapi_userinfo for a unionid.
    assert hops == scopes
    assert landed.status_code == 302 and landed.headers["Location"].endswith("/h5/member")
    cookie = client.get_cookie(ZONE_COOKIE, path="/h5")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"

    page = client.get("/h5/member")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert "会员专区" in html and f"{app.config['PUBLIC_BASE_URL']}/s/" in html
    assert 'id="team-direct">1<' in html and 'id="team-indirect">0<' in html and 'id="leads">1<' in html
    with app.app_context():
        qr = official_account()
        assert "showqrcode?ticket=" in html and qr.mp_base in html


def test_visitor_without_a_mini_program_account(client: FlaskClient, wx_login: Any, play: Any) -> None:
    play("dave", "subscribe")
    page = client.get(follow_oauth(client, client.get("/h5/member"), "dave", [])
                      .headers["Location"])
    assert page.status_code == 200 and "小程序" in page.get_data(as_text=True) and "还差一步" in page.get_data(as_text=True)
    wx_login("dave")  # once he opens the mini-program, the same cookie shows his zone
    assert "我的分享链接" in client.get("/h5/member").get_data(as_text=True)


def test_a_moments_snapshot_visitor_is_not_signed_in(client: FlaskClient, wx_login: Any, play: Any) -> None:
    # In a Moments snapshot page WeChat answers OAuth with is_snapshotuser=1 and a virtual
    # openid every snapshot viewer shares: nobody may sign in (or be bound) as that.
    wx_login("alice")
    play("alice", "subscribe")
    start = client.get("/h5/member")
    location = start.headers["Location"].split("#")[0]
    wechat = requests.get(location + "&sandbox_user=alice&sandbox_snapshot=1", allow_redirects=False, timeout=10)
    back = urlsplit(wechat.headers["Location"])
    assert parse_qs(back.query)["code"] == ["sandbox-oauth-snapshot:alice"]
    page = client.get(f"{back.path}?{back.query}")
    html = page.get_data(as_text=True)
    assert page.status_code == 403 and "请前往完整页面使用" in html and "快照" in html
    assert client.get_cookie(ZONE_COOKIE, path="/h5") is None
    assert client.get("/h5/member").status_code == 302  # still nobody: back to OAuth


def test_tampered_cookie_goes_back_to_oauth(client: FlaskClient, wx_login: Any, play: Any) -> None:
    wx_login("alice")
    play("alice", "subscribe")
    follow_oauth(client, client.get("/h5/member"), "alice", [])
    cookie = client.get_cookie(ZONE_COOKIE, path="/h5")
    assert cookie is not None
    assert client.get("/h5/member").status_code == 200
    tampered = cookie.value[:-2] + ("AA" if not cookie.value.endswith("AA") else "BB")
    client.set_cookie(ZONE_COOKIE, tampered, path="/h5")
    res = client.get("/h5/member")
    assert res.status_code == 302 and "connect/oauth2/authorize" in res.headers["Location"]


def test_oauth_state_must_be_ours_and_this_browsers(app: Flask, client: FlaskClient, wx_login: Any, play: Any) -> None:
    start = client.get("/h5/member")
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    assert state.isalnum() and len(state) <= 128
    assert client.get("/h5/member/oauth", query_string={"code": "sandbox-oauth:alice", "state": "00ff"}).status_code == 400
    stranger = app.test_client()  # another browser, handed the link: no nonce cookie
    res = stranger.get("/h5/member/oauth", query_string={"code": "sandbox-oauth:alice", "state": state})
    assert res.status_code == 400 and stranger.get_cookie(ZONE_COOKIE, path="/h5") is None
    res = client.get("/h5/member/oauth", query_string={"code": "bogus", "state": state})
    assert res.status_code == 400


# -- the menu ---------------------------------------------------------------------------------------


def test_menu_command_pushes_the_member_zone(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["oa-menu"])
    assert result.exit_code == 0, result.output
    assert "会员专区" in result.output
    with app.app_context():
        buttons = official_account().get_menu()["selfmenu_info"]["button"]
    assert buttons[0] == {"type": "view", "name": "会员专区", "url": f"{app.config['PUBLIC_BASE_URL']}/h5/member"}
    assert buttons[1]["type"] == "miniprogram" and buttons[1]["appid"] == app.config["WECHAT_APPID"]


def test_menu_command_reports_a_refusal(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(WECHAT_APPID="wxnotknowntothesandbox", WECHAT_OA_AES_KEY=AES_KEY)
    result = app.test_cli_runner().invoke(args=["oa-menu"])
    assert result.exit_code != 0 and "40013" in result.output
