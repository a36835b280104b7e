"""The official account (公众号).

Four hosts' worth of WeChat live here: API calls (api.weixin.qq.com), QR images
(mp.weixin.qq.com), the OAuth page (open.weixin.qq.com), and WeChat's own pushes to
the app's callback URL, which the sandbox makes when told to play a user (``oa_users``).
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, request
from markupsafe import escape

from wechat_sandbox.core import TOKEN_TTL, WeChatFault, json_body, state, wechat_api
from wechat_sandbox.miniprogram import render_code

#: WeChat's limits on parametric QR codes.
QR_SCENE_STR_MAX = 64
QR_MIN_EXPIRE, QR_MAX_EXPIRE, QR_DEFAULT_EXPIRE = 60, 2_592_000, 60
QR_LIMIT_SCENE_ID_MAX = 100_000
QR_SCENE_ID_MAX = 2**32 - 1
QR_ACTIONS = frozenset({"QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"})
#: The OAuth code the sandbox's authorize page hands out: ``sandbox-oauth:<name>`` for snsapi_base.
OAUTH_CODE = re.compile(r"sandbox-oauth(-userinfo|-snapshot)?:([A-Za-z0-9_.\-]{1,64})")
OAUTH_SCOPES = frozenset({"snsapi_base", "snsapi_userinfo"})
#: WeChat allows ``state`` up to 128 bytes of letters and digits.
OAUTH_STATE = re.compile(r"[A-Za-z0-9]{0,128}")
#: A callback's way of saying "no reply", besides an empty body.
SUCCESS_REPLY = "success"
#: Menu limits: 1-3 buttons of up to 16 bytes, each with up to 5 sub-buttons of up to 60 bytes.
MENU_MAX_BUTTONS, MENU_MAX_SUB_BUTTONS = 3, 5
MENU_NAME_BYTES, MENU_SUB_NAME_BYTES = 16, 60
MENU_KEY_BYTES, MENU_URL_BYTES = 128, 1024
#: Button types that send the app an event carrying ``key``.
MENU_KEY_TYPES = frozenset({
    "click", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album", "pic_weixin", "location_select",
})
#: Button types that open published material, and the field naming it.
MENU_MEDIA_TYPES = {"media_id": "media_id", "view_limited": "media_id", "article_id": "article_id",
                    "article_view_limited": "article_id"}


@dataclass
class MessagePush:
    """An official account's 服务器配置 in the MP console: where WeChat posts its messages, and how."""

    appid: str
    token: str
    #: The app's callback URL (``…/wechat/oa``); None until someone sets it.
    callback_url: str | None = None
    #: The EncodingAESKey: set means safe mode (``encrypt_type=aes``), None means plaintext mode.
    aes_key: str | None = None


def message_push_from_config(config: Mapping[str, Any]) -> MessagePush | None:
    """The push settings matching the app's configuration; safe mode when it has an AES key."""
    appid, token = config.get("WECHAT_OA_APPID"), config.get("WECHAT_OA_TOKEN")
    if not (appid and token):
        return None
    base = (config.get("PUBLIC_BASE_URL") or "").rstrip("/")
    return MessagePush(
        appid=appid,
        token=token,
        callback_url=f"{base}/wechat/oa" if base else None,
        aes_key=config.get("WECHAT_OA_AES_KEY") or None,
    )


@dataclass
class _QRCode:
    appid: str
    #: What the code carries: ``scene_str``, or ``scene_id`` as text.
    scene: str
    url: str
    #: None for a permanent code.
    expires_at: float | None


@dataclass
class _Follower:
    subscribed_at: int
    #: The scene of the QR code they followed through, if any.
    qr_scene: str | None


class OfficialAccountState:
    """What the sandbox remembers of official accounts: QR codes, followers, menus, where to push."""

    def __init__(self, push: MessagePush | None) -> None:
        self.lock = threading.Lock()
        self.push = push
        self.qrcodes: dict[str, _QRCode] = {}
        self.followers: dict[tuple[str, str], _Follower] = {}
        #: (appid, openid) -> name, for the openids WeChat has already revealed to that app.
        self.known: dict[tuple[str, str], str] = {}
        self.menus: dict[str, list[dict[str, Any]]] = {}

    def meet(self, appid: str, openid: str, name: str) -> None:
        """The app has now seen ``openid`` (through a message or OAuth), so ``user/info`` may answer for it."""
        with self.lock:
            self.known[(appid, openid)] = name

    def name_of(self, appid: str, openid: str) -> str | None:
        with self.lock:
            return self.known.get((appid, openid))

    def issue_qrcode(self, appid: str, scene: str, expire_seconds: int | None) -> tuple[str, _QRCode]:
        qr_id = secrets.token_urlsafe(16)
        # Real tickets are base64 of binary data; this prefix guarantees the "+", "/" and "="
        # a client must escape when it puts the ticket into a URL.
        raw = b"\xfb\xef\xbf" + qr_id.encode("ascii") + os.urandom(8)
        ticket = base64.b64encode(raw + b"\0" * ((1 - len(raw)) % 3)).decode("ascii")
        entry = _QRCode(appid, scene, f"http://weixin.qq.com/q/{qr_id}",
                        None if expire_seconds is None else time.time() + expire_seconds)
        with self.lock:
            self.qrcodes[ticket] = entry
        return ticket, entry

    def qrcode(self, ticket: str) -> _QRCode | None:
        """The live QR code of ``ticket``; None when unknown or expired."""
        with self.lock:
            entry = self.qrcodes.get(ticket)
        if entry is None or (entry.expires_at is not None and entry.expires_at <= time.time()):
            return None
        return entry


def oa_state() -> OfficialAccountState:
    """The official-account state of the sandbox app handling the current request."""
    return current_app.extensions["sandbox_oa"]


def original_id(appid: str) -> str:
    """The account's original id (原始ID, ``gh_…``): ``ToUserName`` of every message pushed to it."""
    return "gh_" + hashlib.sha256(f"original-id\0{appid}".encode("utf-8")).hexdigest()[:12]


official_account_bp = Blueprint("sandbox_official_account", __name__)


def _int_field(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WeChatFault(47001, "data format error")
    return value


@wechat_api(official_account_bp, "/cgi-bin/qrcode/create", "POST")
def create_qrcode() -> Response:
    appid = state().check_token(request.args.get("access_token"))
    body = json_body(WeChatFault(47001, "data format error"))
    action = body.get("action_name")
    if action not in QR_ACTIONS:
        raise WeChatFault(40097, "invalid args: action_name")
    info = body.get("action_info")
    scene = info.get("scene") if isinstance(info, dict) else None
    if not isinstance(scene, dict):
        raise WeChatFault(47001, "data format error")
    if action.endswith("STR_SCENE"):
        value = scene.get("scene_str")
        if not isinstance(value, str) or not 1 <= len(value) <= QR_SCENE_STR_MAX:
            raise WeChatFault(40097, "invalid args: scene_str")
    else:
        scene_id = _int_field(scene.get("scene_id"))
        if not 1 <= scene_id <= (QR_LIMIT_SCENE_ID_MAX if action == "QR_LIMIT_SCENE" else QR_SCENE_ID_MAX):
            raise WeChatFault(40097, "invalid args: scene_id")
        value = str(scene_id)
    permanent = action.startswith("QR_LIMIT")
    expire: int | None = None
    if not permanent:
        expire = _int_field(body.get("expire_seconds", QR_DEFAULT_EXPIRE))
        if not QR_MIN_EXPIRE <= expire <= QR_MAX_EXPIRE:
            raise WeChatFault(40097, "invalid args: expire_seconds")
    ticket, entry = oa_state().issue_qrcode(appid, value, expire)
    if permanent:
        return jsonify(ticket=ticket, url=entry.url)
    return jsonify(ticket=ticket, expire_seconds=expire, url=entry.url)


@wechat_api(official_account_bp, "/cgi-bin/user/info", "GET")
def user_info() -> Response:
    appid = state().check_token(request.args.get("access_token"))
    openid = request.args.get("openid") or ""
    name = oa_state().name_of(appid, openid)
    if name is None:
        raise WeChatFault(40003, "invalid openid")
    with oa_state().lock:
        follower = oa_state().followers.get((appid, name))
    if follower is None:
        # WeChat: "值为0时，代表此用户没有关注该公众号，拉取不到其余信息".
        return jsonify(subscribe=0, openid=openid)
    return jsonify(
        subscribe=1,
        openid=openid,
        language="zh_CN",
        subscribe_time=follower.subscribed_at,
        unionid=state().unionid(name),
        remark="",
        groupid=0,
        tagid_list=[],
        subscribe_scene="ADD_SCENE_QR_CODE" if follower.qr_scene is not None else "ADD_SCENE_SEARCH",
        qr_scene=0,
        qr_scene_str=follower.qr_scene or "",
    )


def _utf8_length(value: Any) -> int:
    return len(value.encode("utf-8")) if isinstance(value, str) else -1


def _check_menu_action(button: dict[str, Any], sub: bool) -> None:
    """One clickable button; WeChat has a separate errcode for each field at each level."""
    kind = button.get("type")
    if kind in MENU_KEY_TYPES:
        if not 1 <= _utf8_length(button.get("key")) <= MENU_KEY_BYTES:
            raise WeChatFault(40026, "invalid sub button key size") if sub else WeChatFault(40019, "invalid button key size")
    elif kind in ("view", "miniprogram"):
        url = button.get("url")
        if not isinstance(url, str) or not 1 <= _utf8_length(url) <= MENU_URL_BYTES or not url.startswith(("http://", "https://")):
            raise WeChatFault(40027, "invalid sub button url size") if sub else WeChatFault(40020, "invalid button url size")
        if kind == "miniprogram":
            if button.get("appid") not in state().apps:
                raise WeChatFault(40013, "invalid appid")
            if not isinstance(button.get("pagepath"), str) or not button["pagepath"]:
                raise WeChatFault(40097, "invalid args: pagepath")
    elif kind in MENU_MEDIA_TYPES:
        if not isinstance(button.get(MENU_MEDIA_TYPES[kind]), str) or not button[MENU_MEDIA_TYPES[kind]]:
            raise WeChatFault(40007, "invalid media_id")
    else:
        raise WeChatFault(40017, "invalid button type")


def check_menu(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The buttons of a ``menu/create`` body, or WeChat's refusal of its shape."""
    buttons = body.get("button")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= MENU_MAX_BUTTONS:
        raise WeChatFault(40016, "invalid button size")
    for button in buttons:
        if not isinstance(button, dict):
            raise WeChatFault(47001, "data format error")
        if not 1 <= _utf8_length(button.get("name")) <= MENU_NAME_BYTES:
            raise WeChatFault(40018, "invalid button name size")
        subs = button.get("sub_button")
        if subs:
            if not isinstance(subs, list) or len(subs) > MENU_MAX_SUB_BUTTONS:
                raise WeChatFault(40023, "invalid sub button size")
            for sub in subs:
                if not isinstance(sub, dict) or sub.get("sub_button"):
                    raise WeChatFault(40023, "invalid sub button size")
                if not 1 <= _utf8_length(sub.get("name")) <= MENU_SUB_NAME_BYTES:
                    raise WeChatFault(40025, "invalid sub button name size")
                _check_menu_action(sub, sub=True)
        else:
            _check_menu_action(button, sub=False)
    return buttons


@wechat_api(official_account_bp, "/cgi-bin/menu/create", "POST")
def create_menu() -> Response:
    appid = state().check_token(request.args.get("access_token"))
    buttons = check_menu(json_body(WeChatFault(47001, "data format error")))
    with oa_state().lock:
        oa_state().menus[appid] = buttons
    return jsonify(errcode=0, errmsg="ok")


def _selfmenu_button(button: dict[str, Any]) -> dict[str, Any]:
    if button.get("sub_button"):
        return {"name": button["name"], "sub_button": {"list": [_selfmenu_button(b) for b in button["sub_button"]]}}
    return {k: v for k, v in button.items() if k != "sub_button"}


@wechat_api(official_account_bp, "/cgi-bin/get_current_selfmenu_info", "GET")
def get_current_selfmenu_info() -> Response:
    appid = state().check_token(request.args.get("access_token"))
    with oa_state().lock:
        buttons = oa_state().menus.get(appid)
    if buttons is None:
        return jsonify(is_menu_open=0, selfmenu_info={"button": []})
    return jsonify(is_menu_open=1, selfmenu_info={"button": [_selfmenu_button(b) for b in buttons]})


@wechat_api(official_account_bp, "/cgi-bin/menu/get", "GET")
def get_menu() -> Response:
    appid = state().check_token(request.args.get("access_token"))
    with oa_state().lock:
        buttons = oa_state().menus.get(appid)
    if buttons is None:
        raise WeChatFault(46003, "menu no exist")
    return jsonify(menu={"button": buttons})


@wechat_api(official_account_bp, "/sns/oauth2/access_token", "GET")
def oauth_access_token() -> Response:
    args = request.args
    appid = state().check_credentials(args.get("appid"), args.get("secret"))
    if args.get("grant_type") != "authorization_code":
        raise WeChatFault(40002, "invalid grant_type")
    code = args.get("code")
    if not code:
        raise WeChatFault(41008, "missing code")
    match = OAUTH_CODE.fullmatch(code)
    if match is None:
        raise WeChatFault(40029, "invalid code")
    kind, name = match.group(1), match.group(2)
    if kind == "-snapshot":
        # A Moments snapshot page (朋友圈快照页): a virtual user with an openid shared by every
        # viewer, only ever snsapi_base, flagged is_snapshotuser so the page can ask for the real one.
        return jsonify(
            access_token=secrets.token_urlsafe(64),
            expires_in=TOKEN_TTL,
            refresh_token=secrets.token_urlsafe(64),
            openid=state().snapshot_openid(appid),
            scope="snsapi_base",
            is_snapshotuser=1,
        )
    userinfo = kind == "-userinfo"
    openid = state().openid(appid, name)
    oa_state().meet(appid, openid, name)
    answer: dict[str, Any] = {
        "access_token": secrets.token_urlsafe(64),
        "expires_in": TOKEN_TTL,
        "refresh_token": secrets.token_urlsafe(64),
        "openid": openid,
        "scope": "snsapi_userinfo" if userinfo else "snsapi_base",
    }
    # As WeChat documents it: unionid "只有当scope为snsapi_userinfo时返回".
    if userinfo:
        answer["unionid"] = state().unionid(name)
    return jsonify(answer)


# The QR image host (mp.weixin.qq.com) and the OAuth page host (open.weixin.qq.com) answer
# browsers, not API clients: errors are pages and HTTP statuses, not errcodes.

mp_bp = Blueprint("sandbox_mp", __name__)


@mp_bp.get("/cgi-bin/showqrcode")
def show_qrcode() -> Response:
    state().count("/cgi-bin/showqrcode")
    entry = oa_state().qrcode(request.args.get("ticket") or "")
    if entry is None:
        return Response("invalid or expired ticket", status=404, mimetype="text/plain")
    return Response(render_code(entry.url, 430), mimetype="image/png")


open_bp = Blueprint("sandbox_open", __name__)


def _oauth_page(status: int, message: str) -> Response:
    page = f"<!doctype html><meta charset=utf-8><title>微信网页授权</title><p>{message}</p>"
    return Response(page, status=status, mimetype="text/html")


@open_bp.get("/connect/oauth2/authorize")
def oauth_authorize() -> Response:
    """WeChat's OAuth page; ``sandbox_user=<name>`` stands in for the WeChat client that is signed in."""
    state().count("/connect/oauth2/authorize")
    args = request.args
    if args.get("appid") not in state().apps:
        return _oauth_page(400, "参数错误：appid 无效")
    redirect_uri = args.get("redirect_uri") or ""
    if not redirect_uri.startswith(("http://", "https://")):
        return _oauth_page(400, "10003 redirect_uri 参数错误")
    if args.get("response_type") != "code":
        return _oauth_page(400, "参数错误：response_type 必须为 code")
    scope = args.get("scope")
    if scope not in OAUTH_SCOPES:
        return _oauth_page(400, "10005 此公众号并没有这些 scope 的权限")
    given_state = args.get("state", "")
    if not OAUTH_STATE.fullmatch(given_state):
        return _oauth_page(400, "参数错误：state 至多 128 个字母或数字")
    name = args.get("sandbox_user")
    if name is None:
        # In a desktop browser during development: a form that plays the WeChat user of a name.
        hidden = "".join(f'<input type=hidden name="{escape(key)}" value="{escape(value)}">' for key, value in args.items(multi=True))
        form = (
            f'<form method=get>{hidden}<label>扮演用户（小程序里用同一名字登录过的会员）：<input name=sandbox_user required '
            'pattern="[A-Za-z0-9_.\\-]{1,64}" placeholder="alice"></label> <button>授权</button></form>'
        )
        return _oauth_page(200, "请在微信客户端打开链接（沙箱：加上 sandbox_user=&lt;名字&gt; 参数扮演该用户）" + form)
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
        return _oauth_page(400, "sandbox_user 必须是 1-64 个字母、数字或 _ . -")
    if args.get("sandbox_snapshot") == "1":
        code = f"sandbox-oauth-snapshot:{name}"
    else:
        code = f"sandbox-oauth-userinfo:{name}" if scope == "snsapi_userinfo" else f"sandbox-oauth:{name}"
    separator = "&" if "?" in redirect_uri else "?"
    target = redirect_uri.split("#", 1)[0] + separator + urlencode({"code": code, "state": given_state})
    return Response(status=302, headers={"Location": target})
