"""The sandbox: a fake WeChat on its own HTTP server, speaking WeChat's wire formats.

Dev runs and tests point ``WECHAT_API_BASE`` here; the client code cannot tell it
from WeChat. It is as strict as WeChat (wrong method, missing or expired token,
bad scene are all refused the way WeChat refuses them) so the client is really
exercised, and it answers errors as WeChat does: HTTP 200 with ``errcode``/``errmsg``.

Codes the sandbox accepts, standing in for what a phone would produce:

- ``wx.login()`` code ``sandbox:<name>``: always the same member ``<name>``
  (1–64 of ``A-Za-z0-9_-.``); openid differs per appid, unionid does not.
- ``getPhoneNumber`` code ``sandbox-phone:13800138000`` (mainland, +86) or
  ``sandbox-phone:+852-51234567`` (elsewhere).

- Official-account OAuth: ``/connect/oauth2/authorize?…&sandbox_user=<name>``
  redirects at once with code ``sandbox-oauth:<name>`` (``snsapi_base``) or
  ``sandbox-oauth-userinfo:<name>`` (``snsapi_userinfo``); only the latter's
  exchange returns a unionid, as WeChat documents.

The official account's users are played on request: ``POST /sandbox/oa/events``
makes user ``<name>`` follow (through a QR code), scan, leave or write, and the
sandbox pushes WeChat's signed, optionally encrypted XML to the callback URL set
in ``MessagePush`` (the MP console's 服务器配置, also ``PUT /sandbox/oa/push``).

Each API family is one blueprint registered in ``create_sandbox_app``: access
token, mini-program, official account (with the QR-image and OAuth hosts as
blueprints of their own). Pay v2 and Pay v3 belong next to them as their own
blueprints, keeping their state on ``SandboxState`` or their own
``app.extensions`` entry.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

import qrcode
import qrcode.constants
import requests
import xmltodict
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from PIL import Image, ImageDraw
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from server.wechat.client import redact_url
from server.wechat.formats import SCENE_MAX_LENGTH, SCENE_RE

#: WeChat's access tokens live two hours.
TOKEN_TTL = 7200
#: After a new token is issued the previous one keeps working this long, as on WeChat.
OLD_TOKEN_GRACE = 300
#: Expired tokens are forgotten (and then answer 40001, not 42001) after this long.
EXPIRED_TOKEN_MEMORY = 3600

#: The image width range WeChat clamps ``width`` to.
CODE_MIN_WIDTH, CODE_MAX_WIDTH = 280, 1280
#: The stand-in for the round "sun code" is a QR code at this error-correction level.
QR_ERROR_CORRECTION = qrcode.constants.ERROR_CORRECT_M
#: Blank modules around the code, the quiet zone a scanner needs.
QR_QUIET_MODULES = 4

LOGIN_CODE = re.compile(r"sandbox:([A-Za-z0-9_.\-]{1,64})")
PHONE_CODE = re.compile(r"sandbox-phone:(?:\+([1-9]\d{0,3})-)?(\d{4,15})")
CN_MOBILE = re.compile(r"1\d{10}")
#: A page path as WeChat wants it: no leading slash, no query (parameters go in the scene).
PAGE_PATH = re.compile(r"[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*")
ENV_VERSIONS = frozenset({"release", "trial", "develop"})


class WeChatFault(Exception):
    """An error answer, rendered as WeChat renders it: HTTP 200, ``errcode`` and ``errmsg``."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode} {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


@dataclass
class _Token:
    appid: str
    expires_at: float
    #: "normal" (cgi-bin/token) or "stable" (cgi-bin/stable_token): WeChat keeps them apart.
    kind: str


class SandboxState:
    """Everything the sandbox remembers, in memory, behind one lock."""

    def __init__(self, apps: Mapping[str, str], seed: str, pages: frozenset[str] | None = None) -> None:
        self.apps = dict(apps)
        self._seed = seed.encode("utf-8")
        #: Pages a ``check_path`` code may open; None accepts any well-formed path.
        self.pages = pages
        self.lock = threading.Lock()
        self.tokens: dict[str, _Token] = {}
        self._stable: dict[str, str] = {}
        #: Calls to cgi-bin/token and cgi-bin/stable_token, refused ones included.
        self.token_requests = 0
        #: Calls per route path, so a test can see what its client really sent.
        self.calls: Counter[str] = Counter()
        #: Seconds the token endpoints stall before answering, to widen races in tests.
        self.token_delay = 0.0

    def count(self, path: str) -> None:
        """Record one call to ``path``."""
        with self.lock:
            self.calls[path] += 1
            if path.startswith("/cgi-bin/") and path.endswith("token"):
                self.token_requests += 1

    def check_credentials(self, appid: str | None, secret: str | None) -> str:
        """The appid if ``appid``/``secret`` are an app this sandbox knows, else WeChat's refusal."""
        if not appid:
            raise WeChatFault(41002, "appid missing")
        known = self.apps.get(appid)
        if known is None:
            raise WeChatFault(40013, "invalid appid")
        if not secret:
            raise WeChatFault(41004, "appsecret missing")
        if not hmac.compare_digest(known.encode("utf-8"), secret.encode("utf-8")):
            raise WeChatFault(40125, "invalid appsecret")
        return appid

    def issue_token(self, appid: str, kind: str = "normal") -> tuple[str, int]:
        """A new access token for ``appid``; earlier ones of the same kind keep a short grace."""
        token = secrets.token_urlsafe(96)
        now = time.time()
        with self.lock:
            self._forget_expired(now)
            for old in self.tokens.values():
                if old.appid == appid and old.kind == kind:
                    old.expires_at = min(old.expires_at, now + OLD_TOKEN_GRACE)
            self.tokens[token] = _Token(appid, now + TOKEN_TTL, kind)
            if kind == "stable":
                self._stable[appid] = token
        return token, TOKEN_TTL

    def stable_token(self, appid: str, force_refresh: bool) -> tuple[str, int]:
        """The current stable token of ``appid`` with its remaining lifetime, or a new one."""
        now = time.time()
        with self.lock:
            current = self.tokens.get(self._stable.get(appid, ""))
            if current is not None and not force_refresh and current.expires_at - now > OLD_TOKEN_GRACE:
                return self._stable[appid], int(current.expires_at - now)
        return self.issue_token(appid, kind="stable")

    def _forget_expired(self, now: float) -> None:
        for token in [t for t, v in self.tokens.items() if v.expires_at + EXPIRED_TOKEN_MEMORY < now]:
            del self.tokens[token]

    def check_token(self, token: str | None) -> str:
        """The appid ``token`` belongs to, or WeChat's refusal (41001, 40001, 42001)."""
        if not token:
            raise WeChatFault(41001, "access_token missing")
        with self.lock:
            entry = self.tokens.get(token)
        if entry is None:
            raise WeChatFault(40001, "invalid credential, access_token is invalid or not latest")
        if entry.expires_at <= time.time():
            raise WeChatFault(42001, "access_token expired")
        return entry.appid

    def revoke_tokens(self, appid: str | None = None) -> int:
        """Forget every access token (of ``appid``), as when the secret is reset; returns how many."""
        with self.lock:
            doomed = [t for t, v in self.tokens.items() if appid is None or v.appid == appid]
            for token in doomed:
                del self.tokens[token]
            return len(doomed)

    def expire_tokens(self, appid: str | None = None) -> int:
        """Make every access token (of ``appid``) expired, so it answers 42001; returns how many."""
        past = time.time() - 1
        with self.lock:
            hit = [v for v in self.tokens.values() if appid is None or v.appid == appid]
            for entry in hit:
                entry.expires_at = min(entry.expires_at, past)
            return len(hit)

    def _derive(self, *parts: str) -> str:
        digest = hmac.new(self._seed, "\0".join(parts).encode("utf-8"), hashlib.sha256).digest()
        return "o" + base64.urlsafe_b64encode(digest).decode("ascii")[:27]

    def openid(self, appid: str, name: str) -> str:
        """The stable openid of member ``name`` in ``appid``: 28 characters, different per app."""
        return self._derive("openid", appid, name)

    def unionid(self, name: str) -> str:
        """The stable unionid of member ``name``: the same in every app of this sandbox."""
        return self._derive("unionid", name)


def state() -> SandboxState:
    """The state of the sandbox app handling the current request."""
    return current_app.extensions["sandbox_state"]


def _render_fault(fault: WeChatFault) -> Response:
    # WeChat appends a request id to every error message; clients must not match on errmsg.
    rid = "-".join(os.urandom(4).hex() for _ in range(3))
    return jsonify(errcode=fault.errcode, errmsg=f"{fault.errmsg} rid: {rid}")


def wechat_api(bp: Blueprint, rule: str, method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a WeChat endpoint: counted, and a wrong method refused with WeChat's errcode."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> Any:
            state().count(rule)
            if request.method != method:
                raise WeChatFault(43002, "require POST method") if method == "POST" else WeChatFault(
                    43001, "require GET method"
                )
            return view(**kwargs)

        bp.add_url_rule(rule, view.__name__, wrapper, methods=["GET", "POST"])
        return view

    return decorator


def json_body(fault: WeChatFault) -> dict[str, Any]:
    """The request body as a JSON object, whatever its Content-Type (WeChat ignores it), or ``fault``."""
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except ValueError:
        raise fault from None
    if not isinstance(body, dict):
        raise fault
    return body


def _stall() -> None:
    delay = state().token_delay
    if delay > 0:
        time.sleep(delay)


# -- access token ------------------------------------------------------------

token_bp = Blueprint("sandbox_token", __name__)


@wechat_api(token_bp, "/cgi-bin/token", "GET")
def get_token() -> Response:
    args = request.args
    if args.get("grant_type") != "client_credential":
        raise WeChatFault(40002, "invalid grant_type")
    appid = state().check_credentials(args.get("appid"), args.get("secret"))
    _stall()
    token, expires_in = state().issue_token(appid)
    return jsonify(access_token=token, expires_in=expires_in)


@wechat_api(token_bp, "/cgi-bin/stable_token", "POST")
def get_stable_token() -> Response:
    body = json_body(WeChatFault(47001, "data format error"))
    if body.get("grant_type") != "client_credential":
        raise WeChatFault(40002, "invalid grant_type")
    appid = state().check_credentials(body.get("appid"), body.get("secret"))
    force = body.get("force_refresh", False)
    if not isinstance(force, bool):
        raise WeChatFault(47001, "data format error")
    _stall()
    token, expires_in = state().stable_token(appid, force)
    return jsonify(access_token=token, expires_in=expires_in)


# -- mini-program --------------------------------------------------------------

miniprogram_bp = Blueprint("sandbox_miniprogram", __name__)


@wechat_api(miniprogram_bp, "/sns/jscode2session", "GET")
def jscode2session() -> Response:
    args = request.args
    appid = state().check_credentials(args.get("appid"), args.get("secret"))
    if args.get("grant_type") != "authorization_code":
        raise WeChatFault(40002, "invalid grant_type")
    js_code = args.get("js_code")
    if not js_code:
        raise WeChatFault(41008, "missing code")
    match = LOGIN_CODE.fullmatch(js_code)
    if match is None:
        raise WeChatFault(40029, "invalid code")
    name = match.group(1)
    return jsonify(
        session_key=base64.b64encode(os.urandom(16)).decode("ascii"),
        openid=state().openid(appid, name),
        unionid=state().unionid(name),
    )


@wechat_api(miniprogram_bp, "/wxa/business/getuserphonenumber", "POST")
def get_user_phone_number() -> Response:
    appid = state().check_token(request.args.get("access_token"))
    body = json_body(WeChatFault(47001, "data format error"))
    code = body.get("code")
    if not isinstance(code, str) or not code:
        raise WeChatFault(47001, "data format error")
    match = PHONE_CODE.fullmatch(code)
    if match is None:
        raise WeChatFault(40029, "invalid code")
    country, digits = match.group(1) or "86", match.group(2)
    if country == "86":
        if not CN_MOBILE.fullmatch(digits):
            raise WeChatFault(40029, "invalid code")
        phone_number = digits
    else:
        phone_number = f"+{country}{digits}"
    return jsonify(
        errcode=0,
        errmsg="ok",
        phone_info={
            "phoneNumber": phone_number,
            "purePhoneNumber": digits,
            "countryCode": country,
            "watermark": {"timestamp": int(time.time()), "appid": appid},
        },
    )


def _color(value: Any) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(value[key]) for key in ("r", "g", "b"))
    except (KeyError, TypeError, ValueError):
        raise WeChatFault(47001, "data format error") from None
    if not all(0 <= c <= 255 for c in rgb):
        raise WeChatFault(47001, "data format error")
    return rgb  # type: ignore[return-value]


def render_code(scene: str, width: int, color: tuple[int, int, int] = (0, 0, 0), transparent: bool = False) -> bytes:
    """A PNG, ``width`` pixels square, of a QR code whose content is exactly ``scene``."""
    qr = qrcode.QRCode(error_correction=QR_ERROR_CORRECTION, box_size=1, border=0)
    qr.add_data(scene)
    qr.make(fit=True)
    matrix = qr.get_matrix()
    modules = len(matrix)
    # Whole pixels per module keep every module the same size, which scanners like.
    box = max(1, width // (modules + 2 * QR_QUIET_MODULES))
    offset = (width - box * modules) // 2
    image = Image.new("RGBA", (width, width), (255, 255, 255, 0 if transparent else 255))
    draw = ImageDraw.Draw(image)
    for row, cells in enumerate(matrix):
        for col, dark in enumerate(cells):
            if dark:
                x, y = offset + col * box, offset + row * box
                draw.rectangle((x, y, x + box - 1, y + box - 1), fill=(*color, 255))
    out = io.BytesIO()
    (image if transparent else image.convert("RGB")).save(out, format="PNG")
    return out.getvalue()


@wechat_api(miniprogram_bp, "/wxa/getwxacodeunlimit", "POST")
def get_wxacode_unlimit() -> Response:
    state().check_token(request.args.get("access_token"))
    bad_scene = WeChatFault(40169, "invalid length for scene, or the data is not json string")
    body = json_body(bad_scene)
    scene = body.get("scene")
    if not isinstance(scene, str) or not 1 <= len(scene) <= SCENE_MAX_LENGTH:
        raise bad_scene
    # fullmatch, not match: the pattern ends in "$", which would let a trailing newline through.
    if not SCENE_RE.fullmatch(scene):
        raise WeChatFault(40129, "invalid scene")

    width = body.get("width", 430)
    if isinstance(width, bool) or not isinstance(width, int):
        raise WeChatFault(47001, "data format error")
    width = min(max(width, CODE_MIN_WIDTH), CODE_MAX_WIDTH)
    env_version = body.get("env_version", "release")
    if env_version not in ENV_VERSIONS:
        raise WeChatFault(40097, "invalid args")
    flags = {name: body.get(name, default) for name, default in
             (("check_path", True), ("auto_color", False), ("is_hyaline", False))}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise WeChatFault(47001, "data format error")

    page = body.get("page")
    if page is not None and not isinstance(page, str):
        raise WeChatFault(47001, "data format error")
    if flags["check_path"] and page:
        known = state().pages
        if not PAGE_PATH.fullmatch(page) or (known is not None and page not in known):
            raise WeChatFault(41030, "invalid page")

    color = (0, 0, 0)
    if not flags["auto_color"] and "line_color" in body:
        color = _color(body["line_color"])
    png = render_code(scene, width, color, transparent=flags["is_hyaline"])
    return Response(png, mimetype="image/png")


# -- official account (公众号) ------------------------------------------------------
#
# Four hosts' worth of WeChat live here: API calls (api.weixin.qq.com), QR images
# (mp.weixin.qq.com), the OAuth page (open.weixin.qq.com), and WeChat's own pushes to
# the app's callback URL, which the sandbox makes when told to play a user.

#: WeChat's limits on parametric QR codes.
QR_SCENE_STR_MAX = 64
QR_MIN_EXPIRE, QR_MAX_EXPIRE, QR_DEFAULT_EXPIRE = 60, 2_592_000, 60
QR_LIMIT_SCENE_ID_MAX = 100_000
QR_SCENE_ID_MAX = 2**32 - 1
QR_ACTIONS = frozenset({"QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"})
#: The OAuth code the sandbox's authorize page hands out: ``sandbox-oauth:<name>`` for snsapi_base.
OAUTH_CODE = re.compile(r"sandbox-oauth(-userinfo)?:([A-Za-z0-9_.\-]{1,64})")
OAUTH_SCOPES = frozenset({"snsapi_base", "snsapi_userinfo"})
#: WeChat allows ``state`` up to 128 bytes of letters and digits.
OAUTH_STATE = re.compile(r"[A-Za-z0-9]{0,128}")
#: Seconds WeChat waits for a callback's answer before it gives up (and retries).
PUSH_TIMEOUT = 5.0
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
        if not 1 <= _utf8_length(url) <= MENU_URL_BYTES or not url.startswith(("http://", "https://")):
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
    userinfo, name = bool(match.group(1)), match.group(2)
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
        return _oauth_page(200, "请在微信客户端打开链接（沙箱：加上 sandbox_user=&lt;名字&gt; 参数扮演该用户）")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
        return _oauth_page(400, "sandbox_user 必须是 1-64 个字母、数字或 _ . -")
    code = f"sandbox-oauth-userinfo:{name}" if scope == "snsapi_userinfo" else f"sandbox-oauth:{name}"
    separator = "&" if "?" in redirect_uri else "?"
    target = redirect_uri.split("#", 1)[0] + separator + urlencode({"code": code, "state": given_state})
    return Response(status=302, headers={"Location": target})


# -- the sandbox plays the official account's users -----------------------------------


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _message_xml(fields: list[tuple[str, str | int]]) -> str:
    nodes = (f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}>{_cdata(v)}</{k}>" for k, v in fields)
    return "<xml>" + "".join(nodes) + "</xml>"


def _sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def _aes_key(encoding_aes_key: str) -> bytes:
    return base64.b64decode(encoding_aes_key + "=")


def _read_reply(push: MessagePush, response: requests.Response, openid: str) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """The reply as WeChat reads it: (plaintext body, message fields, why WeChat would reject it)."""
    text = response.content.decode("utf-8", errors="replace")
    if response.status_code != 200:
        return text, None, f"HTTP {response.status_code}"
    if text.strip() in ("", SUCCESS_REPLY):
        return text, None, None
    try:
        document = xmltodict.parse(text)["xml"]
    except Exception:  # whatever the app sent, WeChat only needs to know it is not a reply
        return text, None, "reply is not XML"
    if not isinstance(document, dict):
        return text, None, "reply is not a message"
    if "Encrypt" in document:
        if push.aes_key is None:
            return text, None, "encrypted reply in plaintext mode"
        try:
            text = WeChatCrypto(push.token, push.aes_key, push.appid).decrypt_message(
                text, document.get("MsgSignature"), document.get("TimeStamp"), document.get("Nonce")
            )
            document = xmltodict.parse(text)["xml"]
        except Exception as exc:  # a bad signature, appid or padding all mean WeChat drops the reply
            return text, None, f"reply cannot be decrypted: {type(exc).__name__}"
    elif push.aes_key is not None:
        return text, None, "plaintext reply in safe mode"
    if not isinstance(document, dict):
        return text, None, "reply is not a message"
    if document.get("ToUserName") != openid or document.get("FromUserName") != original_id(push.appid):
        return text, document, "reply is not addressed from the account to the user"
    if not document.get("MsgType"):
        return text, document, "reply has no MsgType"
    return text, document, None


def push_message(push: MessagePush, openid: str, xml: str) -> dict[str, Any]:
    """POST ``xml`` to the app's callback as WeChat would, signed and (in safe mode) encrypted."""
    assert push.callback_url
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
    params = {"signature": _sha1_signature(push.token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce,
              "openid": openid}
    body = xml
    if push.aes_key is not None:
        encrypted = PrpCrypto(_aes_key(push.aes_key)).encrypt(xml, push.appid).decode("ascii")
        params |= {"encrypt_type": "aes", "msg_signature": _sha1_signature(push.token, timestamp, nonce, encrypted)}
        body = _message_xml([("ToUserName", original_id(push.appid)), ("Encrypt", encrypted)])
    try:
        response = requests.post(push.callback_url, params=params, data=body.encode("utf-8"),
                                 headers={"Content-Type": "text/xml"}, timeout=PUSH_TIMEOUT)
    except requests.RequestException as exc:
        return {"status": None, "body": None, "reply": None, "error": f"callback unreachable: {type(exc).__name__}"}
    text, reply, error = _read_reply(push, response, openid)
    return {"status": response.status_code, "body": text, "reply": reply, "error": error}


def _control_error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


@official_account_bp.route("/sandbox/oa/push", methods=["GET", "PUT", "DELETE"])
def message_push_settings() -> Response:
    """The MP console's 服务器配置: read, replace (``{"appid","token","callback_url","aes_key"}``) or clear it."""
    oa = oa_state()
    if request.method == "PUT":
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or body.get("appid") not in state().apps or not body.get("token"):
            return _control_error(400, "need a known appid and a token")
        aes_key = body.get("aes_key") or None
        if aes_key is not None and (len(aes_key) != 43 or len(_aes_key(aes_key)) != 32):
            return _control_error(400, "aes_key must be a 43-character EncodingAESKey")
        with oa.lock:
            oa.push = MessagePush(body["appid"], body["token"], body.get("callback_url") or None, aes_key)
    elif request.method == "DELETE":
        with oa.lock:
            oa.push = None
    push = oa.push
    return jsonify(push=None if push is None else vars(push))


@official_account_bp.post("/sandbox/oa/reset")
def reset_official_account() -> Response:
    """Forget followers, QR codes and menus (the push settings stay), so tests start from nobody."""
    oa = oa_state()
    with oa.lock:
        oa.followers.clear()
        oa.qrcodes.clear()
        oa.known.clear()
        oa.menus.clear()
    return jsonify(ok=True)


@official_account_bp.post("/sandbox/oa/events")
def play_user() -> Response:
    """Play user ``user`` doing something in WeChat: the account gets the message at its callback URL.

    ``{"user": "bob", "event": "subscribe", "ticket": "…"}`` follows through a QR code (without a
    ticket: through a search); ``"SCAN"`` scans a code while following; ``"unsubscribe"`` leaves;
    ``{"user": "bob", "text": "你好"}`` sends a text. Answers the app's HTTP status and its reply,
    decrypted, with ``error`` saying why WeChat would reject that reply (null when it would not).
    """
    push = oa_state().push
    if push is None or not push.callback_url:
        return _control_error(409, "no callback URL: PUT /sandbox/oa/push first")
    body = request.get_json(silent=True)
    name = body.get("user") if isinstance(body, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
        return _control_error(400, "user must be 1-64 of A-Za-z0-9_.-")
    appid = push.appid
    openid = state().openid(appid, name)
    fields: list[tuple[str, str | int]] = [
        ("ToUserName", original_id(appid)),
        ("FromUserName", openid),
        ("CreateTime", int(time.time())),
    ]
    oa = oa_state()
    with oa.lock:
        following = (appid, name) in oa.followers
    event, text = body.get("event"), body.get("text")
    if isinstance(text, str) and event is None:
        fields += [("MsgType", "text"), ("Content", text), ("MsgId", secrets.randbelow(2**63))]
    elif event in ("subscribe", "SCAN"):
        qr = None
        if body.get("ticket") is not None:
            qr = oa.qrcode(str(body["ticket"]))
            if qr is None or qr.appid != appid:
                return _control_error(400, "no live QR code of this account has that ticket")
        if event == "subscribe" and following:
            return _control_error(409, f"{name} already follows the account: a scan now is a SCAN event")
        if event == "SCAN" and (not following or qr is None):
            return _control_error(409, "SCAN needs a ticket and a user who already follows the account")
        fields += [("MsgType", "event"), ("Event", event)]
        if qr is not None:
            fields += [("EventKey", f"qrscene_{qr.scene}" if event == "subscribe" else qr.scene),
                       ("Ticket", str(body["ticket"]))]
        if event == "subscribe":
            with oa.lock:
                oa.followers[(appid, name)] = _Follower(int(time.time()), qr.scene if qr else None)
    elif event == "unsubscribe":
        if not following:
            return _control_error(409, f"{name} does not follow the account")
        fields += [("MsgType", "event"), ("Event", "unsubscribe"), ("EventKey", "")]
        with oa.lock:
            oa.followers.pop((appid, name), None)
    else:
        return _control_error(400, "event must be subscribe, SCAN or unsubscribe, or give a text")
    oa.meet(appid, openid, name)
    xml = _message_xml(fields)
    return jsonify(openid=openid, sent=xml, **push_message(push, openid, xml))


# -- the sandbox's own controls (not WeChat's) ------------------------------------------

control_bp = Blueprint("sandbox_control", __name__, url_prefix="/sandbox")


@control_bp.get("/health")
def health() -> Response:
    return jsonify(ok=True)


@control_bp.post("/tokens/revoke")
def revoke_tokens() -> Response:
    return jsonify(revoked=state().revoke_tokens(request.args.get("appid")))


@control_bp.post("/tokens/expire")
def expire_tokens() -> Response:
    return jsonify(expired=state().expire_tokens(request.args.get("appid")))


def create_sandbox_app(
    apps: Mapping[str, str],
    *,
    seed: str,
    pages: frozenset[str] | None = None,
    message_push: MessagePush | None = None,
) -> Flask:
    """A Flask app playing WeChat for the apps ``{appid: secret}``; ``seed`` fixes derived ids.

    ``message_push`` is where (``callback_url``) and how the official account's messages are pushed.
    """
    if not apps:
        raise ValueError("the sandbox needs at least one appid and secret")
    app = Flask(__name__)
    app.extensions["sandbox_state"] = SandboxState(apps, seed, pages)
    app.extensions["sandbox_oa"] = OfficialAccountState(message_push)
    app.register_error_handler(WeChatFault, _render_fault)
    for bp in (control_bp, token_bp, miniprogram_bp, official_account_bp, mp_bp, open_bp):
        app.register_blueprint(bp)
    return app


def sandbox_apps_from_config(config: Mapping[str, Any]) -> dict[str, str]:
    """The ``{appid: secret}`` the sandbox should accept: the mini-program's and the official account's."""
    apps: dict[str, str] = {}
    for appid_key, secret_key in (("WECHAT_APPID", "WECHAT_SECRET"), ("WECHAT_OA_APPID", "WECHAT_OA_SECRET")):
        appid, secret = config.get(appid_key), config.get(secret_key)
        if appid and secret:
            apps[appid] = secret
    return apps


class _RedactingRequestHandler(WSGIRequestHandler):
    """Werkzeug's access log, minus secrets: the token and login URLs carry them in the query."""

    def log(self, type: str, message: str, *args: Any) -> None:
        text = message % args if args else message
        super().log(type, "%s", redact_url(text))


class SandboxServer:
    """A sandbox app served on a daemon thread."""

    def __init__(self, app: Flask, server: BaseWSGIServer, thread: threading.Thread) -> None:
        self.app = app
        self._server = server
        self._thread = thread
        self.host = server.host
        self.port = server.port
        self.base_url = f"http://{self.host}:{self.port}/"

    def shutdown(self) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.shutdown()
        self._thread.join(timeout=5)


def serve_in_thread(app: Flask, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    """Serve ``app`` on ``host:port`` (0 picks a free port) from a daemon thread."""
    server = make_server(host, port, app, threaded=True, request_handler=_RedactingRequestHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"wechat-sandbox:{server.port}", daemon=True
    )
    thread.start()
    return SandboxServer(app, server, thread)
