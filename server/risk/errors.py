"""Errors of the risk review queue."""
from server.errors import ConflictError, NotFoundError


class ReviewNotFoundError(NotFoundError):
    code, message = 40495, "no such risk review"


class ReviewDecidedError(ConflictError):
    """The review's state does not allow this decision (someone decided first); ``data.state`` is where it stands."""

    code, message = 40995, "this review's state does not allow that decision"


class NotFreezableError(ConflictError):
    code, message = 40996, "the member in question is not an approved distributor, so there is nobody to freeze"
