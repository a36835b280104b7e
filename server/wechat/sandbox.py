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

Each API family is one blueprint registered in ``create_sandbox_app``: access
token, mini-program. Pay v2, Pay v3 and the official account belong next to them
as their own blueprints, keeping their state on ``SandboxState`` or their own
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

import qrcode
import qrcode.constants
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from PIL import Image, ImageDraw
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
    apps: Mapping[str, str], *, seed: str, pages: frozenset[str] | None = None
) -> Flask:
    """A Flask app playing WeChat for the apps ``{appid: secret}``; ``seed`` fixes derived ids."""
    if not apps:
        raise ValueError("the sandbox needs at least one appid and secret")
    app = Flask(__name__)
    app.extensions["sandbox_state"] = SandboxState(apps, seed, pages)
    app.register_error_handler(WeChatFault, _render_fault)
    for bp in (control_bp, token_bp, miniprogram_bp):
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
