"""Errors of scenes, posters, leads and partner channels."""
from server.errors import AppError, ConflictError, NotFoundError


class SceneNotFoundError(NotFoundError):
    code, message = 40410, "no such scene"


class PartnerNotFoundError(NotFoundError):
    code, message = 40411, "no such partner"


class LeadAlreadyReviewedError(ConflictError):
    code, message = 40920, "this lead has already been reviewed"


class PartnerExistsError(ConflictError):
    code, message = 40921, "a partner with this name exists"


class LeadNotQualifiedError(AppError):
    http_status, code, message = 422, 42265, (
        "only a sales lead with a contact phone and a stated need can be marked valid for its sharer; "
        "an arrival (a sign-in through a share) is a head, not a lead"
    )


class NotBoundError(AppError):
    http_status, code, message = 409, 40922, "the scene did not bind"


class SceneQuotaError(AppError):
    http_status, code, message = 429, 42901, "you have created as many share links as allowed today"


class LeadPhoneMissingError(NotFoundError):
    code, message = 40412, "this lead left no phone number"


class IllegalFollowUpError(ConflictError):
    code, message = 40923, "the lead's follow-up cannot make this move"


class LeadAlreadyLinkedError(ConflictError):
    code, message = 40924, "this lead is already linked to a member"


class NothingToPayError(ConflictError):
    code, message = 40925, "the partner has no unpaid commission in this period"


class ForeignPageError(AppError):
    http_status, code, message = 422, 42266, "only a page of this site (PUBLIC_BASE_URL) can be signed for the JS-SDK"
