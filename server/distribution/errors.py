"""Errors of distributor applications and decisions, grades and promotion materials."""
from server.errors import BadRequestError, ConflictError, NotFoundError


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


class RulesNotAcceptedError(BadRequestError):
    """Applying without ``rules_version`` while a version of the programme rules is current."""

    code, message = 40030, "accept the current distributor programme rules: send their version as rules_version"


class RulesOutdatedError(ConflictError):
    """The version the member accepted is not the current one; ``data.current_version`` is."""

    code, message = 40935, "the distributor programme rules have changed: show the current version and accept it"


class RulesPublishedError(ConflictError):
    code, message = 40936, "a published version of the programme rules cannot change; start a new draft"


class NoSuchRulesError(NotFoundError):
    code, message = 40436, "no such version of the programme rules"
