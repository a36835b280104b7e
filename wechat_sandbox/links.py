"""The mini-program's links for outside WeChat: URL Link (``wxa/generate_urllink``) and URL Scheme
(``wxa/generatescheme``), and ``GET /sandbox/links/open``, which plays a phone following one.

As on WeChat since 2023, every link expires, at most 30 days after it is made (``expire_type`` 0
with ``expire_time``, or 1 with ``expire_interval`` days). A path carrying a query, or a page the
mini-program does not have, is 40165; a query over 1,024 characters or outside WeChat's characters
is 40212; an expiry outside one minute to 30 days is 85401. Links of both kinds count against one
daily quota per app (500,000; ``LinkBook.daily_limit``), past which WeChat answers 45009.
"""
from __future__ import annotations

import re
import secrets
import string
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from wechat_sandbox.core import WeChatFault, _control_error, json_body, state, wechat_api
from wechat_sandbox.miniprogram import ENV_VERSIONS, PAGE_PATH

#: WeChat's daily quota of URL Links and URL Schemes together, per mini-program.
DAILY_LIMIT = 500_000
QUERY_MAX = 1024
#: What a link's query may hold: letters, digits and ``!#$&'()*+,/:;=?@-._~%``.
QUERY_CHARS = re.compile(r"[A-Za-z0-9!#$&'()*+,/:;=?@\-._~%]*")
MIN_SECONDS, MAX_SECONDS = 60, 30 * 86400
URL_LINK_PREFIX = "https://wxaurl.cn/"
SCHEME_PREFIX = "weixin://dl/business/?t="
_TOKEN_ALPHABET = string.ascii_letters + string.digits

links_bp = Blueprint("sandbox_links", __name__)


@dataclass(frozen=True)
class Link:
    appid: str
    #: "url_link" or "scheme".
    kind: str
    path: str
    query: str
    env_version: str
    expires_at: float


class LinkBook:
    """The links the sandbox made, and how many each app made today."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.links: dict[str, Link] = {}
        self.daily_limit = DAILY_LIMIT
        self._made: dict[tuple[str, str], int] = {}

    def add(self, link: Link) -> str:
        """Store ``link``; its token, or 45009 once the app's daily quota is spent."""
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600))  # WeChat's days are Beijing's
        with self.lock:
            made = self._made.get((link.appid, day), 0)
            if made >= self.daily_limit:
                raise WeChatFault(45009, "reach max api daily quota limit")
            self._made[(link.appid, day)] = made + 1
            token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(11))
            self.links[token] = link
        return token

    def find(self, token: str) -> Link | None:
        with self.lock:
            return self.links.get(token)


def links() -> LinkBook:
    """The link book of the sandbox app handling the current request."""
    return current_app.extensions["sandbox_links"]


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WeChatFault(47001, "data format error")
    return value


def _expiry(body: dict[str, Any]) -> float:
    """When the link asked for expires: ``expire_type`` 0 is a time, 1 a number of days; at most 30 days."""
    now = time.time()
    expire_type = _int(body.get("expire_type", 0))
    if expire_type == 0:
        expire_time = _int(body.get("expire_time", int(now) + MAX_SECONDS))
        if not MIN_SECONDS < expire_time - now <= MAX_SECONDS:
            raise WeChatFault(85401, "time limit between 1min and 30days")
        return float(expire_time)
    if expire_type == 1:
        interval = _int(body.get("expire_interval", 30))
        if not 1 <= interval <= 30:
            raise WeChatFault(85401, "time limit between 1min and 30days")
        return now + interval * 86400
    raise WeChatFault(40097, "invalid args")


def _make(appid: str, kind: str, target: dict[str, Any], body: dict[str, Any]) -> str:
    path, query, env_version = target.get("path", ""), target.get("query", ""), target.get("env_version", "release")
    if not all(isinstance(v, str) for v in (path, query, env_version)):
        raise WeChatFault(47001, "data format error")
    page = path.lstrip("/")  # WeChat takes "/pages/a/b" and "pages/a/b" alike; "" is the home page
    known = state().pages
    if page and (not PAGE_PATH.fullmatch(page) or (known is not None and page not in known)):
        raise WeChatFault(40165, "invalid weapp pagepath")
    if len(query) > QUERY_MAX or not QUERY_CHARS.fullmatch(query):
        raise WeChatFault(40212, "invalid query")
    if env_version not in ENV_VERSIONS:
        raise WeChatFault(40097, "invalid args")
    return links().add(Link(appid, kind, page, query, env_version, _expiry(body)))


@wechat_api(links_bp, "/wxa/generate_urllink", "POST")
def generate_urllink() -> Response:
    appid = state().check_token(request.args.get("access_token"))
    body = json_body(WeChatFault(47001, "data format error"))
    token = _make(appid, "url_link", body, body)
    return jsonify(errcode=0, errmsg="ok", url_link=URL_LINK_PREFIX + token)


@wechat_api(links_bp, "/wxa/generatescheme", "POST")
def generatescheme() -> Response:
    appid = state().check_token(request.args.get("access_token"))
    body = json_body(WeChatFault(47001, "data format error"))
    target = body.get("jump_wxa", {})
    if not isinstance(target, dict):
        raise WeChatFault(47001, "data format error")
    token = _make(appid, "scheme", target, body)
    return jsonify(errcode=0, errmsg="ok", openlink=SCHEME_PREFIX + token)


@links_bp.get("/sandbox/links/open")
def open_link() -> Response:
    """Play a phone following ``?url=`` (a URL Link or URL Scheme): the mini-program page it opens."""
    url = request.args.get("url", "")
    token = ""
    for prefix in (URL_LINK_PREFIX, SCHEME_PREFIX):
        if url.startswith(prefix):
            token = url[len(prefix):]
    link = links().find(token) if token else None
    if link is None:
        return _control_error(404, "no such link")
    if link.expires_at <= time.time():
        return _control_error(410, "the link has expired")
    return jsonify(
        appid=link.appid, kind=link.kind, path=link.path, query=link.query,
        env_version=link.env_version, expires_at=int(link.expires_at),
    )
