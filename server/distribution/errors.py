"""Errors of distributor applications and decisions, grades and promotion materials."""
from server.errors import ConflictError, NotFoundError


class NotADistributorError(NotFoundError):
    code, message = 40430, "you have not applied to become a distributor"


class ApplicationExistsError(ConflictError):
    code, message = 40930, "you already have a pending or approved distributor application"


class ApplicationBlockedError(ConflictError):
    code, message = 40931, "a frozen or disabled distributor cannot apply again"


class LeaderboardOffError(NotFoundError):
    code, message = 40435, "the merchant has switched the leaderboard off"


class IllegalTransitionError(ConflictError):
    """A decision the distributor's current status does not allow; ``data`` says which."""

    code, message = 40932, "the distributor's status does not allow this"


class GradeExistsError(ConflictError):
    code, message = 40933, "a grade with this name or sales threshold exists"


class GradeInUseError(ConflictError):
    code, message = 40934, "distributors hold this grade"
