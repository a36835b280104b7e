"""Errors of the catalog, orders, payments and refunds."""
from server.errors import AppError, ConflictError, NotFoundError


class OrderNotFoundError(NotFoundError):
    code, message = 40460, "no such order"


class ProductNotFoundError(NotFoundError):
    code, message = 40461, "no such product"


class RefundNotFoundError(NotFoundError):
    code, message = 40462, "no such refund"


class SkuUnavailableError(AppError):
    http_status, code, message = 409, 40960, "this item is not on sale"


class InsufficientStockError(ConflictError):
    code, message = 40961, "not enough stock"


class IllegalTransitionError(ConflictError):
    code, message = 40962, "the order cannot make this move now"


class PayWindowTooShortError(ConflictError):
    """Too little of the order's time to pay is left for WeChat Pay to accept a payment window."""

    code, message = 40968, "too little of this order's time to pay is left; place the order again"


class RefundTooLargeError(AppError):
    http_status, code, message = 422, 42260, "the refund exceeds what can be refunded"


class AmountMismatchError(AppError):
    """A notification whose amount is not our order's: refused, nothing changes."""

    http_status, code, message = 400, 40060, "the amount does not match the order"


class PaymentNotConfiguredError(AppError):
    http_status, code, message = 503, 50360, "WeChat Pay is not configured"


# -- offline contracts ------------------------------------------------------------------
# The 422 errors carry ``data.errors`` in the same shape as body validation, so the console
# can put the message next to the field that caused it.


class ContractNotFoundError(NotFoundError):
    code, message = 40463, "no such contract"


class InstallmentNotFoundError(NotFoundError):
    code, message = 40464, "the contract has no installment with this number"


class InstallmentAlreadyReceivedError(ConflictError):
    code, message = 40965, "this installment has already been received"


class InstallmentsOutstandingError(ConflictError):
    code, message = 40966, "every installment must be received before finance confirms the final payment"


class FinalPaymentConfirmedError(ConflictError):
    code, message = 40967, "finance has already confirmed this contract's final payment"


class LeadNotValidError(AppError):
    http_status, code, message = 422, 42261, "only a lead operations marked valid can become a contract"


class LeadWithoutMemberError(AppError):
    http_status, code, message = 422, 42262, (
        "this lead has no member yet: the contact must sign in to the mini-program once before a contract can be opened for them"
    )


class InstallmentsMismatchError(AppError):
    http_status, code, message = 422, 42263, "the installments must add up to the contract amount"


class ParentContractError(AppError):
    http_status, code, message = 422, 42264, "the parent must be an earlier paid or completed contract of the same member"
