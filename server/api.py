"""Request parsing shared by every blueprint: JSON bodies, query strings, client address."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, TypeVar

from flask import current_app, request
from flask.json.provider import DefaultJSONProvider
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetCoreSchemaHandler, StrictStr, StringConstraints, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import core_schema

from server.errors import InvalidJSONError, ValidationError

M = TypeVar("M", bound=BaseModel)

#: The largest integer a BIGINT (and SQLite's INTEGER) column holds.
MAX_INT = 2**63 - 1
#: Arrays and objects nested deeper than this in a request body make it bad JSON. No body of the API
#: comes near it, and it stays far below Python's recursion limit, which encoding the value again
#: (into a JSON column, into a response) would otherwise meet.
MAX_JSON_DEPTH = 32


def _json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value``, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, where a body nested too deeply is a ``ValueError`` like any other bad JSON.

    ``request.get_json`` turns a ``ValueError`` into bad JSON (or ``None`` when silent); Python's
    parser raises ``RecursionError`` instead when the nesting exhausts the stack.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if _json_depth(value) > MAX_JSON_DEPTH:
            raise ValueError("JSON nested too deeply")
        return value


def _fits_bigint(value: Any) -> Any:
    """Any integer a client sends must fit the database, or it would fail there instead of here."""
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
        raise ValueError(f"must be between {-MAX_INT} and {MAX_INT}")
    return value


def _as_utc(value: datetime) -> datetime:
    """A client's datetime as aware UTC; naive means UTC. Refuses instants UTC cannot represent."""
    try:
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("date out of range") from None


#: A datetime field of a body or query, normalised to aware UTC.
Instant = Annotated[datetime, AfterValidator(_as_utc)]

#: What a TEXT column holds on MySQL and MariaDB: bytes, not characters (a VARCHAR(n) holds n characters).
TEXT_BYTES = 65_535


@dataclass(frozen=True)
class Utf8Bytes:
    """A string's limit in UTF-8 bytes, for text stored in a column that counts bytes: ``Annotated[str, Utf8Bytes(TEXT_BYTES)]``."""

    max_bytes: int

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: str) -> str:
        if len(value.encode("utf-8", "surrogatepass")) > self.max_bytes:
            raise ValueError(f"must be at most {self.max_bytes} bytes in UTF-8")
        return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


#: Required text: at least one character that is not whitespace, as ``str.strip`` (and Python's regex ``\s``) sees it,
#: so "\f" or "\x1c" alone is refused like "". Give the length with it: ``Annotated[NonBlank, StringConstraints(max_length=32)]``.
NonBlank = Annotated[str, AfterValidator(_not_blank)]
#: The spec's ``pattern`` for a NonBlank field. The whitespace ``str.strip`` removes is spelled out because regex engines
#: disagree on ``\S``: Python's excludes U+001C-U+001F and U+0085, ECMA 262's (jsonschema-rs) excludes U+FEFF instead.
NON_BLANK_PATTERN = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"

def iso(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 in a response (aware UTC from the database), or None."""
    return value.isoformat() if value else None


#: Long free text (descriptions) for a TEXT column: 20,000 characters, and no more bytes than the column holds.
LongText = Annotated[StrictStr, StringConstraints(max_length=20_000), Utf8Bytes(TEXT_BYTES)]


class Body(BaseModel):
    """Base of request bodies: unknown fields are refused, strings are not coerced to numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _integral_numbers(cls, value: Any) -> Any:
        """JSON has one number type: ``2.0`` is the integer 2 (as JSON Schema says), never a string's "2"; in a
        list of numbers too."""
        if isinstance(value, list):
            return [int(item) if isinstance(item, float) and item.is_integer() else item for item in value]
        return int(value) if isinstance(value, float) and value.is_integer() else value

    @field_validator("*", mode="after")
    @classmethod
    def _integers_fit(cls, value: Any) -> Any:
        return _fits_bigint(value)


class Query(BaseModel):
    """Base of query strings: values arrive as text, so numbers are coerced."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _integers_fit(cls, value: Any) -> Any:
        return _fits_bigint(value)


def _validation_details(error: PydanticValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in item["loc"]) or "body", "error": item["msg"]}
        for item in error.errors(include_url=False, include_context=False, include_input=False)
    ]


def parse_body(model: type[M]) -> M:
    """The JSON object body validated against ``model``: 400 if it is not JSON, 422 if it is wrong."""
    payload = request.get_json(silent=True, force=True)
    if not isinstance(payload, dict):
        raise InvalidJSONError()
    return validate(model, payload)


def parse_query(model: type[M]) -> M:
    return validate(model, request.args.to_dict())


def validate(model: type[M], payload: dict[str, Any]) -> M:
    try:
        return model.model_validate(payload)
    except PydanticValidationError as error:
        raise ValidationError(data={"errors": _validation_details(error)}) from None


def client_address() -> str:
    """The caller's address; X-Forwarded-For is trusted only for the configured proxy hops."""
    return forwarded_client(request.remote_addr, request.headers.get("X-Forwarded-For"), current_app.config["TRUSTED_PROXIES"])


def forwarded_client(remote_addr: str | None, forwarded_for: str | None, hops: int) -> str:
    """The client's address from the connection's peer and ``X-Forwarded-For``, trusting ``hops`` proxies."""
    if hops:
        forwarded = [p.strip() for p in (forwarded_for or "").split(",") if p.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return remote_addr or "unknown"


class Page(Query):
    """Pagination for list endpoints."""

    page: int = Field(1, ge=1, le=100_000)
    page_size: int = Field(20, ge=1, le=100)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size
