"""Facts of WeChat's wire formats that more than one module checks."""
import re
import unicodedata

#: Characters WeChat allows in a mini-program code's ``scene`` (wxacode.getUnlimited).
SCENE_CHARSET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#$&'()*+,/:;=?@-._~"
SCENE_MAX_LENGTH = 32
SCENE_RE = re.compile(r"^[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]{1,32}$")

# -- subscribe-message values -----------------------------------------------------------------
#
# A keyword of a subscribe-message (and new-style template-message) template is named by its
# type and a number: ``thing1``, ``amount12``. Each type takes values of one shape, WeChat's
# "参数类型" table; a value outside it is refused with 47003 naming the field.

#: The keyword types and the most characters each holds.
KEYWORD_LIMITS = {
    "thing": 20,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "character_string": 32,
    "time": 64,
    "date": 64,
    "amount": 16,
    "phone_number": 17,
    "car_number": 8,
    "name": 20,
    "phrase": 5,
}
#: ``thing1``, ``character_string12``: the type, then the keyword's number.
KEYWORD_RE = re.compile(r"(%s)([1-9][0-9]{0,2})" % "|".join(sorted(KEYWORD_LIMITS, key=len, reverse=True)))
#: Characters ``symbol``, ``character_string`` and ``phone_number`` count as symbols: printable ASCII punctuation.
ASCII_SYMBOLS = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CLOCK = r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?"
_DAY = r"(?:\d{4}年\d{1,2}月\d{1,2}日|\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2})"
_DATE_POINT = rf"{_DAY}(?: {_CLOCK})?"
_TIME_POINT = rf"(?:{_DAY} )?{_CLOCK}"
_SHAPES = {
    "number": re.compile(r"\d+(?:\.\d+)?"),
    "letter": re.compile(r"[A-Za-z]+"),
    "character_string": re.compile(r"[\x21-\x7e]+"),
    "time": re.compile(rf"{_TIME_POINT}(?: ?~ ?{_TIME_POINT})?"),
    "date": re.compile(rf"{_DATE_POINT}(?: ?~ ?{_DATE_POINT})?"),
    "amount": re.compile(r"[¥￥$€£]?\d{1,10}(?:\.\d{1,2})?元?"),
    "phone_number": re.compile(r"[\d+\-() ]+"),
    "car_number": re.compile(rf"[{_CJK}A-Za-z0-9·]+"),
    "phrase": re.compile(rf"[{_CJK}]+"),
}
_CHINESE_NAME = re.compile(rf"[{_CJK}·]+")
_LATIN_NAME = re.compile(r"[A-Za-z .'\-]+")


def unprintable(char: str) -> bool:
    """Whether ``char`` cannot stand in a message: a control character, a line or paragraph separator, a lone surrogate."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs")


def keyword_type(keyword: str) -> str | None:
    """The value type of a template keyword (``"thing"`` for ``thing3``); None if it names no type."""
    match = KEYWORD_RE.fullmatch(keyword)
    return match.group(1) if match else None


def value_problem(kind: str, value: str) -> str | None:
    """Why WeChat refuses ``value`` for a keyword of type ``kind``: ``"is empty"``, ``"invalid"``; None if it takes it."""
    if value == "" or value.isspace():
        return "is empty"
    if len(value) > KEYWORD_LIMITS[kind]:
        return "invalid"
    if kind == "symbol":
        return None if all(c in ASCII_SYMBOLS for c in value) else "invalid"
    if kind == "thing":
        return None if not any(unprintable(c) for c in value) else "invalid"
    if kind == "name":
        if _CHINESE_NAME.fullmatch(value):
            return None if len(value) <= 10 else "invalid"
        return None if _LATIN_NAME.fullmatch(value) else "invalid"
    if kind == "amount" and len(re.sub(r"\D", "", value.split(".")[0])) > 10:
        return "invalid"
    return None if _SHAPES[kind].fullmatch(value) else "invalid"
