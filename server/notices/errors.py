"""Errors of notices."""
from server.errors import ConflictError, NotFoundError


class NoSuchNoticeError(NotFoundError):
    code, message = 40480, "no such notice"


class NoticeStateError(ConflictError):
    """A change the notice's status does not allow; ``data.status`` is its status."""

    code, message = 40980, "the notice's status does not allow this"
