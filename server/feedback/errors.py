"""Errors of feedback and reports."""
from __future__ import annotations

from server.errors import ConflictError, NotFoundError


class FeedbackNotFoundError(NotFoundError):
    code, message = 40490, "no such feedback"


class IllegalFeedbackTransitionError(ConflictError):
    """The item is no longer in a state the move starts from (another staff member moved it first); ``data`` says which."""

    code, message = 40990, "the feedback's state does not allow this"
