"""Errors are types, rendered once into the envelope ``{"code", "message", "data"}``.

Error codes are the HTTP status times 100 plus a number within it, so a client
can branch on ``code`` and a person can still read the status from it.
"""
from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed


class AppError(Exception):
    """Base of every error a client may see."""

    http_status = 400
    code = 40000
    message = "bad request"

    def __init__(self, message: str | None = None, *, data: Any = None, code: int | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.data = data
        if code is not None:
            self.code = code


class BadRequestError(AppError):
    http_status, code, message = 400, 40000, "bad request"


class InvalidJSONError(AppError):
    http_status, code, message = 400, 40001, "request body must be a JSON object"


class UnauthorizedError(AppError):
    http_status, code, message = 401, 40100, "authentication required"


class InvalidTokenError(UnauthorizedError):
    code, message = 40101, "invalid or expired token"


class ForbiddenError(AppError):
    http_status, code, message = 403, 40300, "forbidden"


class NotFoundError(AppError):
    http_status, code, message = 404, 40400, "not found"


class MethodNotAllowedError(AppError):
    http_status, code, message = 405, 40500, "method not allowed"


class ConflictError(AppError):
    http_status, code, message = 409, 40900, "conflict"


class PayloadTooLargeError(AppError):
    http_status, code, message = 413, 41300, "request body too large"


class UnsupportedMediaTypeError(AppError):
    http_status, code, message = 415, 41500, "unsupported media type"


class ValidationError(AppError):
    """Always carries ``data.errors``, so clients handle every 422 of this code one way."""

    http_status, code, message = 422, 42200, "validation failed"

    def __init__(self, message: str | None = None, *, data: Any = None, code: int | None = None) -> None:
        if data is None:
            data = {"errors": [{"field": "body", "error": message or self.message}]}
        super().__init__(message, data=data, code=code)


class RateLimitedError(AppError):
    http_status, code, message = 429, 42900, "too many requests"


class InternalError(AppError):
    http_status, code, message = 500, 50000, "internal error"


class UpstreamError(AppError):
    """WeChat (or the sandbox) failed or could not be reached."""

    http_status, code, message = 502, 50200, "WeChat is unavailable, try again"


_HTTP_ERRORS: dict[int, type[AppError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: ValidationError,
    429: RateLimitedError,
}


def envelope(data: Any = None, *, code: int = 0, message: str = "ok", status: int = 200) -> Response:
    """The one response shape of the JSON API."""
    response = jsonify({"code": code, "message": message, "data": data})
    response.status_code = status
    return response


def render(error: AppError) -> Response:
    return envelope(error.data, code=error.code, message=error.message, status=error.http_status)


def init_app(app: Flask) -> None:
    """Render every error, ours or Werkzeug's, as the envelope; nothing escapes as HTML."""

    @app.errorhandler(AppError)
    def _app_error(error: AppError) -> Response:
        return render(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        cls = _HTTP_ERRORS.get(error.code or 500, InternalError)
        response = render(cls())
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        current_app.logger.exception("unhandled error")
        return render(InternalError())
