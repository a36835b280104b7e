"""The official-account adapter and message codec against the sandbox, which also plays the users."""
from __future__ import annotations

import hashlib
import html
import io
import re
import time
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from flask import Flask, Response, request
from PIL import Image
from wechatpy.events import ScanEvent, SubscribeScanEvent
from wechatpy.messages import TextMessage

from server import cache, config, wechat
from server.wechat.client import MiniProgram, OAUser, OfficialAccount, WeChatApiClient, WeChatError
from server.wechat.oa_messages import (
    SUCCESS,
    CallbackRejectedError,
    CallbackUnreadableError,
    MessageCodec,
)
from wechat_sandbox import (
    MessagePush,
    SandboxServer,
    SandboxState,
    create_sandbox_app,
    message_push_from_config,
    original_id,
    serve_in_thread,
)

MP_APPID, MP_SECRET = "wxoatestminiprog1", "oa-test-mp-secret"
OA_APPID, OA_SECRET = "wxoatestofficial1", "oa-test-oa-secret"
TOKEN = "oa-test-token"
AES_KEY = "b2EtdGVzdC1lbmNvZGluZy1hZXMta2V5LTMyYnl0ZXM"


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    app = create_sandbox_app({MP_APPID: MP_SECRET, OA_APPID: OA_SECRET}, seed="oa-seed")
    server = serve_in_thread(app)
    yield server
    server.shutdown()


@pytest.fixture
def state(sandbox: SandboxServer) -> SandboxState:
    return sandbox.app.extensions["sandbox_state"]


@pytest.fixture
def oa(sandbox: SandboxServer) -> Iterator[OfficialAccount]:
    account = OfficialAccount.from_config(
        {"WECHAT_OA_APPID": OA_APPID, "WECHAT_OA_SECRET": OA_SECRET, "WECHAT_API_BASE": sandbox.base_url}
    )
    yield account
    account.close()


def control(sandbox: SandboxServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, sandbox.base_url + path, timeout=10, **kwargs)


# -- parametric QR codes --------------------------------------------------------------


def test_permanent_qr_code(oa: OfficialAccount, state: SandboxState) -> None:
    qr = oa.create_scene_qr("Ab12Cd34Ef56Gh78")
    assert qr.expire_seconds is None and qr.url.startswith("http://weixin.qq.com/q/")
    # Tickets hold the characters a URL must escape; the adapter escapes them.
    assert {"+", "/", "="} <= set(qr.ticket)
    assert oa.qrcode_image_url(qr.ticket).endswith("cgi-bin/showqrcode?ticket=" + quote(qr.ticket, safe=""))
    assert state.calls["/cgi-bin/qrcode/create"] == 1


def test_temporary_qr_code(oa: OfficialAccount) -> None:
    qr = oa.create_scene_qr("scene-str", 7 * 86400)
    assert qr.expire_seconds == 7 * 86400


def test_qr_image_decodes_to_the_code_url(oa: OfficialAccount) -> None:
    zxingcpp = pytest.importorskip("zxingcpp")
    qr = oa.create_scene_qr("x" * 64, 60)
    res = requests.get(oa.qrcode_image_url(qr.ticket), timeout=10)
    assert res.status_code == 200 and res.headers["Content-Type"] == "image/png"
    assert [b.text for b in zxingcpp.read_barcodes(Image.open(io.BytesIO(res.content)))] == [qr.url]


def test_unknown_or_unescaped_ticket_is_not_found(oa: OfficialAccount, sandbox: SandboxServer) -> None:
    qr = oa.create_scene_qr("s", 60)
    assert requests.get(sandbox.base_url + "cgi-bin/showqrcode", params={"ticket": "nope"}, timeout=10).status_code == 404
    # Sent raw, "+" arrives as a space: the ticket no longer matches.
    raw = requests.get(f"{sandbox.base_url}cgi-bin/showqrcode?ticket={qr.ticket}", timeout=10)
    assert raw.status_code == 404


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"action_name": "QR_FOO", "action_info": {"scene": {"scene_str": "a"}}}, 40097),
        ({"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": ""}}}, 40097),
        ({"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "x" * 65}}}, 40097),
        ({"action_name": "QR_STR_SCENE", "expire_seconds": 59, "action_info": {"scene": {"scene_str": "a"}}}, 40097),
        ({"action_name": "QR_STR_SCENE", "expire_seconds": 2592001, "action_info": {"scene": {"scene_str": "a"}}},
         40097),
        ({"action_name": "QR_STR_SCENE", "expire_seconds": "60", "action_info": {"scene": {"scene_str": "a"}}}, 47001),
        ({"action_name": "QR_LIMIT_SCENE", "action_info": {"scene": {"scene_id": 100001}}}, 40097),
        ({"action_name": "QR_LIMIT_STR_SCENE", "action_info": "a"}, 47001),
    ],
)
def test_qr_refusals(oa: OfficialAccount, body: dict[str, Any], errcode: int) -> None:
    with pytest.raises(WeChatError) as caught:
        oa.client.post("cgi-bin/qrcode/create", api_base_url=oa.client.api_base, data=body)
    assert caught.value.errcode == errcode


def test_adapter_refuses_what_wechat_would(oa: OfficialAccount, state: SandboxState) -> None:
    for scene, expire in (("", None), ("x" * 65, None), ("a", 59), ("a", 2592001)):
        with pytest.raises(ValueError):
            oa.create_scene_qr(scene, expire)
    assert state.calls["/cgi-bin/qrcode/create"] == 0


def test_numeric_scene_ids_are_accepted(oa: OfficialAccount) -> None:
    result = oa.client.post("cgi-bin/qrcode/create", api_base_url=oa.client.api_base,
                            data={"action_name": "QR_SCENE", "expire_seconds": 60, "action_info": {"scene": {"scene_id": 42}}})
    assert result["expire_seconds"] == 60 and result["ticket"]


# -- users, menus and OAuth -----------------------------------------------------------------


def test_user_info_needs_an_openid_the_account_has_seen(oa: OfficialAccount, state: SandboxState) -> None:
    with pytest.raises(WeChatError) as caught:
        oa.user_info(state.openid(OA_APPID, "bob"))
    assert caught.value.errcode == 40003


def test_one_unionid_across_both_apps(oa: OfficialAccount, sandbox: SandboxServer) -> None:
    mp = MiniProgram(WeChatApiClient(MP_APPID, MP_SECRET, api_base=sandbox.base_url))
    signed_in = mp.code_to_session("sandbox:bob")
    oauth = oa.oauth_exchange("sandbox-oauth-userinfo:bob")
    assert oauth.openid != signed_in.openid and oauth.unionid == signed_in.unionid
    # Not a follower: WeChat tells nothing beyond that.
    assert oa.user_info(oauth.openid) == OAUser(oauth.openid, None, False)
    mp.close()


def test_menu_round_trip(oa: OfficialAccount) -> None:
    menu = {"button": [
        {"type": "view", "name": "会员专区", "url": "https://shop.example.com/h5/member"},
        {"type": "miniprogram", "name": "进入商城", "url": "https://shop.example.com/", "appid": MP_APPID,
         "pagepath": "pages/index/index"},
        {"name": "更多", "sub_button": [{"type": "click", "name": "联系我们", "key": "CONTACT"}]},
    ]}
    oa.create_menu(menu)
    current = oa.get_menu()
    assert current["is_menu_open"] == 1
    buttons = current["selfmenu_info"]["button"]
    assert buttons[0] == menu["button"][0]
    assert buttons[2] == {"name": "更多", "sub_button": {"list": [{"type": "click", "name": "联系我们", "key": "CONTACT"}]}}


def _button(**overrides: Any) -> dict[str, Any]:
    return {"type": "view", "name": "会员专区", "url": "https://shop.example.com/h5/member", **overrides}


@pytest.mark.parametrize(
    ("buttons", "errcode"),
    [
        ([], 40016),
        ([_button()] * 4, 40016),
        ([_button(name="会员专区会员专区")], 40018),
        ([_button(url=None)], 40020),
        ([_button(type="nope")], 40017),
        ([{"type": "click", "name": "a"}], 40019),
        ([{"name": "更多", "sub_button": [_button()] * 6}], 40023),
        ([{"name": "更多", "sub_button": [_button(url="")]}], 40027),
        ([{"name": "更多", "sub_button": [_button(name="x" * 61)]}], 40025),
        ([{"type": "miniprogram", "name": "商城", "url": "https://a.example/", "appid": "wxunknown", "pagepath": "p"}],
         40013),
    ],
)
def test_menu_refusals(oa: OfficialAccount, buttons: list[Any], errcode: int) -> None:
    with pytest.raises(WeChatError) as caught:
        oa.create_menu({"button": buttons})
    assert caught.value.errcode == errcode


def test_oauth_url_is_what_wechat_expects(oa: OfficialAccount, sandbox: SandboxServer) -> None:
    url = oa.oauth_url("https://shop.example.com/h5/member/oauth?x=1", "abc123")
    assert url.startswith(sandbox.base_url + "connect/oauth2/authorize?appid=") and url.endswith("#wechat_redirect")
    query = urlsplit(url).query
    assert [part.split("=")[0] for part in query.split("&")] == ["appid", "redirect_uri", "response_type", "scope", "state"]
    assert parse_qs(query)["redirect_uri"] == ["https://shop.example.com/h5/member/oauth?x=1"]
    with pytest.raises(ValueError):
        oa.oauth_url("https://a.example/", "s", scope="snsapi_login")


@pytest.mark.parametrize(("scope", "unionid"), [("snsapi_base", False), ("snsapi_userinfo", True)])
def test_oauth_round_trip(oa: OfficialAccount, state: SandboxState, scope: str, unionid: bool) -> None:
    url = oa.oauth_url("https://shop.example.com/back", "st4te", scope=scope).split("#")[0]
    assert "请在微信客户端打开" in requests.get(url, timeout=10).text
    res = requests.get(url + "&sandbox_user=alice", allow_redirects=False, timeout=10)
    assert res.status_code == 302
    back = urlsplit(res.headers["Location"])
    assert back.netloc == "shop.example.com" and parse_qs(back.query)["state"] == ["st4te"]
    result = oa.oauth_exchange(parse_qs(back.query)["code"][0])
    assert result.openid == state.openid(OA_APPID, "alice")
    assert (result.unionid == state.unionid("alice")) if unionid else result.unionid is None
    assert state.token_requests == 0  # sns/oauth2/access_token is authenticated by the secret


def test_oauth_page_offers_a_form_to_play_a_user_in_a_desktop_browser(oa: OfficialAccount) -> None:
    url = oa.oauth_url("https://shop.example.com/back?x=1&y=<b>", "st4te").split("#")[0]
    page = requests.get(url, timeout=10).text
    fields = dict(re.findall(r'<input type=hidden name="([^"]+)" value="([^"]*)">', page))
    assert fields["state"] == "st4te" and fields["redirect_uri"] == "https://shop.example.com/back?x=1&amp;y=&lt;b&gt;"
    assert '<input name=sandbox_user required' in page and "<b>" not in page
    # What the form sends: the same parameters and the name.
    played = {name: html.unescape(value) for name, value in fields.items()} | {"sandbox_user": "alice"}
    res = requests.get(oa.open_base + "connect/oauth2/authorize", params=played, allow_redirects=False, timeout=10)
    assert res.status_code == 302 and parse_qs(urlsplit(res.headers["Location"]).query)["state"] == ["st4te"]


@pytest.mark.parametrize(
    ("change", "status"),
    [({"scope": "snsapi_login"}, 400), ({"state": "has-dash"}, 400), ({"response_type": "token"}, 400),
     ({"appid": "wxunknown"}, 400), ({"redirect_uri": "javascript:alert(1)"}, 400)],
)
def test_oauth_page_refusals(oa: OfficialAccount, change: dict[str, str], status: int) -> None:
    params = {"appid": OA_APPID, "redirect_uri": "https://a.example/", "response_type": "code",
              "scope": "snsapi_base", "state": "s", "sandbox_user": "alice", **change}
    res = requests.get(oa.open_base + "connect/oauth2/authorize", params=params, allow_redirects=False, timeout=10)
    assert res.status_code == status and "Location" not in res.headers


def test_bad_oauth_code(oa: OfficialAccount) -> None:
    with pytest.raises(WeChatError) as caught:
        oa.oauth_exchange("sandbox:alice")
    assert caught.value.errcode == 40029


# -- the message codec ---------------------------------------------------------------------------


def query(token: str = TOKEN, **extra: str) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), "123456"
    return {"signature": sign(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce, **extra}


TEXT = ("<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[oUser_1]]></FromUserName>"
        "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content>"
        "<MsgId>1</MsgId></xml>")


def test_url_verification() -> None:
    codec = MessageCodec(OA_APPID, TOKEN)
    assert codec.verify_url(query(echostr="echo-me")) == "echo-me"
    with pytest.raises(CallbackRejectedError):
        codec.verify_url(query(token="wrong", echostr="echo-me"))
    with pytest.raises(CallbackRejectedError):
        codec.verify_url({"echostr": "x"})


def test_plaintext_message_and_reply() -> None:
    codec = MessageCodec(OA_APPID, TOKEN)
    incoming = codec.open(query(), TEXT.encode())
    assert isinstance(incoming.message, TextMessage) and incoming.openid == "oUser_1" and not incoming.encrypted
    reply = codec.reply_text(incoming, "你好")
    assert "<ToUserName><![CDATA[oUser_1]]></ToUserName>" in reply and "<![CDATA[你好]]>" in reply


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"<xml>", b"<xml><MsgType>text</MsgType></xml>", b"<other/>", "\udcff".encode("utf-8", "surrogatepass"),
     TEXT.replace("oUser_1", "a]]><x>").encode(), TEXT.replace("1700000000", "soon").encode()],
)
def test_garbage_is_unreadable(body: bytes) -> None:
    with pytest.raises(CallbackUnreadableError):
        MessageCodec(OA_APPID, TOKEN).open(query(), body)


def test_safe_mode_refuses_plaintext_and_forged_bodies() -> None:
    codec = MessageCodec(OA_APPID, TOKEN, AES_KEY)
    with pytest.raises(CallbackRejectedError):
        codec.open(query(), TEXT.encode())
    assert codec.crypto is not None
    sealed = codec.crypto.encrypt_message(TEXT, "123456", "1700000000")
    encrypt = sealed.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    args = query(encrypt_type="aes")
    envelope = f"<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    good = sign(TOKEN, args["timestamp"], args["nonce"], encrypt)
    incoming = codec.open({**args, "msg_signature": good}, envelope.encode())
    assert incoming.encrypted and incoming.openid == "oUser_1"
    assert "<Encrypt>" in codec.reply_text(incoming, "hi")
    for bad in ({**args, "msg_signature": "0" * 40}, args):
        with pytest.raises(CallbackRejectedError):
            codec.open(bad, envelope.encode())
    other = MessageCodec("wxsomeoneelse0001", TOKEN, AES_KEY)
    with pytest.raises(CallbackRejectedError):
        other.open({**args, "msg_signature": good}, envelope.encode())
    with pytest.raises(CallbackUnreadableError):
        codec.open({**args, "msg_signature": sign(TOKEN, args["timestamp"], args["nonce"], "AAAA")},
                   b"<xml><Encrypt>AAAA</Encrypt></xml>")


def test_codec_configuration() -> None:
    with pytest.raises(ValueError):
        MessageCodec(OA_APPID, TOKEN, "too-short")
    with pytest.raises(ValueError):
        MessageCodec(OA_APPID, "")
    assert MessageCodec.from_config({"WECHAT_OA_TOKEN": ""}) is None
    assert MessageCodec.from_config(vars(config.TestingConfig())).safe_mode  # type: ignore[union-attr]


# -- the sandbox plays the users ----------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[SandboxServer, list[Any]]]:
    """A stand-in app at the callback URL: verifies with MessageCodec and echoes what it got."""
    app = Flask("receiver")
    seen: list[Any] = []
    codecs = {"plain": MessageCodec(OA_APPID, TOKEN), "aes": MessageCodec(OA_APPID, TOKEN, AES_KEY)}

    @app.post("/<mode>/wechat/oa")
    def callback(mode: str) -> Response:
        codec = codecs[mode]
        try:
            incoming = codec.open(request.args, request.get_data())
        except CallbackRejectedError:
            return Response("forbidden", status=403)
        except CallbackUnreadableError:
            return Response("bad request", status=400)
        seen.append((incoming.message, request.args.get("openid")))
        if isinstance(incoming.message, TextMessage):
            return Response(SUCCESS)
        return Response(codec.reply_text(incoming, f"got {incoming.message.event}"), mimetype="application/xml")

    server = serve_in_thread(app)
    yield server, seen
    server.shutdown()


@pytest.mark.parametrize("mode", ["plain", "aes"])
def test_sandbox_plays_a_user_following_through_a_qr_code(
    sandbox: SandboxServer, state: SandboxState, oa: OfficialAccount, receiver: tuple[SandboxServer, list[Any]], mode: str
) -> None:
    server, seen = receiver
    push = {"appid": OA_APPID, "token": TOKEN, "callback_url": f"{server.base_url}{mode}/wechat/oa",
            "aes_key": AES_KEY if mode == "aes" else None}
    assert control(sandbox, "PUT", "sandbox/oa/push", json=push).json()["push"] == push
    qr = oa.create_scene_qr("AliceScene123456", 3600)
    bob = state.openid(OA_APPID, "bob")

    played = control(sandbox, "POST", "sandbox/oa/events", json={"user": "bob", "event": "subscribe", "ticket": qr.ticket})
    answer = played.json()
    assert played.status_code == 200 and answer["status"] == 200 and answer["error"] is None
    assert answer["reply"]["Content"] == "got subscribe_scan" and answer["reply"]["ToUserName"] == bob
    assert answer["reply"]["FromUserName"] == original_id(OA_APPID)
    message, openid_param = seen[-1]
    assert isinstance(message, SubscribeScanEvent) and message.scene_id == "AliceScene123456"
    assert message.ticket == qr.ticket and message.source == bob == openid_param
    assert ("<Encrypt>" in answer["body"]) is False  # the sandbox hands back the decrypted reply

    info = oa.user_info(bob)
    assert info.subscribed and info.unionid == state.unionid("bob")

    scanned = control(sandbox, "POST", "sandbox/oa/events", json={"user": "bob", "event": "SCAN", "ticket": qr.ticket})
    assert scanned.json()["reply"]["Content"] == "got scan"
    assert isinstance(seen[-1][0], ScanEvent) and seen[-1][0].scene_id == "AliceScene123456"

    texted = control(sandbox, "POST", "sandbox/oa/events", json={"user": "bob", "text": "你好"}).json()
    assert texted["reply"] is None and texted["error"] is None and texted["body"] == SUCCESS

    left = control(sandbox, "POST", "sandbox/oa/events", json={"user": "bob", "event": "unsubscribe"}).json()
    assert left["status"] == 200 and not oa.user_info(bob).subscribed


def test_sandbox_refuses_impossible_plays(sandbox: SandboxServer, oa: OfficialAccount,
                                         receiver: tuple[SandboxServer, list[Any]]) -> None:
    play: Callable[..., requests.Response] = lambda **body: control(sandbox, "POST", "sandbox/oa/events", json=body)
    assert play(user="bob", event="subscribe").status_code == 409  # no callback URL yet
    server, _ = receiver
    control(sandbox, "PUT", "sandbox/oa/push", json={"appid": OA_APPID, "token": TOKEN,
                                                     "callback_url": f"{server.base_url}plain/wechat/oa"})
    qr = oa.create_scene_qr("s", 60)
    assert play(user="bob", event="SCAN", ticket=qr.ticket).status_code == 409  # not a follower
    assert play(user="bob", event="subscribe", ticket="made-up").status_code == 400
    assert play(user="bob", event="unsubscribe").status_code == 409
    assert play(user="b o b", event="subscribe").status_code == 400
    assert play(user="bob", event="subscribe").status_code == 200
    assert play(user="bob", event="subscribe", ticket=qr.ticket).status_code == 409  # already follows: that is a SCAN
    assert play(user="bob", event="VIEW").status_code == 400
    control(sandbox, "POST", "sandbox/oa/reset")
    assert play(user="bob", event="subscribe").status_code == 200


def test_sandbox_reports_replies_wechat_would_drop(sandbox: SandboxServer, receiver: tuple[SandboxServer, list[Any]]) -> None:
    server, _ = receiver
    # The console says safe mode but the app has no AES key: it cannot read the message, WeChat shows an error.
    control(sandbox, "PUT", "sandbox/oa/push", json={"appid": OA_APPID, "token": TOKEN, "aes_key": AES_KEY,
                                                     "callback_url": f"{server.base_url}plain/wechat/oa"})
    answer = control(sandbox, "POST", "sandbox/oa/events", json={"user": "carol", "event": "subscribe"}).json()
    assert answer["status"] == 400 and answer["error"] == "HTTP 400"
    control(sandbox, "PUT", "sandbox/oa/push", json={"appid": OA_APPID, "token": TOKEN,
                                                     "callback_url": "http://127.0.0.1:9/wechat/oa"})
    answer = control(sandbox, "POST", "sandbox/oa/events", json={"user": "dave", "event": "subscribe"}).json()
    assert answer["status"] is None and answer["error"].startswith("callback unreachable")


def test_message_push_from_config() -> None:
    settings = vars(config.TestingConfig()) | {"PUBLIC_BASE_URL": "https://shop.example.com/"}
    push = message_push_from_config(settings)
    assert push == MessagePush(config.SANDBOX_DEFAULTS["WECHAT_OA_APPID"], config.SANDBOX_DEFAULTS["WECHAT_OA_TOKEN"],
                               "https://shop.example.com/wechat/oa", config.SANDBOX_DEFAULTS["WECHAT_OA_AES_KEY"])
    assert message_push_from_config({"WECHAT_OA_APPID": "wx1"}) is None


# -- the app wiring ---------------------------------------------------------------------------------


def test_init_app_builds_the_official_account(sandbox: SandboxServer) -> None:
    app = Flask("oa-wiring")
    settings = config.TestingConfig()
    settings.REDIS_URL = None
    settings.WECHAT_API_BASE = sandbox.base_url
    app.config.from_mapping(vars(settings))
    cache.init_app(app)
    wechat.init_app(app)
    with app.app_context():
        account = wechat.official_account()
        assert account is wechat.official_account() and account.appid == settings.WECHAT_OA_APPID
        # Every WeChat host follows WECHAT_API_BASE in the sandbox unless configured apart.
        assert account.mp_base == account.open_base == sandbox.base_url
        assert wechat.oa_messages() is not None
    app.extensions["wechat_miniprogram"].close()
    account.close()

    bad = Flask("oa-bad-key")
    bad.config.from_mapping(vars(settings) | {"WECHAT_OA_AES_KEY": "not-a-key"})
    cache.init_app(bad)
    with pytest.raises(ValueError):
        wechat.init_app(bad)


def test_production_hosts() -> None:
    account = OfficialAccount.from_config({"WECHAT_OA_APPID": "wx1", "WECHAT_OA_SECRET": "s"})
    assert account.mp_base == "https://mp.weixin.qq.com/" and account.open_base == "https://open.weixin.qq.com/"
    assert account.oauth_url("https://a.example/", "s").startswith("https://open.weixin.qq.com/connect/oauth2/authorize?")
    account.close()
