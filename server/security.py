"""Keys derived from SECRET_KEY: field encryption, keyed digests and signed bearer tokens."""
from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from itsdangerous import BadData, BadSignature, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode


def _derive(purpose: str) -> bytes:
    """A 32-byte key for one purpose, so no two uses share key material."""
    secret = current_app.config["SECRET_KEY"].encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret)


def encrypt(plaintext: str, purpose: str) -> str:
    """Authenticated encryption of a field (phone number, session_key) for storage."""
    return Fernet(base64.urlsafe_b64encode(_derive(f"field:{purpose}"))).encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str, purpose: str) -> str:
    try:
        return Fernet(base64.urlsafe_b64encode(_derive(f"field:{purpose}"))).decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise ValueError("cannot decrypt: wrong SECRET_KEY or corrupted value") from None


def digest(value: str, purpose: str) -> str:
    """A keyed digest, to look a value up without storing it in the clear."""
    return hmac.new(_derive(f"digest:{purpose}"), value.encode(), hashlib.sha256).hexdigest()


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=f"token:{purpose}")


def sign_token(payload: dict[str, Any], purpose: str) -> str:
    return _serializer(purpose).dumps(payload)


def _is_canonical(token: str) -> bool:
    """Every segment is base64 as we would write it.

    Base64 ignores the spare low bits of a segment's last character, so two
    spellings can decode to the same bytes; refusing the ones we would not have
    written makes every changed character a rejected token.
    """
    for segment in token.split("."):
        if not segment:
            continue
        try:
            if base64_encode(base64_decode(segment)).decode() != segment:
                return False
        except (BadData, ValueError):
            return False
    return True


def load_token(token: str, purpose: str, max_age: int) -> dict[str, Any] | None:
    """The payload of a token we signed for ``purpose``, or None if tampered with or too old."""
    if not token.isascii() or not _is_canonical(token):
        return None
    try:
        payload = _serializer(purpose).loads(token, max_age=max_age)
    except (BadSignature, UnicodeError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def mask(text: str, *, keep_head: int = 1, keep_tail: int = 1) -> str:
    """Hide the middle of a name or number: 爱丽丝 → 爱*丝, 13800138000 → 138****8000."""
    if len(text) <= 1:
        return "*"
    if len(text) <= keep_head + keep_tail:
        return text[:1] + "*" * (len(text) - 1)
    return text[:keep_head] + "*" * (len(text) - keep_head - keep_tail) + text[len(text) - keep_tail :]


def mask_phone(number: str) -> str:
    """138****8000 for a mainland mobile; the first digit and last four for anything shorter."""
    return mask(number, keep_head=3 if len(number) >= 8 else 1, keep_tail=4)
