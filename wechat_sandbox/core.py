"""What every part of the sandbox shares: the apps, tokens, login codes and openids it remembers
(``SandboxState``), WeChat's error answer (``WeChatFault``, HTTP 200 with ``errcode``/``errmsg``) and
``wechat_api``, which registers a WeChat endpoint as strict about its method as WeChat is.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from flask import Blueprint, Response, current_app, jsonify, request

#: WeChat's access tokens live two hours.
TOKEN_TTL = 7200
#: After a new token is issued the previous one keeps working this long, as on WeChat.
OLD_TOKEN_GRACE = 300
#: Expired tokens are forgotten (and then answer 40001, not 42001) after this long.
EXPIRED_TOKEN_MEMORY = 3600
#: WeChat's ``wx.login`` codes live five minutes and work once.
LOGIN_CODE_TTL = 300


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
#: Seconds WeChat waits for a callback's answer before it gives up (and retries).
PUSH_TIMEOUT = 5.0


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _control_error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response
