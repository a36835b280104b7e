"""Errors of the notifications package."""
from __future__ import annotations

from server.errors import ConflictError, NotFoundError


class NotificationNotFoundError(NotFoundError):
    code, message = 40470, "no such notification"


class NotResendableError(ConflictError):
    code, message = 40970, "only a dropped or failed notification can be sent again"


