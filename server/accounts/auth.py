"""Route guards: who is calling, from the Authorization header."""
from __future__ import annotations

import functools
from typing import Callable, ParamSpec, TypeVar

from flask import g, request

from server import db
from server.accounts.models import Member, Staff, StaffRole
from server.accounts.services import authenticate_member, authenticate_staff
from server.errors import AppError, UnauthorizedError

P = ParamSpec("P")
R = TypeVar("R")


def bearer_token() -> str:
    """The token of ``Authorization: Bearer <token>``; 401 if there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError()
    return token.strip()


def member_required(view: Callable[P, R]) -> Callable[P, R]:
    """Only a signed-in, active member may call this route; ``current_member()`` is theirs."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        g.member = authenticate_member(db.session(), bearer_token())
        return view(*args, **kwargs)

    return wrapper


def staff_required(*roles: StaffRole) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Only active staff holding one of ``roles`` (the owner always) may call this route."""

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            g.staff = authenticate_staff(db.session(), bearer_token(), roles)
            return view(*args, **kwargs)

        return wrapper

    return decorator


def member_if_signed_in() -> Member | None:
    """For public routes that show more to a member: the caller's active member, else None (a bad token is ignored)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        return authenticate_member(db.session(), token.strip())
    except AppError:
        return None


def current_member() -> Member:
    return g.member


def current_staff() -> Staff:
    return g.staff
