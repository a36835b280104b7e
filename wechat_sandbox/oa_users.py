"""The sandbox plays the official account's users: ``POST /sandbox/oa/events`` makes one follow,
scan, leave or write, and the sandbox pushes WeChat's signed, optionally encrypted XML to the
callback URL of ``MessagePush`` (also ``PUT /sandbox/oa/push``).
"""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from typing import Any

import requests
import xmltodict
from flask import Blueprint, Response, jsonify, request
from wechatpy.crypto import PrpCrypto, WeChatCrypto

from wechat_sandbox.core import PUSH_TIMEOUT, _cdata, _control_error, state
from wechat_sandbox.official_account import (
    SUCCESS_REPLY,
    MessagePush,
    _Follower,
    oa_state,
    original_id,
)


def _message_xml(fields: list[tuple[str, str | int]]) -> str:
    nodes = (f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}>{_cdata(v)}</{k}>" for k, v in fields)
    return "<xml>" + "".join(nodes) + "</xml>"


def _sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def _aes_key(encoding_aes_key: str) -> bytes:
    return base64.b64decode(encoding_aes_key + "=")

oa_users_bp = Blueprint("sandbox_oa_users", __name__)


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


@oa_users_bp.route("/sandbox/oa/push", methods=["GET", "PUT", "DELETE"])
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


@oa_users_bp.post("/sandbox/oa/reset")
def reset_official_account() -> Response:
    """Forget followers, QR codes and menus (the push settings stay), so tests start from nobody."""
    oa = oa_state()
    with oa.lock:
        oa.followers.clear()
        oa.qrcodes.clear()
        oa.known.clear()
        oa.menus.clear()
    return jsonify(ok=True)


@oa_users_bp.post("/sandbox/oa/events")
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
    if not isinstance(body, dict) or not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
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
