"""What a message says: each event's sources, the merchant's mapping of template keywords to them
(one setting per event), and each value fitted to its keyword's type.

A mapping is one line: the template id, then ``keyword=source`` pairs, then optionally
``page=<mini-program page>``, e.g. ``Xy12… thing1=product number2=points date3=time page=pages/points/index``;
``off`` switches the event off. A keyword's type is in its name (``thing1`` takes text up to 20
characters, ``phrase3`` up to 5 Chinese characters), and a source fits only the types that can hold it.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

from server.clock import local
from server.notifications.models import NotifyEvent
from server.wechat.formats import ASCII_SYMBOLS, KEYWORD_LIMITS, keyword_type, unprintable, value_problem

#: A source's kind: what its values look like.
TEXT, NUMBER, AMOUNT, TIME, CODE, PHRASE, NAME = "text", "number", "amount", "time", "code", "phrase", "name"

#: Which source kinds each keyword type can hold (``thing`` holds anything, cut to fit).
ACCEPTS: dict[str, frozenset[str]] = {
    "thing": frozenset({TEXT, NUMBER, AMOUNT, TIME, CODE, PHRASE, NAME}),
    "number": frozenset({NUMBER}),
    "amount": frozenset({AMOUNT}),
    "time": frozenset({TIME}),
    "date": frozenset({TIME}),
    "character_string": frozenset({CODE, NUMBER}),
    "phrase": frozenset({PHRASE}),
    "name": frozenset({NAME}),
    "letter": frozenset(),
    "symbol": frozenset(),
    "phone_number": frozenset(),
    "car_number": frozenset(),
}

#: Each event's sources and their kinds.
SOURCES: dict[NotifyEvent, dict[str, str]] = {
    NotifyEvent.points_pending: {
        "points": NUMBER, "order_no": CODE, "product": TEXT, "level": PHRASE, "status": PHRASE, "note": TEXT, "time": TIME,
    },
    NotifyEvent.points_available: {
        "points": NUMBER, "balance": NUMBER, "period": TEXT, "status": PHRASE, "note": TEXT, "time": TIME,
    },
    NotifyEvent.order_shipped: {
        "order_no": CODE, "product": TEXT, "amount": AMOUNT, "status": PHRASE, "time": TIME,
    },
    NotifyEvent.refund_result: {
        "order_no": CODE, "product": TEXT, "amount": AMOUNT, "result": PHRASE, "reason": TEXT, "time": TIME,
    },
    NotifyEvent.distributor_decided: {
        "result": PHRASE, "reason": TEXT, "name": NAME, "tier": TEXT, "time": TIME,
    },
    NotifyEvent.lead_valid: {
        "points": NUMBER, "lead": TEXT, "status": PHRASE, "time": TIME,
    },
    NotifyEvent.redemption_fulfilled: {
        "item": TEXT, "points": NUMBER, "quantity": NUMBER, "status": PHRASE, "note": TEXT, "time": TIME,
    },
}

#: The merchant's template ids: WeChat's are 43 characters of these.
TEMPLATE_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
#: A mini-program page, optionally with a query (``pages/points/index?tab=pending``).
PAGE_RE = re.compile(r"[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*(?:\?[A-Za-z0-9_\-=&%.]*)?")
#: A mapping's most keywords: WeChat's templates have at most five.
MAX_KEYWORDS = 5
OFF = "off"


@dataclass(frozen=True)
class KeywordMap:
    """A parsed mapping: which template, which source fills each keyword, which page opens."""

    template_id: str
    keywords: tuple[tuple[str, str], ...]
    page: str


def parse_mapping(event: NotifyEvent, text: str) -> KeywordMap | None:
    """The mapping ``text`` states for ``event``; None for ``off``. ValueError says what is wrong."""
    tokens = text.split()
    if tokens == [OFF]:
        return None
    if not tokens:
        raise ValueError("expected off, or a template id followed by keyword=source pairs")
    template_id, rest = tokens[0], tokens[1:]
    if not TEMPLATE_ID_RE.fullmatch(template_id):
        raise ValueError(f"{template_id[:70]!r} is not a template id (1-64 letters, digits, _ or -)")
    sources = SOURCES[event]
    keywords: list[tuple[str, str]] = []
    page = ""
    for token in rest:
        keyword, sep, source = token.partition("=")
        if not sep:
            raise ValueError(f"{token[:70]!r} is not keyword=source")
        if keyword == "page":
            if page or not PAGE_RE.fullmatch(source.removeprefix("/")):
                raise ValueError(f"{source[:70]!r} is not a mini-program page")
            page = source.removeprefix("/")
            continue
        kind = keyword_type(keyword)
        if kind is None:
            raise ValueError(f"{keyword[:70]!r} is not a template keyword (thing1, number2, amount3, …)")
        if keyword in dict(keywords):
            raise ValueError(f"{keyword} is given twice")
        if source not in sources:
            raise ValueError(f"{source[:70]!r} is not a source of this event ({', '.join(sources)})")
        if sources[source] not in ACCEPTS[kind]:
            raise ValueError(f"{keyword} ({kind}) cannot hold {source} ({sources[source]})")
        keywords.append((keyword, source))
    if not keywords:
        raise ValueError("map at least one keyword to a source")
    if len(keywords) > MAX_KEYWORDS:
        raise ValueError(f"at most {MAX_KEYWORDS} keywords")
    return KeywordMap(template_id, tuple(keywords), page)


# -- fitting values to their keyword's type -------------------------------------------------------

#: Characters that belong to the character before them: combining marks, joiners, variation selectors.
_JOINERS = frozenset({"\u200d", "\ufe0e", "\ufe0f"})


def clusters(text: str) -> list[str]:
    """``text`` in user-perceived characters, near enough: a base with its combining marks, emoji
    joined by ZWJ, a flag's two regional indicators. A cut between clusters never splits one."""
    found: list[str] = []
    for char in text:
        joins = bool(found) and (
            unicodedata.category(char) in ("Mn", "Me", "Mc")
            or char in _JOINERS
            or found[-1].endswith("\u200d")
            or (_regional(char) and len(found[-1]) == 1 and _regional(found[-1]))
        )
        if joins:
            found[-1] += char
        else:
            found.append(char)
    return found


def _regional(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def _size(text: str) -> int:
    """Characters as WeChat's limits may count them: UTF-16 units, so a character beyond the BMP counts twice."""
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


def cut(text: str, limit: int, mark: str = "") -> str:
    """``text`` within ``limit`` characters, cut between characters; ``mark`` ends a text that was cut."""
    if _size(text) <= limit:
        return text
    room = limit - _size(mark)
    kept: list[str] = []
    used = 0
    for cluster in clusters(text):
        if used + _size(cluster) > room:
            break
        kept.append(cluster)
        used += _size(cluster)
    return "".join(kept).rstrip() + mark


def _keep(text: str, allowed: re.Pattern[str]) -> str:
    return "".join(allowed.findall(text))


_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NAME_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff·]")
_LATIN = re.compile(r"[A-Za-z .'\-]")
_LETTER = re.compile(r"[A-Za-z]")
_ASCII = re.compile(r"[\x21-\x7e]")
_PHONE = re.compile(r"[\d+\-() ]")


def fit_value(kind: str, value: str) -> str | None:
    """``value`` as a keyword of type ``kind`` takes it: cleaned of characters the type refuses and cut to its
    length; None when nothing valid is left (a number or amount is never cut, which would change it)."""
    limit = KEYWORD_LIMITS[kind]
    if kind == "thing":
        fitted = cut(" ".join("".join(" " if unprintable(c) else c for c in value).split()), limit, "…")
    elif kind == "phrase":
        fitted = cut(_keep(value, _CJK_CHAR), limit)
    elif kind == "name":
        if _CJK_CHAR.search(value):
            fitted = cut(_keep(value, _NAME_CJK), 10)
        else:
            fitted = cut(" ".join(_keep(value, _LATIN).split()), limit)
    elif kind == "symbol":
        fitted = cut("".join(c for c in value if c in ASCII_SYMBOLS), limit)
    elif kind == "letter":
        fitted = cut(_keep(value, _LETTER), limit)
    elif kind == "character_string":
        fitted = cut(_keep(value, _ASCII), limit)
    elif kind == "phone_number":
        fitted = _keep(value, _PHONE).strip()
    else:
        fitted = value.strip()
    if value_problem(kind, fitted) is not None:
        return None
    return fitted


@dataclass(frozen=True)
class Rendered:
    """A message's values, or why it cannot be made."""

    data: dict[str, str]
    problem: str | None = None


def render(mapping: KeywordMap, values: Mapping[str, str]) -> Rendered:
    """The keyword values of ``mapping`` filled from ``values`` (the event's sources, as text)."""
    data: dict[str, str] = {}
    for keyword, source in mapping.keywords:
        kind = keyword_type(keyword)
        assert kind is not None  # parse_mapping let only typed keywords through
        fitted = fit_value(kind, values.get(source, ""))
        if fitted is None:
            return Rendered(data, f"{keyword}: {source} {values.get(source, '')[:40]!r} does not fit a {kind}")
        data[keyword] = fitted
    return Rendered(data)


# -- the sources' text ------------------------------------------------------------------------------


def points_value(hundredths: int) -> str:
    """Points as a ``number``: ``12.5``, ``100``; never negative."""
    whole, cents = divmod(abs(hundredths), 100)
    return f"{whole}" if cents == 0 else f"{whole}.{cents:02d}".rstrip("0")


def amount_value(fen: int) -> str:
    """Money as an ``amount``: ``¥123.45``."""
    whole, cents = divmod(abs(fen), 100)
    return f"¥{whole}.{cents:02d}"


def time_value(moment: datetime) -> str:
    """An instant as a ``date`` or ``time`` in China time: ``2026年12月2日 08:47``."""
    at = local(moment)
    return f"{at.year}年{at.month}月{at.day}日 {at:%H:%M}"
