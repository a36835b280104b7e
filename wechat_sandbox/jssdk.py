"""The official account's JS-SDK: ``cgi-bin/ticket/getticket`` and checking a page's ``wx.config``.

Each call issues a new ticket valid for two hours; earlier tickets stay valid until their own
expiry, as on WeChat. ``POST /sandbox/jssdk/verify`` is what the JS-SDK does with ``wx.config`` in
WeChat's web view: it recomputes the signature for the page URL against the app's live tickets and
answers ``config:ok`` or ``config:invalid signature``.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from wechat_sandbox.core import WeChatFault, _control_error, state, wechat_api

#: WeChat's tickets live two hours.
TICKET_TTL = 7200
TICKET_TYPES = frozenset({"jsapi", "wx_card"})

jssdk_bp = Blueprint("sandbox_jssdk", __name__)


@dataclass
class _Ticket:
    appid: str
    kind: str
    expires_at: float


class TicketBook:
    """The tickets the sandbox issued, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tickets: dict[str, _Ticket] = {}

    def issue(self, appid: str, kind: str) -> str:
        """A new ticket; the earlier ones keep working until they expire."""
        ticket = secrets.token_urlsafe(64)
        now = time.time()
        with self.lock:
            for stale in [t for t, v in self.tickets.items() if v.expires_at < now]:
                del self.tickets[stale]
            self.tickets[ticket] = _Ticket(appid, kind, now + TICKET_TTL)
        return ticket

    def live(self, appid: str, kind: str = "jsapi") -> list[str]:
        """The unexpired tickets of ``appid``."""
        now = time.time()
        with self.lock:
            return [t for t, v in self.tickets.items() if v.appid == appid and v.kind == kind and v.expires_at > now]

    def expire(self, appid: str | None = None) -> int:
        """Make every ticket (of ``appid``) expired; returns how many."""
        past = time.time() - 1
        with self.lock:
            hit = [v for v in self.tickets.values() if appid is None or v.appid == appid]
            for entry in hit:
                entry.expires_at = min(entry.expires_at, past)
            return len(hit)


def tickets() -> TicketBook:
    """The ticket book of the sandbox app handling the current request."""
    return current_app.extensions["sandbox_tickets"]


def signature_of(ticket: str, nonce_str: str, timestamp: str, url: str) -> str:
    """The JS-SDK signature as WeChat's documentation (Appendix 1) defines it."""
    plain = f"jsapi_ticket={ticket}&noncestr={nonce_str}&timestamp={timestamp}&url={url}"
    return hashlib.sha1(plain.encode("utf-8")).hexdigest()


@wechat_api(jssdk_bp, "/cgi-bin/ticket/getticket", "GET")
def get_ticket() -> Response:
    appid = state().check_token(request.args.get("access_token"))
    kind = request.args.get("type")
    if kind not in TICKET_TYPES:
        raise WeChatFault(40097, "invalid args")
    return jsonify(errcode=0, errmsg="ok", ticket=tickets().issue(appid, kind), expires_in=TICKET_TTL)


def verify_config(appid: str, config: dict[str, Any], url: str) -> str:
    """What ``wx.config(config)`` on the page at ``url`` reports: ``config:ok`` or the JS-SDK's error."""
    if config.get("appId") != appid:
        return "config:invalid signature"
    timestamp, nonce, signature = config.get("timestamp"), config.get("nonceStr"), config.get("signature")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, str)) or not str(timestamp).isdigit():
        return "config:invalid signature"
    if not isinstance(nonce, str) or not nonce or not isinstance(signature, str):
        return "config:invalid signature"
    page = url.split("#", 1)[0]  # the JS-SDK signs location.href without its fragment
    for ticket in tickets().live(appid):
        if secrets.compare_digest(signature_of(ticket, nonce, str(timestamp), page), signature):
            return "config:ok"
    return "config:invalid signature"


@jssdk_bp.post("/sandbox/jssdk/verify")
def verify() -> Response:
    """Play the JS-SDK: ``{"url": page URL, "config": the wx.config object}`` → ``{"errMsg": …}``."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("url"), str) or not isinstance(body.get("config"), dict):
        return _control_error(400, "url (string) and config (object) are required")
    config = body["config"]
    appid = config.get("appId")
    if not isinstance(appid, str) or appid not in state().apps:
        return jsonify(errMsg="config:invalid appid")
    return jsonify(errMsg=verify_config(appid, config, body["url"]))


@jssdk_bp.post("/sandbox/jssdk/expire")
def expire_tickets() -> Response:
    """Expire every ticket (``?appid=`` of one app), so a page still signed with one fails."""
    return jsonify(expired=tickets().expire(request.args.get("appid")))
