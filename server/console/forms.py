"""Console forms checked with the admin API's own request models, so a field's limits are written once.

A form's strings become the JSON types the model expects (whole numbers, booleans); whatever the model
refuses comes back as a Chinese message per field, from the page's ``hints``.
"""
from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from server.api import validate
from server.errors import AppError

M = TypeVar("M", bound=BaseModel)

#: Longest text a console form field is read to; the models refuse what is longer than their own limit.
FIELD_LIMIT = 20_000


def whole_number(value: str) -> int | str:
    """A form's digits as a number (with a leading minus); anything else stays text, which the model refuses."""
    text = value.strip()
    digits = text[1:] if text.startswith("-") else text
    return int(text) if digits.isdigit() and len(digits) <= 18 else text


def checked(model: type[M], payload: dict[str, Any], hints: dict[str, str]) -> tuple[M | None, dict[str, str]]:
    """``payload`` validated by ``model``: (the body, {}) or (None, field → Chinese message)."""
    try:
        return validate(model, payload), {}
    except AppError as error:
        return None, problems(error, hints)


def problems(error: AppError, hints: dict[str, str]) -> dict[str, str]:
    """A service's or model's field errors in Chinese: the field's hint, else a general message."""
    data = error.data if isinstance(error.data, dict) else {}
    found: dict[str, str] = {}
    for item in data.get("errors", []):
        if isinstance(item, dict):
            field = str(item.get("field", "")).split(".")[0]
            found[field] = hints.get(field, hints.get("", "输入有误，请检查后重试。"))
    return found
