"""Errors of sign-in, tokens and staff accounts."""
from server.errors import AppError, ConflictError, ForbiddenError, UnauthorizedError


class InvalidLoginCodeError(AppError):
    http_status, code, message = 400, 40010, "the WeChat login code is invalid or already used"


class InvalidPhoneCodeError(AppError):
    http_status, code, message = 400, 40011, "the WeChat phone code is invalid or already used"


class MemberDisabledError(ForbiddenError):
    code, message = 40310, "this account is disabled"


class BadCredentialsError(UnauthorizedError):
    code, message = 40110, "wrong username or password"


class RoleRequiredError(ForbiddenError):
    code, message = 40311, "your role may not do this"


class StaffExistsError(ConflictError):
    code, message = 40910, "a staff account with this username exists"
