"""The official account's message callback: WeChat's signatures, safe-mode encryption, passive replies.

In plaintext mode WeChat signs only ``token``, ``timestamp`` and ``nonce``, never
the body, so one captured query string would carry any forged body. Safe mode
(``encrypt_type=aes``) adds ``msg_signature`` over the encrypted body. Once an
EncodingAESKey is configured, plaintext callbacks are therefore refused: switching
the MP console to safe (or compatible) mode and setting the key closes that hole.
No business rules live here.
"""
from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping

from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.messages import BaseMessage
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

#: What a callback answers when it has nothing to say; WeChat then neither retries nor complains.
SUCCESS = "success"

#: Openids and original ids (``gh_…``): they are echoed into the reply XML, so nothing else gets in.
_USER_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")


class CallbackRejectedError(Exception):
    """The callback is not provably from WeChat: answer 403 and act on nothing."""


class CallbackUnreadableError(Exception):
    """The callback is signed but its body is no message we can read."""


@dataclass(frozen=True)
class IncomingMessage:
    """A verified message or event, and how to answer it."""

    message: BaseMessage
    #: It came encrypted, so the reply must be too.
    encrypted: bool
    nonce: str

    @property
    def openid(self) -> str:
        return str(self.message.source)


def _aes_key_is_valid(aes_key: str) -> bool:
    if len(aes_key) != 43:
        return False
    try:
        return len(base64.b64decode(aes_key + "=", validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


class MessageCodec:
    """Verifies and opens the official account's callbacks and seals its passive replies."""

    def __init__(self, appid: str, token: str, aes_key: str | None = None) -> None:
        if not token:
            raise ValueError("the official account's token is empty: anyone could sign a callback")
        if aes_key and not _aes_key_is_valid(aes_key):
            raise ValueError("WECHAT_OA_AES_KEY must be the 43-character EncodingAESKey from the MP console")
        self.appid = appid
        self.token = token
        self.crypto = WeChatCrypto(token, aes_key, appid) if aes_key else None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MessageCodec | None:
        """From ``WECHAT_OA_APPID``, ``WECHAT_OA_TOKEN`` and ``WECHAT_OA_AES_KEY``; None without a token."""
        if not config.get("WECHAT_OA_TOKEN"):
            return None
        return cls(config.get("WECHAT_OA_APPID") or "", config["WECHAT_OA_TOKEN"], config.get("WECHAT_OA_AES_KEY") or None)

    @property
    def safe_mode(self) -> bool:
        return self.crypto is not None

    def _check_query_signature(self, args: Mapping[str, str]) -> tuple[str, str]:
        signature, timestamp, nonce = (args.get(k) or "" for k in ("signature", "timestamp", "nonce"))
        if not (signature and timestamp and nonce):
            raise CallbackRejectedError("signature, timestamp or nonce missing")
        try:
            check_signature(self.token, signature, timestamp, nonce)
        except InvalidSignatureException:
            raise CallbackRejectedError("signature does not match") from None
        return timestamp, nonce

    def verify_url(self, args: Mapping[str, str]) -> str:
        """The ``echostr`` to send back when WeChat checks the callback URL (always plaintext)."""
        self._check_query_signature(args)
        return args.get("echostr") or ""

    def open(self, args: Mapping[str, str], body: bytes) -> IncomingMessage:
        """Verify a pushed message, decrypt it in safe mode and parse it."""
        timestamp, nonce = self._check_query_signature(args)
        encrypt_type = (args.get("encrypt_type") or "raw").lower()
        if encrypt_type == "aes":
            if self.crypto is None:
                raise CallbackUnreadableError("encrypted, but WECHAT_OA_AES_KEY is not configured")
            msg_signature = args.get("msg_signature") or ""
            if not msg_signature:
                raise CallbackRejectedError("msg_signature missing")
            try:
                xml = self.crypto.decrypt_message(body, msg_signature, timestamp, nonce)
            except InvalidSignatureException:
                raise CallbackRejectedError("msg_signature does not match") from None
            except InvalidAppIdException:
                raise CallbackRejectedError("encrypted for another appid") from None
            except Exception as exc:  # xmltodict, base64, padding and UTF-8 errors alike: the body is junk
                raise CallbackUnreadableError(f"cannot decrypt: {type(exc).__name__}") from None
        elif encrypt_type == "raw":
            if self.crypto is not None:
                raise CallbackRejectedError("plaintext callback, but safe mode is configured")
            xml = body
        else:
            raise CallbackUnreadableError(f"unknown encrypt_type {encrypt_type[:16]!r}")
        return IncomingMessage(message=_parse(xml), encrypted=encrypt_type == "aes", nonce=nonce)

    def reply_text(self, incoming: IncomingMessage, content: str) -> str:
        """A passive text reply to ``incoming``, encrypted when it was."""
        xml = TextReply(message=incoming.message, content=content).render()
        if self.crypto is None or not incoming.encrypted:
            return xml
        return self.crypto.encrypt_message(xml, incoming.nonce, str(int(time.time())))


def _parse(xml: bytes | str) -> BaseMessage:
    try:
        message = parse_message(xml)
        # Touch the fields every handler reads, so a malformed one fails here and not later.
        source, target, created = message.source, message.target, message.time
    except Exception as exc:  # expat, a missing <xml> root or MsgType, a non-numeric CreateTime, bad UTF-8
        raise CallbackUnreadableError(f"not a WeChat message: {type(exc).__name__}") from None
    if not (isinstance(source, str) and _USER_ID.fullmatch(source) and isinstance(target, str) and _USER_ID.fullmatch(target)):
        raise CallbackUnreadableError("FromUserName or ToUserName is not an id")
    if created <= 0:
        raise CallbackUnreadableError("CreateTime is not a time")
    return message
