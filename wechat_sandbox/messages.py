"""Messages to users: the mini-program's subscribe messages (``subscribeMessage.send``) and the official
account's template messages (``cgi-bin/message/template/send``), with the merchant's templates, the
users' one-time allowances, WeChat's checks of every value, and a list of what was accepted.

The sandbox plays a merchant who picked the templates in ``SUBSCRIBE_TEMPLATES`` and
``OA_TEMPLATES``; a keyword's type is in its name (``thing1``, ``amount3``), as on WeChat.
A user accepting a one-time template in ``wx.requestSubscribeMessage`` is played by
``POST /sandbox/subscriptions``; each send uses one acceptance, and without one WeChat answers 43101.
"""
from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from server.wechat.formats import keyword_type, value_problem
from wechat_sandbox.core import WeChatFault, _control_error, json_body, state, wechat_api
from wechat_sandbox.miniprogram import PAGE_PATH
from wechat_sandbox.official_account import oa_state

#: The merchant's one-time subscribe-message templates: template id -> its keywords.
SUBSCRIBE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "SbxPointsPending0000000000000000000000001": ("thing1", "number2", "phrase3", "date4", "character_string5"),
    "SbxPointsAvailable000000000000000000000002": ("number1", "number2", "thing3", "date4"),
    "SbxOrderShipped00000000000000000000000003": ("character_string1", "thing2", "amount3", "phrase4", "date5"),
    "SbxRefundResult00000000000000000000000004": ("character_string1", "amount2", "phrase3", "thing4", "date5"),
    "SbxApplicationDecided00000000000000000005": ("phrase1", "thing2", "date3", "name4"),
    "SbxLeadValid000000000000000000000000000006": ("thing1", "number2", "phrase3", "time4"),
    "SbxRedemptionFulfilled0000000000000000007": ("thing1", "number2", "phrase3", "date4", "thing5"),
    "SbxEveryType00000000000000000000000000008": (
        "thing1", "number2", "letter3", "symbol4", "character_string5", "time6", "date7", "amount8",
        "phone_number9", "car_number10", "name11", "phrase12",
    ),
}
#: The official account's template-message templates (new-style keywords, the same value rules).
OA_TEMPLATES: dict[str, tuple[str, ...]] = {
    "SbxOaNotice000000000000000000000000000001": ("thing1", "thing2", "time3"),
    "SbxOaPoints000000000000000000000000000002": ("number1", "thing2", "time3"),
}
MINIPROGRAM_STATES = frozenset({"developer", "trial", "formal"})
LANGS = frozenset({"zh_CN", "en_US", "zh_HK", "zh_TW"})
#: The most acceptances of one template the sandbox keeps for a user.
MAX_ALLOWANCES = 1000


@dataclass
class SentMessage:
    """A message WeChat accepted."""

    msgid: int
    #: "subscribe" or "template".
    kind: str
    appid: str
    touser: str
    template_id: str
    data: dict[str, str]
    #: The mini-program page it opens; for a template message its ``url`` or ``miniprogram.pagepath``.
    page: str | None
    sent_at: float


@dataclass
class MessageState:
    """The users' allowances and the messages sent, behind one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: (appid, openid, template id) -> acceptances not used yet.
    allowances: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    sent: list[SentMessage] = field(default_factory=list)

    def grant(self, appid: str, openid: str, template_id: str, times: int) -> int:
        """Add ``times`` acceptances of ``template_id``; returns how many are left."""
        with self.lock:
            key = (appid, openid, template_id)
            self.allowances[key] = min(self.allowances[key] + times, MAX_ALLOWANCES)
            return self.allowances[key]

    def use(self, appid: str, openid: str, template_id: str) -> bool:
        """Use one acceptance; False when none is left."""
        with self.lock:
            key = (appid, openid, template_id)
            if self.allowances[key] <= 0:
                return False
            self.allowances[key] -= 1
            return True

    def record(self, message: SentMessage) -> None:
        """Keep a message WeChat accepted."""
        with self.lock:
            self.sent.append(message)


def message_state() -> MessageState:
    """The message state of the sandbox app handling the current request, created on first use."""
    return current_app.extensions.setdefault("sandbox_messages", MessageState())


messages_bp = Blueprint("sandbox_messages", __name__)

_bad_body = WeChatFault(47001, "data format error")


def _string(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    """A text field of the body; WeChat names a missing or malformed one in its 47003."""
    value = body.get(key)
    if value is None:
        if required:
            raise WeChatFault(47003, f"argument invalid! {key} is empty")
        return None
    if not isinstance(value, str):
        raise WeChatFault(47003, f"argument invalid! {key} invalid")
    return value


def _check_data(data: Any, keywords: tuple[str, ...]) -> dict[str, str]:
    """The values of ``data`` (``{keyword: {"value": …}}``) as WeChat checks them: every keyword, each of its type."""
    if not isinstance(data, dict):
        raise WeChatFault(47003, "argument invalid! data is empty")
    values: dict[str, str] = {}
    for keyword in keywords:
        entry = data.get(keyword)
        value = entry.get("value") if isinstance(entry, dict) else None
        if not isinstance(value, str):
            raise WeChatFault(47003, f"argument invalid! data.{keyword}.value is empty")
        kind = keyword_type(keyword)
        assert kind is not None  # the sandbox's own templates name only known types
        problem = value_problem(kind, value)
        if problem is not None:
            raise WeChatFault(47003, f"argument invalid! data.{keyword}.value {problem}")
        values[keyword] = value
    return values


def _check_page(page: str) -> None:
    path = page.split("?", 1)[0].removeprefix("/")
    known = state().pages
    if not PAGE_PATH.fullmatch(path) or (known is not None and path not in known):
        raise WeChatFault(41030, "invalid page")


@wechat_api(messages_bp, "/cgi-bin/message/subscribe/send", "POST")
def subscribe_send() -> Response:
    """``subscribeMessage.send``: one acceptance of the template is used per message."""
    appid = state().check_token(request.args.get("access_token"))
    body = json_body(_bad_body)
    touser = _string(body, "touser")
    assert touser is not None
    if state().app_of_openid(touser) != appid:
        raise WeChatFault(40003, "invalid openid")
    template_id = _string(body, "template_id")
    keywords = SUBSCRIBE_TEMPLATES.get(template_id or "")
    if keywords is None:
        raise WeChatFault(40037, "invalid template_id")
    page = _string(body, "page", required=False)
    if page:
        _check_page(page)
    if body.get("miniprogram_state", "formal") not in MINIPROGRAM_STATES:
        raise WeChatFault(47003, "argument invalid! miniprogram_state invalid")
    if body.get("lang", "zh_CN") not in LANGS:
        raise WeChatFault(47003, "argument invalid! lang invalid")
    values = _check_data(body.get("data"), keywords)
    messages = message_state()
    if not messages.use(appid, touser, template_id or ""):
        raise WeChatFault(43101, "user refuse to accept the msg")
    msgid = secrets.randbelow(2**53)
    messages.record(SentMessage(msgid, "subscribe", appid, touser, template_id or "", values, page or None, time.time()))
    return jsonify(errcode=0, errmsg="ok", msgid=msgid)


def _follower_name(appid: str, openid: str) -> str | None:
    """The user the sandbox plays behind ``openid`` if they follow the account ``appid``."""
    oa = oa_state()
    with oa.lock:
        names = [name for (follow_appid, name) in oa.followers if follow_appid == appid]
    for name in names:
        if state().openid(appid, name) == openid:
            return name
    return None


@wechat_api(messages_bp, "/cgi-bin/message/template/send", "POST")
def template_send() -> Response:
    """The official account's template message, to a follower only (43004 otherwise)."""
    appid = state().check_token(request.args.get("access_token"))
    body = json_body(_bad_body)
    touser = _string(body, "touser")
    assert touser is not None
    if state().app_of_openid(touser) != appid:
        raise WeChatFault(40003, "invalid openid")
    template_id = _string(body, "template_id")
    keywords = OA_TEMPLATES.get(template_id or "")
    if keywords is None:
        raise WeChatFault(40037, "invalid template_id")
    page: str | None = None
    miniprogram = body.get("miniprogram")
    if miniprogram is not None:
        if not isinstance(miniprogram, dict) or not isinstance(miniprogram.get("appid"), str):
            raise WeChatFault(47001, "data format error")
        if miniprogram["appid"] not in state().apps:
            raise WeChatFault(40165, "invalid weapp pagepath")
        pagepath = miniprogram.get("pagepath")
        if pagepath is not None:
            if not isinstance(pagepath, str):
                raise WeChatFault(47001, "data format error")
            _check_page(pagepath)
            page = pagepath
    url = body.get("url")
    if url is not None and (not isinstance(url, str) or not re.match(r"https?://", url)):
        raise WeChatFault(47001, "data format error")
    values = _check_data(body.get("data"), keywords)
    if _follower_name(appid, touser) is None:
        raise WeChatFault(43004, "require subscribe")
    msgid = secrets.randbelow(2**53)
    message_state().record(SentMessage(msgid, "template", appid, touser, template_id or "", values, page or url, time.time()))
    return jsonify(errcode=0, errmsg="ok", msgid=msgid)


# -- the sandbox's own controls ------------------------------------------------------------------


@messages_bp.post("/sandbox/subscriptions")
def accept_subscription() -> Response:
    """Play a user accepting templates in ``wx.requestSubscribeMessage``:
    ``{"user": "alice", "template_ids": [...], "times": 1}`` (``appid`` defaults to the first app)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _control_error(400, "a JSON object is required")
    user, template_ids, times = body.get("user"), body.get("template_ids"), body.get("times", 1)
    appid = body.get("appid") or next(iter(state().apps))
    if not isinstance(user, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", user):
        return _control_error(400, "user must be 1-64 of A-Za-z0-9_.-")
    if appid not in state().apps:
        return _control_error(400, "unknown appid")
    if not isinstance(template_ids, list) or not template_ids or not all(t in SUBSCRIBE_TEMPLATES for t in template_ids):
        return _control_error(400, "template_ids must list the sandbox's subscribe templates")
    if type(times) is not int or not 1 <= times <= MAX_ALLOWANCES:
        return _control_error(400, f"times must be 1-{MAX_ALLOWANCES}")
    openid = state().openid(appid, user)
    left = {t: message_state().grant(appid, openid, t, times) for t in template_ids}
    return jsonify(openid=openid, allowances=left)


@messages_bp.get("/sandbox/templates")
def list_templates() -> Response:
    """The merchant's templates the sandbox knows, with their keywords."""
    return jsonify(subscribe=SUBSCRIBE_TEMPLATES, official_account=OA_TEMPLATES)


@messages_bp.route("/sandbox/messages", methods=["GET", "DELETE"])
def list_messages() -> Response:
    """What WeChat accepted, oldest first (``?touser=`` narrows it); ``DELETE`` forgets them and every allowance."""
    messages = message_state()
    if request.method == "DELETE":
        with messages.lock:
            messages.sent.clear()
            messages.allowances.clear()
        return jsonify(ok=True)
    touser = request.args.get("touser")
    with messages.lock:
        sent = [vars(m) for m in messages.sent if touser is None or m.touser == touser]
    return jsonify(messages=sent)
