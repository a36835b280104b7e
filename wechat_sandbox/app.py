"""The sandbox: a fake WeChat on its own HTTP server, speaking WeChat's wire formats.

Dev runs and tests point ``WECHAT_API_BASE`` here; the client code cannot tell it
from WeChat. It is as strict as WeChat (wrong method, missing or expired token,
bad scene are all refused the way WeChat refuses them) so the client is really
exercised, and it answers errors as WeChat does: HTTP 200 with ``errcode``/``errmsg``.

Codes the sandbox accepts, standing in for what a phone would produce:

- ``wx.login()`` code ``sandbox:<name>``: always the same member ``<name>``
  (1–64 of ``A-Za-z0-9_-.``); openid differs per appid, unionid does not. A reusable
  developer code: WeChat's own codes work once, and so do the opaque ones
  ``POST /sandbox/users/<name>/code`` issues (a second exchange gets 40163 "code been used";
  after five minutes, 40029).
- ``getPhoneNumber`` code ``sandbox-phone:13800138000`` (mainland, +86) or
  ``sandbox-phone:+852-51234567`` (elsewhere).

- Official-account OAuth: ``/connect/oauth2/authorize?…&sandbox_user=<name>``
  redirects at once with code ``sandbox-oauth:<name>`` (``snsapi_base``) or
  ``sandbox-oauth-userinfo:<name>`` (``snsapi_userinfo``); only the latter's
  exchange returns a unionid, as WeChat documents. With ``sandbox_snapshot=1`` too (code
  ``sandbox-oauth-snapshot:<name>``) the user is looking at a Moments snapshot page: the
  exchange answers ``is_snapshotuser: 1`` and a virtual openid shared by all such viewers.

Openids are issued, as on WeChat: a prepay for an openid the sandbox never handed out
for that appid is refused with OPENID_MISMATCH.

The official account's users are played on request: ``POST /sandbox/oa/events``
makes user ``<name>`` follow (through a QR code), scan, leave or write, and the
sandbox pushes WeChat's signed, optionally encrypted XML to the callback URL set
in ``MessagePush`` (the MP console's 服务器配置, also ``PUT /sandbox/oa/push``).

WeChat Pay is played for one merchant (``PayMerchant``): v2 and v3 orders, queries,
closes and refunds, and the buyer paying (``POST /sandbox/pay/pay``), which sends
WeChat's signed notification to the order's notify URL.

Each API family is one blueprint registered in ``create_sandbox_app``: access
token, mini-program, official account (with the QR-image and OAuth hosts as
blueprints of their own), Pay v2 and Pay v3 (their state in ``app.extensions["sandbox_pay"]``).
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
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

import qrcode
import qrcode.constants
import requests
import xmltodict
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from PIL import Image, ImageDraw
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.pay.utils import calculate_signature, calculate_signature_hmac, dict_to_xml
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from server.api import JSONProvider
from server.config import SANDBOX_DEFAULTS, Config
from server.wechat.client import redact_url
from server.wechat.formats import SCENE_MAX_LENGTH, SCENE_RE
from server.wechat.pay import (
    CHINA_TZ,
    V2_ATTACH_MAX_BYTES,
    V2_BODY_MAX_BYTES,
    V2_DETAIL_MAX_BYTES,
    V2_REFUND_DESC_MAX_BYTES,
    V3_ATTACH_MAX_CHARS,
    V3_DESCRIPTION_MAX_CHARS,
    V3_REASON_MAX_BYTES,
    WECHAT_MIN_PAY_WINDOW,
    SANDBOX_MCH_SERIAL,
    SANDBOX_PLATFORM_SERIAL,
    ensure_sandbox_keys,
    load_private_key,
    load_public_key,
    mute_wechatpy_pay_logs,
    parse_v2_xml,
    sandbox_key_dir,
)

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
#: WeChat's ``wx.login`` codes live five minutes and work once.
LOGIN_CODE_TTL = 300
#: A member name the sandbox can play.
USER_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: JPEG quality of mini-program codes: high enough that no artefact blurs a module edge.
CODE_JPEG_QUALITY = 95
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


@dataclass
class _LoginCode:
    """A one-time ``wx.login`` code the sandbox issued for a member it plays."""

    name: str
    #: The app it may be exchanged in; None for any app of this sandbox.
    appid: str | None
    expires_at: float
    used: bool = False


@dataclass
class _Stall:
    """A route that holds its next ``times`` calls for up to ``seconds``, or until released."""

    seconds: float
    times: int
    released: threading.Event = field(default_factory=threading.Event)
    #: Calls being held right now.
    waiting: int = 0


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
        #: Routes told to hold their next calls (``POST /sandbox/stall``), by path.
        self.stalls: dict[str, _Stall] = {}
        #: Every openid the sandbox has handed out, and the app it belongs to.
        self.issued_openids: dict[str, str] = {}
        #: One-time ``wx.login`` codes (``POST /sandbox/users/<name>/code``), by code.
        self.login_codes: dict[str, _LoginCode] = {}

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
        """The stable openid of member ``name`` in ``appid``: 28 characters, different per app (and now issued)."""
        openid = self._derive("openid", appid, name)
        with self.lock:
            self.issued_openids[openid] = appid
        return openid

    def snapshot_openid(self, appid: str) -> str:
        """The one virtual openid every viewer of ``appid``'s Moments snapshot pages gets."""
        openid = self._derive("snapshot-openid", appid)
        with self.lock:
            self.issued_openids[openid] = appid
        return openid

    def app_of_openid(self, openid: str) -> str | None:
        """The app ``openid`` was issued for; None if the sandbox never issued it."""
        with self.lock:
            return self.issued_openids.get(openid)

    def issue_login_code(self, name: str, appid: str | None) -> str:
        """A fresh one-time ``wx.login`` code of member ``name`` (for ``appid`` only, when given)."""
        code = "0" + secrets.token_urlsafe(24)  # opaque, like WeChat's 32-character codes
        with self.lock:
            now = time.time()
            for stale in [c for c, v in self.login_codes.items() if v.expires_at + LOGIN_CODE_TTL < now]:
                del self.login_codes[stale]
            self.login_codes[code] = _LoginCode(name, appid, now + LOGIN_CODE_TTL)
        return code

    def redeem_login_code(self, code: str, appid: str) -> str:
        """The member a one-time code stands for, which it does only once; else WeChat's refusal."""
        with self.lock:
            entry = self.login_codes.get(code)
            if entry is None or (entry.appid is not None and entry.appid != appid):
                raise WeChatFault(40029, "invalid code")
            if entry.used:
                raise WeChatFault(40163, "code been used")
            if entry.expires_at <= time.time():
                raise WeChatFault(40029, "invalid code")
            entry.used = True
            return entry.name

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
    name = match.group(1) if match is not None else state().redeem_login_code(js_code, appid)
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


def render_code(
    scene: str, width: int, color: tuple[int, int, int] = (0, 0, 0), transparent: bool = False, image_format: str = "PNG"
) -> bytes:
    """An image (PNG, or JPEG unless transparent), ``width`` pixels square, of a QR code whose content is exactly ``scene``."""
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
    if transparent or image_format == "PNG":
        (image if transparent else image.convert("RGB")).save(out, format="PNG")
    else:
        image.convert("RGB").save(out, format="JPEG", quality=CODE_JPEG_QUALITY, subsampling=0)
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
    # WeChat answers image/jpeg, and a PNG only when asked for a transparent background.
    if flags["is_hyaline"]:
        return Response(render_code(scene, width, color, transparent=True), mimetype="image/png")
    return Response(render_code(scene, width, color, image_format="JPEG"), mimetype="image/jpeg")


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
OAUTH_CODE = re.compile(r"sandbox-oauth(-userinfo|-snapshot)?:([A-Za-z0-9_.\-]{1,64})")
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
        return _oauth_page(200, "请在微信客户端打开链接（沙箱：加上 sandbox_user=&lt;名字&gt; 参数扮演该用户）")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
        return _oauth_page(400, "sandbox_user 必须是 1-64 个字母、数字或 _ . -")
    if args.get("sandbox_snapshot") == "1":
        code = f"sandbox-oauth-snapshot:{name}"
    else:
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


# -- WeChat Pay (api.mch.weixin.qq.com) ---------------------------------------------------
#
# One merchant and one book of orders behind two APIs, as on WeChat: v2 (XML signed with the
# API key, errors as return_code/result_code) and v3 (JSON, requests and answers signed with
# SHA256withRSA, errors as HTTP status and {"code","message"}). An order prepaid through
# either can be queried, closed and refunded through either; its notifications take the form
# of the API its latest prepay came through.
#
# The sandbox plays the buyer too: ``POST /sandbox/pay/pay`` pays an order and sends WeChat's
# signed notification to its notify_url; ``POST /sandbox/pay/refund-complete`` ends a refund
# the same way. ``PayState.build_pay_notification`` / ``build_refund_notification`` give tests
# the signed request without sending it, to replay, reorder, tamper with or send at once.

#: Order states of an order query.
NOTPAY, TRADE_SUCCESS, TRADE_CLOSED, TRADE_REFUND = "NOTPAY", "SUCCESS", "CLOSED", "REFUND"
TRADE_STATE_DESC = {NOTPAY: "订单未支付", TRADE_SUCCESS: "支付成功", TRADE_CLOSED: "订单已关闭", TRADE_REFUND: "转入退款"}
#: How a refund ends, in v3's words, and the same in v2's ``refund_status``.
REFUND_ENDINGS = {"SUCCESS": "SUCCESS", "ABNORMAL": "CHANGE", "CLOSED": "REFUNDCLOSE"}
REFUND_SUMMARIES = {"SUCCESS": "退款成功", "ABNORMAL": "退款异常", "CLOSED": "退款关闭"}
#: How far ahead v3 moves a ``time_expire`` that is too close ("系统将自动调整为下单时间后1分钟").
V3_MIN_PAY_WINDOW = 60
#: v3 refuses requests whose timestamp is this far from its clock.
PAY_V3_MAX_SKEW = 300
#: ``out_trade_no``, v2 and v3 alike: 6-32 of digits, letters and ``_-|*`` (v3 JSAPI/小程序下单; v2 统一下单).
OUT_TRADE_NO_RE = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
#: ``transaction_id``: WeChat's 28 digits; at most 32 characters of them accepted here.
TRANSACTION_ID_RE = re.compile(r"\d{1,32}")
OUT_REFUND_NO_RE = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")


@dataclass(frozen=True)
class PayMerchant:
    """The merchant account the sandbox's WeChat Pay serves, with the keys WeChat would hold."""

    mch_id: str
    api_key: str = field(repr=False)
    api_v3_key: str = field(repr=False)
    merchant_serial: str
    #: Checks the app's v3 Authorization headers (and lets tests check a v3 paySign).
    merchant_public_key: rsa.RSAPublicKey
    platform_serial: str
    #: Signs v3 answers and notifications, as WeChat's platform key does.
    platform_private_key: rsa.RSAPrivateKey = field(repr=False)
    #: Apps bound to the merchant; None accepts every app the sandbox knows.
    appids: frozenset[str] | None = None


def pay_merchant_from_config(config: Mapping[str, Any]) -> PayMerchant:
    """The merchant the app's configuration describes, holding the sandbox's generated key pairs."""
    keys = ensure_sandbox_keys(sandbox_key_dir(config))
    appid = config.get("WECHAT_APPID")
    return PayMerchant(
        mch_id=config.get("WECHAT_PAY_MCH_ID") or SANDBOX_DEFAULTS["WECHAT_PAY_MCH_ID"],
        api_key=config.get("WECHAT_PAY_API_KEY") or SANDBOX_DEFAULTS["WECHAT_PAY_API_KEY"],
        api_v3_key=config.get("WECHAT_PAY_API_V3_KEY") or SANDBOX_DEFAULTS["WECHAT_PAY_API_V3_KEY"],
        merchant_serial=SANDBOX_MCH_SERIAL,
        merchant_public_key=load_public_key(keys.merchant_public),
        platform_serial=SANDBOX_PLATFORM_SERIAL,
        platform_private_key=load_private_key(keys.platform_private),
        appids=frozenset({appid}) if appid else None,
    )


class PayFault(Exception):
    """A business refusal, in both APIs' words: v2 ``err_code``, v3 HTTP status and ``code``."""

    def __init__(self, v2_code: str, status: int, v3_code: str, message: str) -> None:
        super().__init__(f"{v3_code}: {message}")
        self.v2_code, self.status, self.v3_code, self.message = v2_code, status, v3_code, message

    @classmethod
    def param(cls, message: str) -> PayFault:
        return cls("PARAM_ERROR", 400, "PARAM_ERROR", message)

    @classmethod
    def missing(cls, name: str) -> PayFault:
        return cls("LACK_PARAMS", 400, "PARAM_ERROR", f"缺少参数{name}")


class _V2ReturnFail(Exception):
    """v2 could not even read the request: ``return_code`` FAIL, unsigned."""


class _V3Fault(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code, self.message = status, code, message


@dataclass
class PayOrder:
    out_trade_no: str
    appid: str
    openid: str
    total_fee: int
    description: str
    notify_url: str
    #: "v2" or "v3": the API of the latest prepay, and so the form of the order's notifications.
    api: str
    #: The v2 prepay's sign type; WeChat signs the order's v2 notifications the same way.
    sign_type: str
    prepay_id: str
    #: Epoch seconds after which the buyer can no longer pay; None: WeChat's default two hours.
    time_expire: float | None
    state: str = NOTPAY
    transaction_id: str | None = None
    paid_at: float | None = None


@dataclass
class PayRefund:
    out_refund_no: str
    out_trade_no: str
    refund_id: str
    refund_fee: int
    notify_url: str | None
    api: str
    created_at: float
    #: PROCESSING until ended by ``refund-complete``: SUCCESS, ABNORMAL or CLOSED.
    status: str = "PROCESSING"
    #: What the merchant gave as the reason (v2 ``refund_desc``, v3 ``reason``).
    reason: str = ""
    success_time: float | None = None
    #: Where an ABNORMAL refund was sent again (发起异常退款): USER_BANK_CARD or MERCHANT_BANK_CARD, with the
    #: bank and the card's last four digits as WeChat decrypted them.
    abnormal_target: dict[str, str] | None = None


def _digits(count: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(count))


def _china(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, CHINA_TZ)


def _rfc3339(epoch: float) -> str:
    return _china(epoch).replace(microsecond=0).isoformat()


def _merge(target: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` merged into ``target`` (nested dicts too); a None value deletes the key."""
    for key, value in overrides.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
    return target


def _v2_signature(fields: Mapping[str, Any], api_key: str, sign_type: str) -> str:
    unsigned = {k: v for k, v in fields.items() if k != "sign"}
    if sign_type == "HMAC-SHA256":
        return calculate_signature_hmac(unsigned, api_key)
    return calculate_signature(unsigned, api_key)


class PayState:
    """The merchant's orders and refunds at WeChat Pay, behind one lock."""

    def __init__(self, merchant: PayMerchant | None = None) -> None:
        self.lock = threading.RLock()
        self._merchant = merchant
        self.orders: dict[str, PayOrder] = {}
        self.refunds: dict[str, PayRefund] = {}

    @property
    def merchant(self) -> PayMerchant:
        """The merchant; without one given, the one the environment's configuration describes."""
        with self.lock:
            if self._merchant is None:
                self._merchant = pay_merchant_from_config(vars(Config()))
            return self._merchant

    def install(self, merchant: PayMerchant) -> None:
        """Serve ``merchant`` from now on (tests give the sandbox the keys their apps hold)."""
        with self.lock:
            self._merchant = merchant

    def reset(self) -> None:
        with self.lock:
            self.orders.clear()
            self.refunds.clear()

    def order(self, out_trade_no: str) -> PayOrder:
        with self.lock:
            found = self.orders.get(out_trade_no)
        if found is None:
            raise PayFault("ORDERNOTEXIST", 404, "ORDER_NOT_EXIST", "订单不存在")
        return found

    def open_order(
        self,
        *,
        out_trade_no: str,
        appid: str,
        openid: str,
        total_fee: int,
        description: str,
        notify_url: str,
        api: str,
        sign_type: str = "MD5",
        time_expire: float | None = None,
    ) -> PayOrder:
        """A prepay: a new order, or the same one again when nothing but the notify URL changed."""
        with self.lock:
            existing = self.orders.get(out_trade_no)
            if existing is not None:
                if existing.state in (TRADE_SUCCESS, TRADE_REFUND):
                    raise PayFault("ORDERPAID", 400, "ORDERPAID", "该订单已支付")
                if existing.state == TRADE_CLOSED:
                    raise PayFault("ORDERCLOSED", 400, "ORDER_CLOSED", "订单已关闭")
                if (existing.appid, existing.openid, existing.total_fee) != (appid, openid, total_fee):
                    raise PayFault("INVALID_REQUEST", 403, "OUT_TRADE_NO_USED", "201 商户订单号重复")
                existing.api, existing.sign_type, existing.notify_url = api, sign_type, notify_url
                existing.time_expire = time_expire or existing.time_expire
                return existing
            order = PayOrder(
                out_trade_no=out_trade_no,
                appid=appid,
                openid=openid,
                total_fee=total_fee,
                description=description,
                notify_url=notify_url,
                api=api,
                sign_type=sign_type,
                prepay_id=f"wx{time.strftime('%d%H%M%S')}{secrets.token_hex(13)}",
                time_expire=time_expire or time.time() + 7200,
            )
            self.orders[out_trade_no] = order
            return order

    def pay(self, out_trade_no: str) -> PayOrder:
        """The buyer pays: the order is SUCCESS from now on (paying twice changes nothing)."""
        with self.lock:
            order = self.order(out_trade_no)
            if order.state in (TRADE_SUCCESS, TRADE_REFUND):
                return order
            if order.state == TRADE_CLOSED or (order.time_expire is not None and order.time_expire <= time.time()):
                raise PayFault("ORDERCLOSED", 400, "ORDER_CLOSED", "订单已关闭")
            order.state = TRADE_SUCCESS
            order.transaction_id = "42000" + _digits(5) + time.strftime("%Y%m%d") + _digits(10)
            order.paid_at = time.time()
            return order

    def close(self, out_trade_no: str) -> None:
        with self.lock:
            order = self.order(out_trade_no)
            if order.state in (TRADE_SUCCESS, TRADE_REFUND):
                raise PayFault("ORDERPAID", 400, "ORDERPAID", "订单已支付，不能发起关单")
            if order.state == TRADE_CLOSED:
                raise PayFault("ORDERCLOSED", 400, "ORDER_CLOSED", "订单已关闭，无法重复关闭")
            order.state = TRADE_CLOSED

    def find_order(self, out_trade_no: str | None, transaction_id: str | None) -> PayOrder | None:
        """The order named by ``transaction_id`` (WeChat prefers it when both come) or ``out_trade_no``."""
        with self.lock:
            if transaction_id:
                return next((o for o in self.orders.values() if o.transaction_id == transaction_id), None)
            return self.orders.get(out_trade_no or "")

    def open_refund(
        self,
        *,
        out_trade_no: str | None,
        out_refund_no: str,
        total_fee: int,
        refund_fee: int,
        notify_url: str | None,
        api: str,
        transaction_id: str | None = None,
        reason: str = "",
    ) -> PayRefund:
        """A refund request for the order named by either id: idempotent on ``out_refund_no``, never more than what was paid."""
        with self.lock:
            order = self.find_order(out_trade_no, transaction_id)
            if order is None:
                raise PayFault("ORDERNOTEXIST", 404, "RESOURCE_NOT_EXISTS", "订单不存在")
            out_trade_no = order.out_trade_no
            if order.state not in (TRADE_SUCCESS, TRADE_REFUND):
                raise PayFault("INVALID_REQUEST", 400, "INVALID_REQUEST", "订单未支付")
            if total_fee != order.total_fee:
                raise PayFault("INVALID_REQUEST", 400, "INVALID_REQUEST", "订单金额与实际支付金额不一致")
            existing = self.refunds.get(out_refund_no)
            if existing is not None:
                if (existing.out_trade_no, existing.refund_fee) != (out_trade_no, refund_fee):
                    raise PayFault("INVALID_REQUEST", 400, "INVALID_REQUEST", "请求参数与之前的退款请求不一致")
                return existing
            taken = sum(r.refund_fee for r in self.refunds.values() if r.out_trade_no == out_trade_no and r.status != "CLOSED")
            if refund_fee <= 0 or taken + refund_fee > order.total_fee:
                raise PayFault("INVALID_REQUEST", 400, "INVALID_REQUEST", "退款金额大于订单可退金额")
            refund = PayRefund(
                out_refund_no=out_refund_no,
                out_trade_no=out_trade_no,
                refund_id="50300" + _digits(5) + time.strftime("%Y%m%d") + _digits(10),
                refund_fee=refund_fee,
                notify_url=notify_url,
                api=api,
                created_at=time.time(),
                reason=reason,
            )
            self.refunds[out_refund_no] = refund
            order.state = TRADE_REFUND
            return refund

    def resend_abnormal(self, refund_id: str, out_refund_no: str, target: dict[str, str]) -> PayRefund:
        """发起异常退款: an ABNORMAL refund goes out again, to ``target``; it is PROCESSING until ended."""
        with self.lock:
            refund = self.refunds.get(out_refund_no)
            if refund is None or refund.refund_id != refund_id:
                raise PayFault("REFUNDNOTEXIST", 404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            if refund.status != "ABNORMAL":
                raise PayFault("INVALID_REQUEST", 400, "INVALID_REQUEST", "退款单状态不是退款异常，无法发起异常退款")
            refund.status, refund.abnormal_target = "PROCESSING", target
            return refund

    def refund(self, out_refund_no: str) -> PayRefund:
        with self.lock:
            found = self.refunds.get(out_refund_no)
        if found is None:
            raise PayFault("REFUNDNOTEXIST", 404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return found

    def end_refund(self, out_refund_no: str, status: str = "SUCCESS") -> PayRefund:
        """WeChat finishes a refund: SUCCESS, ABNORMAL (the card refused it) or CLOSED."""
        if status not in REFUND_ENDINGS:
            raise ValueError(f"status must be one of {', '.join(REFUND_ENDINGS)}")
        with self.lock:
            refund = self.refund(out_refund_no)
            if refund.status == "PROCESSING":
                refund.status = status
                refund.success_time = time.time() if status == "SUCCESS" else None
            return refund

    # -- notifications -------------------------------------------------------------------------

    def build_pay_notification(
        self,
        out_trade_no: str,
        *,
        api: str | None = None,
        sign_type: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        serial: str | None = None,
        tamper_ciphertext: bool = False,
        literals: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """The payment notification WeChat would send for ``out_trade_no`` (paying it first if need be).

        ``overrides`` change the v2 fields, or the v3 resource before encryption, and are signed
        like the rest; ``timestamp``/``serial`` set the v3 headers (signed too);
        ``tamper_ciphertext`` corrupts the v3 ciphertext and then signs the result; ``literals``
        (v3) writes a string value equal to one of its keys as that key's JSON text instead.
        """
        order = self.pay(out_trade_no)
        api = api or order.api
        if api == "v2":
            fields: dict[str, Any] = {
                "appid": order.appid,
                "bank_type": "OTHERS",
                "cash_fee": str(order.total_fee),
                "fee_type": "CNY",
                "is_subscribe": "N",
                "mch_id": self.merchant.mch_id,
                "nonce_str": secrets.token_hex(16),
                "openid": order.openid,
                "out_trade_no": order.out_trade_no,
                "result_code": "SUCCESS",
                "return_code": "SUCCESS",
                "time_end": _china(order.paid_at or time.time()).strftime("%Y%m%d%H%M%S"),
                "total_fee": str(order.total_fee),
                "trade_type": "JSAPI",
                "transaction_id": order.transaction_id,
            }
            return self._v2_notification(fields, sign_type or order.sign_type, overrides)
        resource = {
            "mchid": self.merchant.mch_id,
            "appid": order.appid,
            "out_trade_no": order.out_trade_no,
            "transaction_id": order.transaction_id,
            "trade_type": "JSAPI",
            "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功",
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": _rfc3339(order.paid_at or time.time()),
            "payer": {"openid": order.openid},
            "amount": {"total": order.total_fee, "payer_total": order.total_fee, "currency": "CNY", "payer_currency": "CNY"},
        }
        return self.build_v3_notification(
            "TRANSACTION.SUCCESS", "支付成功", "transaction", _merge(resource, overrides or {}),
            timestamp=timestamp, serial=serial, tamper_ciphertext=tamper_ciphertext, literals=literals,
        )

    def build_refund_notification(
        self,
        out_refund_no: str,
        *,
        status: str = "SUCCESS",
        api: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        serial: str | None = None,
        tamper_ciphertext: bool = False,
        literals: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """The refund notification WeChat would send once ``out_refund_no`` ends with ``status`` (options as above)."""
        refund = self.end_refund(out_refund_no, status)
        order = self.order(refund.out_trade_no)
        api = api or refund.api
        if api == "v2":
            info: dict[str, Any] = {
                "transaction_id": order.transaction_id,
                "out_trade_no": order.out_trade_no,
                "refund_id": refund.refund_id,
                "out_refund_no": refund.out_refund_no,
                "total_fee": str(order.total_fee),
                "settlement_total_fee": str(order.total_fee),
                "refund_fee": str(refund.refund_fee),
                "settlement_refund_fee": str(refund.refund_fee),
                "refund_status": REFUND_ENDINGS[refund.status],
                "success_time": _china(refund.success_time).strftime("%Y-%m-%d %H:%M:%S") if refund.success_time else None,
                "refund_recv_accout": "支付用户的零钱",
                "refund_account": "REFUND_SOURCE_RECHARGE_FUNDS",
                "refund_request_source": "API",
            }
            _merge(info, overrides or {})
            inner = "<root>" + "".join(f"<{k}>{_cdata(str(v))}</{k}>" for k, v in info.items()) + "</root>"
            padder = sym_padding.PKCS7(128).padder()
            padded = padder.update(inner.encode("utf-8")) + padder.finalize()
            key = hashlib.md5(self.merchant.api_key.encode("utf-8")).hexdigest().encode("ascii")
            encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
            req_info = base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")
            fields = {
                "return_code": "SUCCESS",
                "appid": order.appid,
                "mch_id": self.merchant.mch_id,
                "nonce_str": secrets.token_hex(16),
                "req_info": req_info,
            }
            body = dict_to_xml(fields).encode("utf-8")
            return {"Content-Type": "text/xml"}, body
        resource = {
            "mchid": self.merchant.mch_id,
            "out_trade_no": order.out_trade_no,
            "transaction_id": order.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "user_received_account": "支付用户零钱",
            "amount": {"total": order.total_fee, "refund": refund.refund_fee, "payer_total": order.total_fee, "payer_refund": refund.refund_fee},
        }
        if refund.success_time:
            resource["success_time"] = _rfc3339(refund.success_time)
        return self.build_v3_notification(
            f"REFUND.{refund.status}", REFUND_SUMMARIES[refund.status], "refund", _merge(resource, overrides or {}),
            timestamp=timestamp, serial=serial, tamper_ciphertext=tamper_ciphertext, literals=literals,
        )

    def _v2_notification(self, fields: dict[str, Any], sign_type: str, overrides: Mapping[str, Any] | None) -> tuple[dict[str, str], bytes]:
        # As WeChat sends it: signed the way the prepay was, with no sign_type element either way
        # (an override may add one, to test a notification that names its type).
        _merge(fields, overrides or {})
        sign = fields.pop("sign", None) or _v2_signature(fields, self.merchant.api_key, sign_type)
        return {"Content-Type": "text/xml"}, dict_to_xml(fields, sign).encode("utf-8")

    def build_v3_notification(
        self,
        event_type: str,
        summary: str,
        original_type: str,
        resource: dict[str, Any],
        *,
        timestamp: int | None = None,
        serial: str | None = None,
        tamper_ciphertext: bool = False,
        literals: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Any v3 notification: ``resource`` encrypted with the APIv3 key, the whole signed with the platform key.

        ``literals`` maps a placeholder string value to the JSON text written in its place, for
        what ``json.dumps`` cannot write (``1e400``) or writes its own way.
        """
        nonce = secrets.token_urlsafe(9)[:12]
        plaintext = json.dumps(resource, ensure_ascii=False)
        for placeholder, text in (literals or {}).items():
            plaintext = plaintext.replace(json.dumps(placeholder, ensure_ascii=False), text)
        sealed = AESGCM(self.merchant.api_v3_key.encode("utf-8")).encrypt(
            nonce.encode("ascii"), plaintext.encode("utf-8"), original_type.encode("ascii")
        )
        if tamper_ciphertext:
            sealed = bytes([sealed[0] ^ 0x01]) + sealed[1:]
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": _rfc3339(time.time()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode("ascii"),
                "associated_data": original_type,
                "nonce": nonce,
            },
        }
        body = json.dumps(envelope, ensure_ascii=False).encode("utf-8")
        headers = self.v3_headers(body, timestamp)
        if serial is not None:
            headers["Wechatpay-Serial"] = serial
        headers["Content-Type"] = "application/json"
        return headers, body

    def v3_headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The Wechatpay-* headers that make ``body`` a message from WeChat Pay."""
        stamp, nonce = str(int(time.time()) if timestamp is None else timestamp), secrets.token_hex(16)
        message = f"{stamp}\n{nonce}\n".encode("ascii") + body + b"\n"
        signature = self.merchant.platform_private_key.sign(message, asym_padding.PKCS1v15(), hashes.SHA256())
        return {
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": base64.b64encode(signature).decode("ascii"),
            "Wechatpay-Serial": self.merchant.platform_serial,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        }


def pay_state() -> PayState:
    """The WeChat Pay state of the sandbox app handling the current request."""
    return current_app.extensions["sandbox_pay"]


def install_pay_merchant(app: Flask, merchant: PayMerchant) -> None:
    """Make the sandbox ``app`` serve ``merchant``: the keys and ids the app under test holds."""
    app.extensions["sandbox_pay"].install(merchant)


def build_pay_notification(app: Flask, out_trade_no: str, **options: Any) -> tuple[dict[str, str], bytes]:
    """``PayState.build_pay_notification`` of the sandbox ``app``: (headers, body) to POST to the notify URL."""
    return app.extensions["sandbox_pay"].build_pay_notification(out_trade_no, **options)


def build_refund_notification(app: Flask, out_refund_no: str, **options: Any) -> tuple[dict[str, str], bytes]:
    """``PayState.build_refund_notification`` of the sandbox ``app``."""
    return app.extensions["sandbox_pay"].build_refund_notification(out_refund_no, **options)


def send_notification(url: str, headers: Mapping[str, str], body: bytes, api: str) -> dict[str, Any]:
    """POST a notification as WeChat does; ``ok`` is whether WeChat would count the answer as received."""
    try:
        response = requests.post(url, data=body, headers=dict(headers), timeout=PUSH_TIMEOUT)
    except requests.RequestException as exc:
        return {"status": None, "body": None, "ok": False, "error": f"notify URL unreachable: {type(exc).__name__}"}
    text = response.content.decode("utf-8", errors="replace")
    if api == "v3":
        ok = response.status_code in (200, 204)
        return {"status": response.status_code, "body": text, "ok": ok, "error": None if ok else f"HTTP {response.status_code}"}
    try:
        return_code = parse_v2_xml(response.content).get("return_code") if response.status_code == 200 else None
    except ValueError:
        return_code = None
    ok = return_code == "SUCCESS"
    return {"status": response.status_code, "body": text, "ok": ok, "error": None if ok else "answer is not return_code SUCCESS"}


def _check_appid(appid: Any) -> str:
    merchant = pay_state().merchant
    if not isinstance(appid, str) or appid not in state().apps or (merchant.appids is not None and appid not in merchant.appids):
        raise PayFault("APPID_MCHID_NOT_MATCH", 400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
    return appid


def _check_openid(appid: str, openid: Any) -> str:
    """``openid`` if the sandbox issued it for ``appid``; WeChat's OPENID_MISMATCH otherwise."""
    if not isinstance(openid, str) or state().app_of_openid(openid) != appid:
        raise PayFault("OPENID_MISMATCH", 400, "PARAM_ERROR", "appid和openid不匹配")
    return openid


def _check_text(value: Any, name: str, limit: int, unit: str) -> None:
    """A free-text field within WeChat's limit, counted in ``unit`` ("bytes" of UTF-8 or "chars")."""
    if value is None:
        return
    if not isinstance(value, str):
        raise PayFault.param(f"{name}参数格式错误")
    if (len(value.encode("utf-8")) if unit == "bytes" else len(value)) > limit:
        raise PayFault.param(f"{name}参数长度有误")


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PayFault.param(f"{name}参数格式错误") from None
    if isinstance(value, bool) or number <= 0 or str(number) != str(value).strip():
        raise PayFault.param(f"{name}参数格式错误")
    return number


def _notify_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or "?" in value or len(value) > 256:
        raise PayFault.param("notify_url参数格式错误，需为不带参数的完整URL")
    return value


def _out_trade_no(value: Any) -> str:
    if not isinstance(value, str) or not OUT_TRADE_NO_RE.fullmatch(value):
        raise PayFault.param("out_trade_no参数格式错误")
    return value


# -- Pay v2 ---------------------------------------------------------------------------------

pay_v2_bp = Blueprint("sandbox_pay_v2", __name__)


@pay_v2_bp.errorhandler(_V2ReturnFail)
def _v2_return_fail(error: _V2ReturnFail) -> Response:
    xml = f"<xml><return_code>{_cdata('FAIL')}</return_code><return_msg>{_cdata(str(error))}</return_msg></xml>"
    return Response(xml, mimetype="text/xml")


def pay_v2_api(rule: str) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Callable[..., Any]]:
    """A v2 endpoint: reads and authenticates the signed XML, answers signed XML with the same sign type.

    The view gets the request's fields and returns the answer's business fields; a PayFault
    becomes ``result_code`` FAIL with its ``err_code``.
    """

    def decorator(view: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper() -> Response:
            state().count(rule)
            if request.method != "POST":
                raise _V2ReturnFail("请使用post方法")
            try:
                data = parse_v2_xml(request.get_data(cache=True))
            except ValueError:
                raise _V2ReturnFail("XML格式错误") from None
            merchant = pay_state().merchant
            if data.get("mch_id") != merchant.mch_id:
                raise _V2ReturnFail("mch_id参数格式错误")
            sign_type = data.get("sign_type") or "MD5"
            if sign_type not in ("MD5", "HMAC-SHA256"):
                raise _V2ReturnFail("sign_type参数格式错误")
            # As WeChat really answers a bad signature (its error table's SIGNERROR never shows up).
            if not data.get("sign") or data["sign"] != _v2_signature(data, merchant.api_key, sign_type):
                raise _V2ReturnFail("签名错误，请检查后再试")
            if not data.get("nonce_str"):
                raise _V2ReturnFail("缺少参数nonce_str")
            try:
                _check_appid(data.get("appid"))
                fields = {"result_code": "SUCCESS", **view(data)}
            except PayFault as fault:
                fields = {"result_code": "FAIL", "err_code": fault.v2_code, "err_code_des": fault.message}
            answer = {
                "return_code": "SUCCESS",
                "return_msg": "OK",
                "appid": data.get("appid") or "",
                "mch_id": merchant.mch_id,
                "nonce_str": secrets.token_hex(16),
                **fields,
            }
            return Response(dict_to_xml(answer, _v2_signature(answer, merchant.api_key, sign_type)), mimetype="text/xml")

        pay_v2_bp.add_url_rule(rule, view.__name__, wrapper, methods=["GET", "POST"])
        return view

    return decorator


def _required(data: Mapping[str, Any], *names: str) -> None:
    for name in names:
        if not data.get(name):
            raise PayFault.missing(name)


def _v2_trade(order: PayOrder) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "out_trade_no": order.out_trade_no,
        "trade_state": order.state,
        "trade_state_desc": TRADE_STATE_DESC[order.state],
    }
    if order.state in (TRADE_SUCCESS, TRADE_REFUND):
        fields |= {
            "openid": order.openid,
            "is_subscribe": "N",
            "trade_type": "JSAPI",
            "bank_type": "OTHERS",
            "total_fee": order.total_fee,
            "cash_fee": order.total_fee,
            "fee_type": "CNY",
            "transaction_id": order.transaction_id,
            "time_end": _china(order.paid_at or time.time()).strftime("%Y%m%d%H%M%S"),
        }
    return fields


def _china_epoch(value: str) -> float:
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=CHINA_TZ).timestamp()
    except ValueError:
        raise PayFault.param("time_expire参数格式错误") from None


@pay_v2_api("/pay/unifiedorder")
def unified_order(data: dict[str, Any]) -> dict[str, Any]:
    _required(data, "body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type")
    if data["trade_type"] != "JSAPI":
        raise PayFault("PARAM_ERROR", 400, "PARAM_ERROR", "sandbox: only trade_type JSAPI is served")
    if not data.get("openid"):
        raise PayFault("LACK_PARAMS", 400, "PARAM_ERROR", "JSAPI支付必须传openid")
    _check_text(data["body"], "body", V2_BODY_MAX_BYTES, "bytes")
    _check_text(data.get("attach"), "attach", V2_ATTACH_MAX_BYTES, "bytes")
    _check_text(data.get("detail"), "detail", V2_DETAIL_MAX_BYTES, "bytes")
    out_trade_no = _out_trade_no(data["out_trade_no"])
    openid = _check_openid(data["appid"], data["openid"])
    time_expire = _china_epoch(data["time_expire"]) if data.get("time_expire") else None
    # WeChat refuses a window of five minutes or less ("exactly five" included, in practice).
    if time_expire is not None and time_expire - time.time() <= WECHAT_MIN_PAY_WINDOW.total_seconds():
        raise PayFault("INVALID_REQUEST", 400, "PARAM_ERROR", "time_expire时间过短，刷卡至少1分钟，其他5分钟")
    order = pay_state().open_order(
        out_trade_no=out_trade_no,
        appid=data["appid"],
        openid=openid,
        total_fee=_positive_int(data["total_fee"], "total_fee"),
        description=data["body"],
        notify_url=_notify_url(data["notify_url"]),
        api="v2",
        sign_type=data.get("sign_type") or "MD5",
        time_expire=time_expire,
    )
    return {"trade_type": "JSAPI", "prepay_id": order.prepay_id}


@pay_v2_api("/pay/orderquery")
def order_query(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("transaction_id"):
        with pay_state().lock:
            found = next((o for o in pay_state().orders.values() if o.transaction_id == data["transaction_id"]), None)
        if found is None:
            raise PayFault("ORDERNOTEXIST", 404, "ORDER_NOT_EXIST", "order not exist")
        return _v2_trade(found)
    _required(data, "out_trade_no")
    return _v2_trade(pay_state().order(data["out_trade_no"]))


@pay_v2_api("/pay/refundquery")
def refund_query_v2(data: dict[str, Any]) -> dict[str, Any]:
    _required(data, "out_refund_no")
    refund = pay_state().refund(data["out_refund_no"])
    order = pay_state().order(refund.out_trade_no)
    return {
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "total_fee": order.total_fee,
        "cash_fee": order.total_fee,
        "refund_count": 1,
        "out_refund_no_0": refund.out_refund_no,
        "refund_id_0": refund.refund_id,
        "refund_fee_0": refund.refund_fee,
        "refund_status_0": REFUND_ENDINGS.get(refund.status, refund.status),
        "refund_channel_0": "ORIGINAL",
    }


@pay_v2_api("/pay/closeorder")
def close_order_v2(data: dict[str, Any]) -> dict[str, Any]:
    _required(data, "out_trade_no")
    pay_state().close(data["out_trade_no"])
    return {}


@pay_v2_api("/secapi/pay/refund")
def refund_v2(data: dict[str, Any]) -> dict[str, Any]:
    # WeChat wants the client certificate here; over plain HTTP there is none to check.
    _required(data, "out_refund_no", "total_fee", "refund_fee")
    if not (data.get("out_trade_no") or data.get("transaction_id")):
        raise PayFault.missing("out_trade_no或transaction_id")
    if not OUT_REFUND_NO_RE.fullmatch(data["out_refund_no"]):
        raise PayFault.param("out_refund_no参数格式错误")
    _check_text(data.get("refund_desc"), "refund_desc", V2_REFUND_DESC_MAX_BYTES, "bytes")
    refund = pay_state().open_refund(
        out_trade_no=data.get("out_trade_no"),
        transaction_id=data.get("transaction_id"),
        out_refund_no=data["out_refund_no"],
        total_fee=_positive_int(data["total_fee"], "total_fee"),
        refund_fee=_positive_int(data["refund_fee"], "refund_fee"),
        notify_url=_notify_url(data["notify_url"]) if data.get("notify_url") else None,
        api="v2",
        reason=data.get("refund_desc") or "",
    )
    order = pay_state().order(refund.out_trade_no)
    return {
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "out_refund_no": refund.out_refund_no,
        "refund_id": refund.refund_id,
        "refund_fee": refund.refund_fee,
        "settlement_refund_fee": refund.refund_fee,
        "total_fee": order.total_fee,
        "settlement_total_fee": order.total_fee,
        "fee_type": "CNY",
        "cash_fee": order.total_fee,
        "cash_refund_fee": refund.refund_fee,
    }


# -- Pay v3 ---------------------------------------------------------------------------------

pay_v3_bp = Blueprint("sandbox_pay_v3", __name__)


def _v3_answer(status: int, payload: Mapping[str, Any] | None) -> Response:
    """An answer signed with the platform key, as WeChat Pay signs every answer."""
    body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = pay_state().v3_headers(body) | {"Request-ID": str(uuid.uuid4())}
    response = Response(body, status=status, headers=headers)
    if payload is not None:
        response.content_type = "application/json; charset=utf-8"
    return response


@pay_v3_bp.errorhandler(_V3Fault)
def _v3_fault(fault: _V3Fault) -> Response:
    return _v3_answer(fault.status, {"code": fault.code, "message": fault.message})


def _check_v3_authorization(body: bytes) -> None:
    """Our Authorization header, verified as WeChat does: scheme, merchant, serial, clock, signature."""
    merchant = pay_state().merchant
    scheme, _, rest = (request.headers.get("Authorization") or "").partition(" ")
    fields = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    refused = _V3Fault(401, "SIGN_ERROR", "签名错误，请检查后再试")
    if scheme != "WECHATPAY2-SHA256-RSA2048" or fields.get("mchid") != merchant.mch_id:
        raise refused
    if fields.get("serial_no") != merchant.merchant_serial:
        raise _V3Fault(401, "SIGN_ERROR", "商户证书序列号有误")
    try:
        stamp = int(fields.get("timestamp", ""))
    except ValueError:
        raise refused from None
    if abs(time.time() - stamp) > PAY_V3_MAX_SKEW:
        raise _V3Fault(401, "SIGN_ERROR", "请求时间戳与当前时间相差过大")
    # The URL exactly as the client sent it: path and query, undecoded.
    uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.full_path.rstrip("?")
    message = f"{request.method}\n{uri}\n{fields['timestamp']}\n{fields.get('nonce_str', '')}\n".encode("utf-8") + body + b"\n"
    try:
        signature = base64.b64decode(fields.get("signature", ""), validate=True)
        merchant.merchant_public_key.verify(signature, message, asym_padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise refused from None


def pay_v3_api(rule: str, method: str) -> Callable[[Callable[..., tuple[int, Mapping[str, Any] | None]]], Callable[..., Any]]:
    """A v3 endpoint: authenticated, JSON in, (status, JSON or None) out, signed; a PayFault becomes its v3 error."""

    def decorator(view: Callable[..., tuple[int, Mapping[str, Any] | None]]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> Response:
            state().count(rule)
            if request.method != method:
                raise _V3Fault(405, "INVALID_REQUEST", f"请使用{method}方法")
            raw = request.get_data(cache=True)
            _check_v3_authorization(raw)
            body: dict[str, Any] = {}
            if method == "POST":
                try:
                    parsed = json.loads(raw or b"null")
                except ValueError:
                    raise _V3Fault(400, "PARAM_ERROR", "请求体不是合法的JSON") from None
                if not isinstance(parsed, dict):
                    raise _V3Fault(400, "PARAM_ERROR", "请求体不是JSON对象")
                body = parsed
            try:
                status, payload = view(body, **kwargs)
            except PayFault as fault:
                raise _V3Fault(fault.status, fault.v3_code, fault.message) from None
            return _v3_answer(status, payload)

        pay_v3_bp.add_url_rule(rule, view.__name__, wrapper, methods=["GET", "POST"])
        return view

    return decorator


def _v3_mchid(value: Any) -> None:
    if value != pay_state().merchant.mch_id:
        raise PayFault("MCH_NOT_EXISTS", 400, "MCH_NOT_EXISTS", "商户号不存在")


def _v3_trade(order: PayOrder) -> dict[str, Any]:
    trade: dict[str, Any] = {
        "appid": order.appid,
        "mchid": pay_state().merchant.mch_id,
        "out_trade_no": order.out_trade_no,
        "trade_state": order.state,
        "trade_state_desc": TRADE_STATE_DESC[order.state],
        "amount": {"total": order.total_fee, "currency": "CNY", "payer_currency": "CNY"},
    }
    if order.state in (TRADE_SUCCESS, TRADE_REFUND):
        trade |= {
            "transaction_id": order.transaction_id,
            "trade_type": "JSAPI",
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": _rfc3339(order.paid_at or time.time()),
            "payer": {"openid": order.openid},
            "promotion_detail": [],
        }
        trade["amount"]["payer_total"] = order.total_fee
    return trade


@pay_v3_api("/v3/pay/transactions/jsapi", "POST")
def jsapi_prepay(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    _v3_mchid(body.get("mchid"))
    appid = _check_appid(body.get("appid"))
    for name in ("description", "out_trade_no", "notify_url", "amount", "payer"):
        if not body.get(name):
            raise PayFault.missing(name)
    description = body["description"]
    _check_text(description, "description", V3_DESCRIPTION_MAX_CHARS, "chars")
    _check_text(body.get("attach"), "attach", V3_ATTACH_MAX_CHARS, "chars")
    amount, payer = body["amount"], body["payer"]
    if not isinstance(amount, dict) or not isinstance(payer, dict) or not isinstance(amount.get("total"), int):
        raise PayFault.param("amount.total或payer.openid参数格式错误")
    if amount.get("currency", "CNY") != "CNY" or not payer.get("openid"):
        raise PayFault.param("amount.currency或payer.openid参数格式错误")
    out_trade_no = _out_trade_no(body["out_trade_no"])
    openid = _check_openid(appid, payer["openid"])
    time_expire = None
    if body.get("time_expire"):
        try:
            parsed = datetime.fromisoformat(str(body["time_expire"]))
        except ValueError:
            raise PayFault.param("time_expire参数格式错误") from None
        if parsed.tzinfo is None:
            raise PayFault.param("time_expire参数格式错误，需为rfc3339格式")
        # v3 documents no refusal: an end sooner than a minute away is moved to a minute away.
        time_expire = max(parsed.timestamp(), time.time() + V3_MIN_PAY_WINDOW)
    order = pay_state().open_order(
        out_trade_no=out_trade_no,
        appid=appid,
        openid=openid,
        total_fee=_positive_int(amount["total"], "amount.total"),
        description=description,
        notify_url=_notify_url(body["notify_url"]),
        api="v3",
        time_expire=time_expire,
    )
    return 200, {"prepay_id": order.prepay_id}


@pay_v3_api("/v3/pay/transactions/out-trade-no/<out_trade_no>", "GET")
def query_order_v3(body: dict[str, Any], out_trade_no: str) -> tuple[int, dict[str, Any]]:
    if not request.args.get("mchid"):
        raise PayFault.missing("mchid")
    _v3_mchid(request.args.get("mchid"))
    return 200, _v3_trade(pay_state().order(_out_trade_no(out_trade_no)))


@pay_v3_api("/v3/pay/transactions/out-trade-no/<out_trade_no>/close", "POST")
def close_order_v3(body: dict[str, Any], out_trade_no: str) -> tuple[int, None]:
    _v3_mchid(body.get("mchid"))
    pay_state().close(_out_trade_no(out_trade_no))
    return 204, None


def _v3_refund_view(refund: PayRefund, order: PayOrder, *, channel: str = "ORIGINAL", account: str = "支付用户零钱") -> dict[str, Any]:
    """A refund as v3 answers it (the refund, its query and an abnormal refund sent again)."""
    return {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "channel": channel,
        "user_received_account": account,
        "create_time": _rfc3339(refund.created_at),
        "status": refund.status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": order.total_fee,
            "refund": refund.refund_fee,
            "payer_total": order.total_fee,
            "payer_refund": refund.refund_fee,
            "settlement_total": order.total_fee,
            "settlement_refund": refund.refund_fee,
            "discount_refund": 0,
            "currency": "CNY",
        },
    }


@pay_v3_api("/v3/refund/domestic/refunds", "POST")
def refund_v3(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    for name in ("out_refund_no", "amount"):
        if not body.get(name):
            raise PayFault.missing(name)
    out_trade_no, transaction_id = body.get("out_trade_no"), body.get("transaction_id")
    if not (out_trade_no or transaction_id):
        raise PayFault.missing("out_trade_no或transaction_id")
    if out_trade_no is not None:
        _out_trade_no(out_trade_no)
    if transaction_id is not None and (not isinstance(transaction_id, str) or not TRANSACTION_ID_RE.fullmatch(transaction_id)):
        raise PayFault.param("transaction_id参数格式错误")
    _check_text(body.get("reason"), "reason", V3_REASON_MAX_BYTES, "bytes")
    amount = body["amount"]
    if not isinstance(amount, dict) or amount.get("currency") != "CNY":
        raise PayFault.param("amount参数格式错误")
    if not isinstance(body["out_refund_no"], str) or not OUT_REFUND_NO_RE.fullmatch(body["out_refund_no"]):
        raise PayFault.param("out_refund_no参数格式错误")
    refund = pay_state().open_refund(
        out_trade_no=out_trade_no,
        transaction_id=transaction_id,
        out_refund_no=body["out_refund_no"],
        total_fee=_positive_int(amount.get("total"), "amount.total"),
        refund_fee=_positive_int(amount.get("refund"), "amount.refund"),
        notify_url=_notify_url(body["notify_url"]) if body.get("notify_url") else None,
        api="v3",
        reason=body.get("reason") or "",
    )
    return 200, _v3_refund_view(refund, pay_state().order(refund.out_trade_no))


#: The debit cards 发起异常退款 can pay into, by WeChat Pay's bank code.
ABNORMAL_REFUND_BANKS = frozenset(
    f"{bank}_DEBIT" for bank in ("CMB", "COMM", "ABC", "CCB", "ICBC", "BOC", "SPABANK", "SPDB", "CITIC", "CEB", "CMBC", "CIB", "GDB", "PSBC", "NBCB")
)


def _platform_decrypt(value: Any, name: str) -> str:
    """A field the merchant encrypted with the platform key (RSA-OAEP, SHA-1), or PARAM_ERROR."""
    merchant = pay_state().merchant
    if request.headers.get("Wechatpay-Serial") != merchant.platform_serial:
        raise PayFault.param("Wechatpay-Serial与加密所用证书不一致")
    try:
        sealed = base64.b64decode(str(value), validate=True)
        padding = asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        return merchant.platform_private_key.decrypt(sealed, padding).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise PayFault.param(f"{name}解密失败") from None


@pay_v3_api("/v3/refund/domestic/refunds/<out_refund_no>", "GET")
def query_refund_v3(body: dict[str, Any], out_refund_no: str) -> tuple[int, dict[str, Any]]:
    refund = pay_state().refund(out_refund_no)
    return 200, _v3_refund_view(refund, pay_state().order(refund.out_trade_no))


@pay_v3_api("/v3/refund/domestic/refunds/<refund_id>/apply-abnormal-refund", "POST")
def apply_abnormal_refund(body: dict[str, Any], refund_id: str) -> tuple[int, dict[str, Any]]:
    out_refund_no, kind = body.get("out_refund_no"), body.get("type")
    if not isinstance(out_refund_no, str) or not out_refund_no:
        raise PayFault.missing("out_refund_no")
    if kind not in ("USER_BANK_CARD", "MERCHANT_BANK_CARD"):
        raise PayFault.param("type参数格式错误")
    target = {"type": kind}
    if kind == "USER_BANK_CARD":
        for name in ("bank_type", "bank_account", "real_name"):
            if not body.get(name):
                raise PayFault.missing(name)
        if body["bank_type"] not in ABNORMAL_REFUND_BANKS:
            raise PayFault.param("bank_type不支持，仅支持部分银行的借记卡")
        account = _platform_decrypt(body["bank_account"], "bank_account")
        _platform_decrypt(body["real_name"], "real_name")
        if not account.isdigit():
            raise PayFault.param("bank_account参数格式错误")
        target |= {"bank_type": body["bank_type"], "account_tail": account[-4:]}
    refund = pay_state().resend_abnormal(refund_id, out_refund_no, target)
    to_card = kind == "USER_BANK_CARD"
    view = _v3_refund_view(
        refund, pay_state().order(refund.out_trade_no), channel="BANK" if to_card else "ORIGINAL", account="用户银行卡" if to_card else "交易商户银行账户"
    )
    return 200, view


# -- the sandbox plays the buyer and WeChat's notifications ----------------------------------

pay_control_bp = Blueprint("sandbox_pay_control", __name__, url_prefix="/sandbox/pay")


def _pay_order_view(order: PayOrder) -> dict[str, Any]:
    refunds = [vars(r) for r in pay_state().refunds.values() if r.out_trade_no == order.out_trade_no]
    return {**vars(order), "refunds": refunds}


@pay_control_bp.post("/pay")
def play_buyer_paying() -> Response:
    """``{"out_trade_no": …, "notify": true}``: the buyer pays; WeChat's notification goes to the notify URL.

    Answers the transaction and ``notification``: the app's status and body, and ``ok`` (whether
    WeChat would count it as received).
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("out_trade_no"), str):
        return _control_error(400, "need out_trade_no")
    paystate = pay_state()
    try:
        order = paystate.pay(body["out_trade_no"])
    except PayFault as fault:
        return _control_error(fault.status if fault.status == 404 else 409, fault.message)
    answer: dict[str, Any] = {"out_trade_no": order.out_trade_no, "transaction_id": order.transaction_id, "state": order.state}
    if body.get("notify", True):
        headers, payload = paystate.build_pay_notification(order.out_trade_no)
        answer["notification"] = send_notification(order.notify_url, headers, payload, order.api)
    return jsonify(answer)


@pay_control_bp.post("/refund-complete")
def end_refund() -> Response:
    """``{"out_refund_no": …, "status": "SUCCESS" | "ABNORMAL" | "CLOSED"}``: WeChat ends the refund and notifies."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("out_refund_no"), str):
        return _control_error(400, "need out_refund_no")
    status = body.get("status", "SUCCESS")
    if status not in REFUND_ENDINGS:
        return _control_error(400, f"status must be one of {', '.join(REFUND_ENDINGS)}")
    paystate = pay_state()
    try:
        refund = paystate.refund(body["out_refund_no"])
    except PayFault as fault:
        return _control_error(404, fault.message)
    if refund.status != "PROCESSING" and refund.status != status:
        return _control_error(409, f"the refund already ended {refund.status}")
    headers, payload = paystate.build_refund_notification(refund.out_refund_no, status=status)
    answer: dict[str, Any] = {"out_refund_no": refund.out_refund_no, "refund_id": refund.refund_id, "status": refund.status}
    if refund.notify_url:
        answer["notification"] = send_notification(refund.notify_url, headers, payload, refund.api)
    return jsonify(answer)


@pay_control_bp.post("/notifications")
def make_notification() -> Response:
    """Build, without sending, a signed notification: ``{"out_trade_no"}`` or ``{"out_refund_no", "status"}``,
    optionally with ``api`` and ``sign_type``; answers ``{"headers", "body"}``."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _control_error(400, "need a JSON object")
    options = {k: body[k] for k in ("api", "sign_type") if isinstance(body.get(k), str)}
    try:
        if isinstance(body.get("out_trade_no"), str):
            headers, payload = pay_state().build_pay_notification(body["out_trade_no"], **options)
        elif isinstance(body.get("out_refund_no"), str):
            status = body.get("status", "SUCCESS")
            if status not in REFUND_ENDINGS:
                return _control_error(400, f"status must be one of {', '.join(REFUND_ENDINGS)}")
            headers, payload = pay_state().build_refund_notification(body["out_refund_no"], status=status, api=options.get("api"))
        else:
            return _control_error(400, "need out_trade_no or out_refund_no")
    except PayFault as fault:
        return _control_error(404 if fault.status == 404 else 409, fault.message)
    return jsonify(headers=headers, body=payload.decode("utf-8"))


@pay_control_bp.get("/orders/<out_trade_no>")
def show_pay_order(out_trade_no: str) -> Response:
    """What WeChat Pay knows of an order and its refunds."""
    try:
        order = pay_state().order(out_trade_no)
    except PayFault:
        return _control_error(404, "no such order")
    with pay_state().lock:
        return jsonify(_pay_order_view(order))


@pay_control_bp.post("/reset")
def reset_pay() -> Response:
    """Forget every order and refund (the merchant stays)."""
    pay_state().reset()
    return jsonify(ok=True)


# -- the sandbox's own controls (not WeChat's) ------------------------------------------

control_bp = Blueprint("sandbox_control", __name__, url_prefix="/sandbox")


@control_bp.get("/health")
def health() -> Response:
    return jsonify(ok=True)


@control_bp.before_app_request
def _hold_stalled_route() -> None:
    """Hold a call to a stalled route (see ``stall_route``) before WeChat's handler sees it."""
    sandbox = state()
    with sandbox.lock:
        stall = sandbox.stalls.get(request.path)
        if stall is None or stall.times <= 0 or stall.released.is_set():
            return
        stall.times -= 1
        stall.waiting += 1
    try:
        stall.released.wait(stall.seconds)
    finally:
        with sandbox.lock:
            stall.waiting -= 1


@control_bp.route("/stall", methods=["GET", "POST", "DELETE"])
def stall_route() -> Response:
    """Slow WeChat down on purpose: ``POST {"path", "seconds" ≤ 60, "times" ≥ 1}`` holds the next ``times``
    calls to ``path`` for ``seconds`` (or until ``DELETE ?path=`` releases them); ``GET`` shows who waits."""
    sandbox = state()
    if request.method == "GET":
        with sandbox.lock:
            return jsonify({path: {"waiting": s.waiting, "times": s.times} for path, s in sandbox.stalls.items()})
    if request.method == "DELETE":
        path = request.args.get("path")
        with sandbox.lock:
            released = [s for p, s in sandbox.stalls.items() if path is None or p == path]
            for stall in released:
                stall.released.set()
            for p in [p for p, s in sandbox.stalls.items() if s in released and s.waiting == 0]:
                del sandbox.stalls[p]
        return jsonify(released=len(released))
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not body["path"].startswith("/"):
        return _control_error(400, "path (starting with /) is required")
    seconds, times = body.get("seconds", 10), body.get("times", 1)
    if type(seconds) not in (int, float) or not 0 < seconds <= 60 or type(times) is not int or not 1 <= times <= 1000:
        return _control_error(400, "seconds must be in (0, 60] and times in [1, 1000]")
    with sandbox.lock:
        sandbox.stalls[body["path"]] = _Stall(float(seconds), times)
    return jsonify(path=body["path"], seconds=seconds, times=times)


@control_bp.post("/users/<name>/code")
def issue_login_code(name: str) -> Response:
    """Play member ``<name>`` calling ``wx.login()``: a fresh one-time code (``?appid=`` binds it to one app)."""
    if not USER_NAME.fullmatch(name):
        return _control_error(400, "name must be 1-64 of A-Za-z0-9_.-")
    appid = request.args.get("appid")
    if appid is not None and appid not in state().apps:
        return _control_error(400, "unknown appid")
    return jsonify(code=state().issue_login_code(name, appid), expires_in=LOGIN_CODE_TTL)


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
    pay: PayMerchant | None = None,
) -> Flask:
    """A Flask app playing WeChat for the apps ``{appid: secret}``; ``seed`` fixes derived ids.

    ``message_push`` is where (``callback_url``) and how the official account's messages are pushed.
    ``pay`` is the WeChat Pay merchant (``pay_merchant_from_config``); without it, the one the
    environment's configuration describes, resolved on the first pay call.
    """
    if not apps:
        raise ValueError("the sandbox needs at least one appid and secret")
    mute_wechatpy_pay_logs()
    app = Flask(__name__)
    app.json = JSONProvider(app)
    app.extensions["sandbox_state"] = SandboxState(apps, seed, pages)
    app.extensions["sandbox_oa"] = OfficialAccountState(message_push)
    app.extensions["sandbox_pay"] = PayState(pay)
    app.register_error_handler(WeChatFault, _render_fault)
    for bp in (control_bp, token_bp, miniprogram_bp, official_account_bp, mp_bp, open_bp, pay_v2_bp, pay_v3_bp, pay_control_bp):
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
