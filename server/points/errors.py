"""Errors of the points ledger, rewards, settlement and redemption."""
from server.errors import AppError, ConflictError, NotFoundError


class LedgerError(Exception):
    """A programming error: an unbalanced transaction or a wrong account. Never shown to clients as such."""


class InsufficientPointsError(AppError):
    http_status, code, message = 409, 40940, "not enough points"


class DuplicateRequestError(ConflictError):
    code, message = 40941, "this idempotency key was used for a different request"


class RedemptionItemNotFoundError(NotFoundError):
    code, message = 40440, "no such redemption item"


class RedemptionNotFoundError(NotFoundError):
    code, message = 40441, "no such redemption"


class OutOfStockError(ConflictError):
    code, message = 40942, "this item is out of stock"


class SettlementClaimedError(ConflictError):
    code, message = 40943, "this settlement period has already been run"


class SettlementRunningError(ConflictError):
    """A settlement started by hand is still running; ``data.job_id`` is its job."""

    code, message = 40949, "a settlement started by hand is still running; wait for it to finish"


class RewardOverrideExistsError(ConflictError):
    code, message = 40948, "this product or grade already has a reward override; change that one"


class ComplianceError(AppError):
    """A setting or action that would break a compliance guard (DESIGN §5)."""

    http_status, code, message = 422, 42240, "refused by a compliance guard"


class HoldStateError(ConflictError):
    """A hold on rewards is not in the state the move needs (``data.state``); someone else moved it first."""

    code, message = 40951, "these rewards are no longer held as this action needs"
