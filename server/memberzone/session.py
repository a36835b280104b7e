"""Who is looking at the member zone: the account's web OAuth, the zone's signed cookie and form tokens.

WeChat's OAuth (``snsapi_base``, then ``snsapi_userinfo`` for a visitor who does not follow the
account) names the visitor by unionid; a signed cookie keeps that unionid for a week, sent only
under ``/h5``. Forms carry a token signed for that unionid, so a page from another site (or another
member's cookie) cannot post in the member's name; the cookie being ``SameSite=Lax`` is a second wall.
"""
from __future__ import annotations

import secrets

from flask import current_app, redirect, request
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner
from werkzeug.wrappers import Response

from server import security
from server.wechat import official_account

#: The member zone's sign-in cookie, and the OAuth round trip's anti-forgery cookie.
ZONE_COOKIE = "member_zone"
NONCE_COOKIE = "member_zone_oauth"
ZONE_COOKIE_MAX_AGE = 7 * 24 * 3600
#: Seconds a browser has to come back from WeChat's OAuth page.
OAUTH_MAX_AGE = 600
#: How long a page's form stays usable.
FORM_MAX_AGE = 12 * 3600
_SCOPE_LETTERS = {"snsapi_base": "b", "snsapi_userinfo": "u"}
ZONE_HOME = "/h5/member"


def _state_signer() -> TimestampSigner:
    return TimestampSigner(current_app.config["SECRET_KEY"], salt="member-zone-oauth")


def secure_cookies() -> bool:
    return bool(current_app.config["PUBLIC_BASE_URL"].startswith("https://"))


def _zone_path(path: str) -> str:
    """``path`` if it is a page of the zone, else the zone's home: never a way off this site."""
    if path == ZONE_HOME or (path.startswith(ZONE_HOME + "/") and not path.startswith(ZONE_HOME + "/oauth") and "\\" not in path and len(path) <= 512 and path.isascii()):
        return path
    return ZONE_HOME


def start_oauth(scope: str, going_to: str = "/h5/member") -> Response:
    """Send the browser through the account's OAuth; ``state`` is bound to it by a nonce cookie, which
    also remembers the zone page the visitor was going to."""
    nonce = secrets.token_hex(8)
    # WeChat allows ``state`` only letters and digits, at most 128: the signed value goes as hex,
    # with the scope as one letter to stay short enough.
    state = _state_signer().sign(f"{nonce}-{_SCOPE_LETTERS[scope]}").hex()
    redirect_uri = f"{current_app.config['PUBLIC_BASE_URL']}/h5/member/oauth"
    response = redirect(official_account().oauth_url(redirect_uri, state, scope))
    response.set_cookie(NONCE_COOKIE, f"{nonce} {_zone_path(going_to)}", max_age=OAUTH_MAX_AGE, httponly=True, samesite="Lax",
                        secure=secure_cookies(), path="/h5/member")
    return response


def checked_state(state: str) -> tuple[str, str] | None:
    """The scope of a ``state`` we issued to this browser within OAUTH_MAX_AGE and the page it was
    going to, else None."""
    try:
        value = _state_signer().unsign(bytes.fromhex(state), max_age=OAUTH_MAX_AGE).decode("ascii")
    except (ValueError, BadSignature, SignatureExpired, UnicodeDecodeError):
        return None
    nonce, _, letter = value.partition("-")
    cookie_nonce, _, going_to = request.cookies.get(NONCE_COOKIE, "").partition(" ")
    if not cookie_nonce or not secrets.compare_digest(cookie_nonce, nonce):
        return None
    scope = next((scope for scope, known in _SCOPE_LETTERS.items() if known == letter), None)
    return None if scope is None else (scope, _zone_path(going_to))


def sign_in(response: Response, unionid: str) -> Response:
    """Set the zone's cookie for ``unionid`` on ``response`` and drop the OAuth nonce."""
    response.set_cookie(ZONE_COOKIE, security.sign_token({"u": unionid}, "member-zone"),
                        max_age=ZONE_COOKIE_MAX_AGE, httponly=True, samesite="Lax", secure=secure_cookies(), path="/h5")
    response.delete_cookie(NONCE_COOKIE, path="/h5/member")
    return response


def zone_unionid() -> str | None:
    """The unionid the zone's cookie names, if the cookie is ours and fresh."""
    token = request.cookies.get(ZONE_COOKIE)
    payload = security.load_token(token, "member-zone", ZONE_COOKIE_MAX_AGE) if token else None
    unionid = payload.get("u") if payload else None
    return unionid if isinstance(unionid, str) and unionid else None


def form_token(unionid: str) -> str:
    """The token a zone form carries: signed for this visitor, usable for FORM_MAX_AGE."""
    return security.sign_token({"u": unionid}, "member-zone-form")


def form_token_valid(token: str, unionid: str) -> bool:
    payload = security.load_token(token, "member-zone-form", FORM_MAX_AGE) if token else None
    signed_for = payload.get("u") if payload else None
    return isinstance(signed_for, str) and secrets.compare_digest(signed_for.encode(), unionid.encode())
