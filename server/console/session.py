"""The staff member's console session: a signed, HttpOnly, SameSite=Lax cookie with an idle timeout.

The cookie holds the bearer token the admin API's sign-in issues (``sign_in_staff``), encrypted so a
copied cookie is no API token and dies with the idle timeout, so signing
out, disabling an account or changing a password revokes a console session exactly as it revokes
an API token, and each page checks its area's roles with ``authenticate_staff``, as the API does.
The cookie also holds when the staff member was last seen: after ``CONSOLE_IDLE_MINUTES`` without
a request the session ends and its token is revoked.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import current_app, flash, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from server import db, security
from server.accounts.models import Staff, SubjectType
from server.accounts.services import authenticate_staff, revoke_token
from server.console.roles import roles_for
from server.errors import InvalidTokenError

P = ParamSpec("P")
R = TypeVar("R")

TOKEN_KEY, SEEN_KEY = "staff_token", "seen"


def start(token: str) -> None:
    """Begin a session for a freshly issued token (a new cookie: nothing of the old one survives)."""
    session.clear()
    session[TOKEN_KEY] = security.encrypt(token, "console-session")
    session[SEEN_KEY] = int(time.time())


def _token() -> str | None:
    """The session's bearer token, or None without one (or with one this server did not encrypt)."""
    sealed = session.get(TOKEN_KEY)
    if not isinstance(sealed, str):
        return None
    try:
        return security.decrypt(sealed, "console-session")
    except ValueError:
        return None


def end() -> None:
    """Sign out: revoke the session's token (if it still works) and drop the cookie's contents."""
    token = _token()
    if token is not None:
        try:
            revoke_token(db.session(), token, SubjectType.staff)
        except InvalidTokenError:
            pass
    session.clear()


def idle_seconds() -> int:
    return int(current_app.config["CONSOLE_IDLE_MINUTES"]) * 60


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a console path on this site (so the login form cannot send anyone elsewhere)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/") or "\\" in target:
        return None
    return target


def _to_login(message: str | None = None) -> Response:
    if message:
        flash(message, "info")
    target = request.full_path if request.method == "GET" else None
    return redirect(url_for("console.login", next=safe_next(target.rstrip("?") if target else None)))


def signed_in_staff(area: str) -> Staff | Response:
    """The signed-in staff member, who must hold one of ``area``'s roles (RoleRequiredError if not),
    or the redirect to the login page when there is no live session."""
    token = _token()
    if token is None:
        session.clear()
        return _to_login()
    seen = session.get(SEEN_KEY)
    now = int(time.time())
    if not isinstance(seen, int) or now - seen > idle_seconds():
        end()
        return _to_login("长时间未操作，已自动退出，请重新登录。")
    try:
        staff = authenticate_staff(db.session(), token, roles_for(area))
    except InvalidTokenError:
        session.clear()
        return _to_login("登录已失效，请重新登录。")
    session[SEEN_KEY] = now
    g.staff = staff
    return staff


def console_view(area: str) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
    """Only staff whose role may use ``area`` reach this page (see ``roles.AREAS``); ``g.staff`` is them."""

    def decorator(view: Callable[P, R]) -> Callable[P, R | Response]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            # Inside the view, not in before_request: ending an idle session revokes its token,
            # and only a view's answer is committed.
            staff = signed_in_staff(area)
            if isinstance(staff, Response):
                return staff
            return view(*args, **kwargs)

        setattr(wrapper, "console_area", area)
        return wrapper

    return decorator


def current_staff() -> Staff:
    staff: Staff = g.staff
    return staff


def staff_or_none() -> Any:
    return g.get("staff")
