"""Log lines: JSON (one object per line) or text, both carrying the request id and no full phone number.

``LOG_FORMAT=json`` (production's default) writes ``{"time", "level", "logger", "message", "request_id", …}``
per line, with the fields a record carries as ``extra`` (the access line's ``method``, ``route``,
``status``, ``duration_ms``) and the traceback as ``exc``. ``text`` (development's default) writes
the same in one readable line. The request id is the one ``server.metrics`` takes from
``X-Request-Id`` or makes for each request; it lives in a context variable, so every line a request
logs carries it, in any thread.

Every string that reaches a line has its 11-digit mainland mobile numbers masked (138****8000);
WeChat URLs are stripped of their secrets where they are logged (server/wechat/client.py).
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
from typing import Any

#: The request being served, for every line logged while it is.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

#: What a request id from a client or proxy may look like (nginx's $request_id is 32 hex digits, a UUID
#: has dashes); anything else is replaced, so a header cannot write arbitrary text into every line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,63}")

#: A mainland mobile number: 11 digits starting 13–19, not part of a longer number, optionally right after 86.
_MOBILE = re.compile(r"(?<![0-9])((?:86)?1[3-9][0-9])[0-9]{4}([0-9]{4})(?![0-9])")
#: Eleven digits in a row: only a string with them can hold a mobile number (a search three times as fast).
_ELEVEN_DIGITS = re.compile(r"[0-9]{11}")

#: Attributes every LogRecord has; anything else on a record came in through ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def valid_request_id(value: str | None) -> str | None:
    """``value`` if it is a well-formed request id, else None."""
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    """A fresh request id: 32 hex digits, like nginx's."""
    return os.urandom(16).hex()


def mask_mobiles(text: str) -> str:
    """``text`` with the middle four digits of every mainland mobile number starred: 13812345678 → 138****5678."""
    if len(text) < 11 or not _ELEVEN_DIGITS.search(text):
        return text
    return _MOBILE.sub(r"\1****\2", text)


def _masked(value: Any) -> Any:
    return mask_mobiles(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the record's extras become fields of their own."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs,
            "level": record.levelname,
            "logger": record.name,
            "message": mask_mobiles(record.getMessage()),
        }
        rid = request_id.get()
        if rid is not None:
            line["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in line:
                line[key] = _masked(value)
        if record.exc_info:
            line["exc"] = mask_mobiles(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = mask_mobiles(record.exc_text)
        if record.stack_info:
            line["stack"] = mask_mobiles(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger [request id]: message``, masked the same way as the JSON lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = request_id.get()
        setattr(record, "rid", f" [{rid}]" if rid is not None else "")
        try:
            return mask_mobiles(super().format(record))
        finally:
            delattr(record, "rid")


class _OurHandler(logging.StreamHandler):
    """The handler ``configure`` installs, so a second call replaces it rather than adding another."""


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``LOG_FORMAT``."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(level: str, log_format: str, stream: Any = None) -> None:
    """Send the root logger's records to stderr (or ``stream``) in ``log_format`` at ``level``.

    Leaves a root logger that something else configured alone, as ``logging.basicConfig`` does.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _OurHandler)]
    if len(ours) != len(root.handlers):
        return
    for handler in ours:
        root.removeHandler(handler)
    handler = _OurHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin at import
    # The development server's own access lines repeat the app's (server.access).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
