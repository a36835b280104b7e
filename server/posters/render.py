"""Drawing a poster: a template's design, a member and a code in, a PNG out.

Pure Pillow, no database and no Flask, so the API, the console preview and the
benchmark all draw the same picture. Text is set in the font shipped beside this
module; system fonts are never consulted, so a fresh machine draws Chinese the same.
"""
from __future__ import annotations

import functools
import io
import json
import re
import struct
import threading
import unicodedata
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import qrcode
import qrcode.constants
from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps

FONT_PATH = Path(__file__).resolve().parent / "fonts" / "wqy-microhei.ttc"

#: The canvas DEFAULT_LAYOUT is drawn for; other template sizes get it scaled.
DESIGN_WIDTH, DESIGN_HEIGHT = 750, 1334

MINIPROGRAM_CAPTION = "长按识别小程序码"
QR_CAPTION = "长按识别二维码"
#: Shown when a nickname has nothing the font can draw (e.g. only emoji).
FALLBACK_NAME = "好友"
INVITE_SUFFIX = " 邀请你"

COLOR_RE = re.compile(r"#[0-9A-Fa-f]{6}")
#: Uploaded images larger than this are refused before decoding (decompression bombs).
MAX_SOURCE_PIXELS = 4096 * 4096
#: Blank modules around a QR code drawn here: the quiet zone scanners need.
QR_QUIET_MODULES = 4
#: PNG encoding was most of a render (Pillow's adaptive row filters, then zlib). Posters are written
#: here instead: rows unfiltered, compressed at zlib level 1 in bands of PNG_BAND_ROWS rows, each band
#: a deflate run of its own, so a band whose pixels equal the same band of the design's previous
#: poster (everything but the member's name, avatar and code, mostly) is reused as it was compressed.
#: The files come out about the size of Pillow's level 1 (73 KiB for the built-in design).
PNG_COMPRESS_LEVEL = 1
PNG_BAND_ROWS = 16
#: Designs (a template's canvas, background and own elements, drawn) kept in this process.
DESIGN_CACHE_SIZE = 8

#: Where each element goes on the 750×1334 design canvas, and how it looks.
#:
#: - ``header``: a coloured band across the top; ``card``: the white panel holding the rest.
#: - Text boxes (``headline``, ``body`` from the template; ``title``, ``subtitle`` from the
#:   content; ``nickname``: "<nickname> 邀请你"; ``caption`` under the code): ``x, y, w, h``
#:   the box, ``size`` the font size in px, ``max_lines`` (also limited by ``h``), ``align``
#:   ``left`` or ``center``, ``bold``. Text wraps to ``w``; CJK may break between any two
#:   characters, Latin words only at spaces; overflow ends in "…".
#: - ``avatar`` (a circle) and ``code`` (the mini-program code or QR code): ``x, y`` and ``size``.
#: - Every element takes ``show: false`` to leave it out (e.g. over a background that has its own art).
#:
#: A template's ``layout`` overrides any of these per element and field, in pixels of its own
#: canvas; colours are ``#RRGGBB``.
DEFAULT_LAYOUT: dict[str, dict[str, Any]] = {
    "header": {"x": 0, "y": 0, "w": 750, "h": 560, "color": "#E8483B"},
    "headline": {"x": 60, "y": 96, "w": 630, "h": 170,
                 "size": 60, "color": "#FFFFFF", "max_lines": 2, "align": "left", "bold": True},
    "body": {"x": 60, "y": 272, "w": 630, "h": 130,
             "size": 30, "color": "#FFE4E0", "max_lines": 3, "align": "left", "bold": False},
    "card": {"x": 40, "y": 440, "w": 670, "h": 854, "color": "#FFFFFF", "radius": 24},
    "avatar": {"x": 80, "y": 480, "size": 100},
    "nickname": {"x": 204, "y": 510, "w": 466, "h": 48,
                 "size": 32, "color": "#333333", "max_lines": 1, "align": "left", "bold": False},
    "title": {"x": 80, "y": 620, "w": 590, "h": 120,
              "size": 40, "color": "#222222", "max_lines": 2, "align": "left", "bold": True},
    "subtitle": {"x": 80, "y": 748, "w": 590, "h": 84,
                 "size": 28, "color": "#888888", "max_lines": 2, "align": "left", "bold": False},
    "code": {"x": 225, "y": 860, "size": 300},
    "caption": {"x": 80, "y": 1190, "w": 590, "h": 44,
                "size": 26, "color": "#999999", "max_lines": 1, "align": "center", "bold": False},
}
#: Drawn in this order, so later elements sit on top.
DRAW_ORDER = ("header", "headline", "body", "card", "avatar", "nickname", "title", "subtitle", "code", "caption")
#: The leading elements that show only the template: drawn once per design and copied for each poster.
TEMPLATE_ELEMENTS = DRAW_ORDER[:4]
#: What shows the content (the same on every poster of a design and content), and what shows the member.
CONTENT_ELEMENTS = ("title", "subtitle", "caption")
MEMBER_ELEMENTS = ("avatar", "nickname", "code")
#: Contents whose drawn text a design keeps.
CONTENT_CACHE_SIZE = 8

_INT_FIELDS = frozenset({"x", "y", "w", "h", "size", "max_lines", "radius"})
_BOOL_FIELDS = frozenset({"bold", "show"})
_ALIGNS = ("left", "center")
#: Bounds of the scalar fields; positions and boxes are bounded by the canvas.
_FIELD_RANGES = {"max_lines": (1, 20), "radius": (0, 500)}
_TEXT_SIZE_RANGE = (10, 200)
_SQUARE_MIN = {"avatar": 16, "code": 64}

#: Avatar backgrounds for members without a picture, chosen by nickname so each keeps theirs.
_AVATAR_COLORS = ("#F28C38", "#4A90E2", "#50B86C", "#9B6BD3", "#E5533D", "#1FA6A0", "#D6A21E", "#6C7A89")
#: Characters that may not begin a line (closing punctuation) or end one (opening punctuation).
_NO_LINE_START = frozenset("，。、；：？！）》」』】〉〕”’…·%,.;:?!)]}")
_NO_LINE_END = frozenset("（《「『【〈〔“‘([{")
#: A code point the font has no glyph for: it draws as the .notdef box.
_MISSING_CODEPOINT = "\U000f0000"
_ELLIPSIS = "…"


class LayoutError(ValueError):
    """A template layout that cannot be drawn; ``errors`` lists ``{"field", "error"}``."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['error']}" for e in errors))
        self.errors = errors


class CodeImageError(ValueError):
    """The code image (from WeChat) is not an image."""


@dataclass(frozen=True)
class PosterSpec:
    """Everything one poster shows. Exactly one of ``code_png`` and ``qr_data`` is given."""

    #: The mini-program code as WeChat drew it.
    code_png: bytes | None = None
    #: Or the text of a QR code to draw here (the H5 link).
    qr_data: str | None = None
    width: int = DESIGN_WIDTH
    height: int = DESIGN_HEIGHT
    background_color: str = "#F6F6F6"
    #: PNG or JPEG drawn over the colour, scaled to cover the canvas.
    background_image: bytes | None = None
    headline: str = ""
    body_text: str = ""
    title: str = ""
    subtitle: str = ""
    nickname: str = ""
    #: The member's picture; None (or anything undecodable) draws a circle with their initial.
    avatar: bytes | None = None
    #: Defaults to the caption matching the kind of code.
    caption: str | None = None
    #: The template's overrides of DEFAULT_LAYOUT.
    layout: Mapping[str, Any] = field(default_factory=dict)


# -- fonts and glyphs ------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    """The poster font at ``size`` px, loaded once per size.

    Basic layout, not Raqm: it needs no system libraries, so every machine sets text alike.
    """
    return ImageFont.truetype(str(FONT_PATH), size, index=0, layout_engine=ImageFont.Layout.BASIC)


def glyph_mask(char: str, size: int = 32) -> bytes:
    """The pixels of ``char`` drawn alone; equal to ``glyph_mask(<missing>)`` when the font lacks it."""
    image = Image.new("L", (size * 2, size * 2))
    ImageDraw.Draw(image).text((size // 2, size // 2), char, font=font(size), fill=255)
    return image.tobytes()


@functools.lru_cache(maxsize=1)
def _notdef_mask() -> bytes:
    return glyph_mask(_MISSING_CODEPOINT)


@functools.lru_cache(maxsize=8192)
def has_glyph(char: str) -> bool:
    """Whether the bundled font draws ``char`` (rather than its .notdef box)."""
    if char.isspace():
        return True
    return glyph_mask(char) != _notdef_mask()


def drawable(text: str, *, multiline: bool = False) -> str:
    """``text`` without what would draw as boxes (emoji, joiners, control characters).

    Runs of spaces become one; line breaks are kept when ``multiline``, else become spaces.
    """
    lines = []
    for line in text.splitlines():
        kept = "".join(c for c in line if c.isspace() or (unicodedata.category(c)[0] != "C" and has_glyph(c)))
        lines.append(re.sub(r"\s+", " ", kept).strip())
    return ("\n" if multiline else " ").join(line for line in lines if line)


# -- layout ----------------------------------------------------------------------------


def _scaled_defaults(width: int, height: int) -> dict[str, dict[str, Any]]:
    if (width, height) == (DESIGN_WIDTH, DESIGN_HEIGHT):
        return {name: dict(spec) for name, spec in DEFAULT_LAYOUT.items()}
    sx, sy = width / DESIGN_WIDTH, height / DESIGN_HEIGHT
    scale = min(sx, sy)
    scaled: dict[str, dict[str, Any]] = {}
    for name, spec in DEFAULT_LAYOUT.items():
        out = dict(spec)
        for key, factor in (("x", sx), ("w", sx), ("y", sy), ("h", sy), ("size", scale), ("radius", scale)):
            if key in out:
                out[key] = int(out[key] * factor)
        if "size" in out and "w" not in out:
            # A square keeps its centre where the design had it.
            cx, cy = (spec["x"] + spec["size"] / 2) * sx, (spec["y"] + spec["size"] / 2) * sy
            out["x"], out["y"] = max(0, int(cx - out["size"] / 2)), max(0, int(cy - out["size"] / 2))
        scaled[name] = out
    return scaled


def _check_field(name: str, key: str, value: Any, default: Any) -> str | None:
    if key in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
    elif key in _BOOL_FIELDS:
        if not isinstance(value, bool):
            return "must be true or false"
    elif key == "color":
        if not isinstance(value, str) or not COLOR_RE.fullmatch(value):
            return "must be a colour like #E8483B"
    elif key == "align":
        if value not in _ALIGNS:
            return f"must be one of {', '.join(_ALIGNS)}"
    elif not isinstance(value, type(default)):
        return "has the wrong type"
    return None


def _check_bounds(name: str, spec: dict[str, Any], width: int, height: int) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []

    def err(key: str, message: str) -> None:
        errors.append({"field": f"layout.{name}.{key}", "error": message})

    if spec["x"] < 0 or spec["x"] >= width:
        err("x", f"must be within the canvas (0-{width - 1})")
    if spec["y"] < 0 or spec["y"] >= height:
        err("y", f"must be within the canvas (0-{height - 1})")
    if "w" in spec:
        if spec["w"] < 1 or spec["x"] + spec["w"] > width:
            err("w", f"x + w must be at most the canvas width {width}")
        if spec["h"] < 1 or spec["y"] + spec["h"] > height:
            err("h", f"y + h must be at most the canvas height {height}")
    else:
        low = _SQUARE_MIN[name]
        if spec["size"] < low or spec["x"] + spec["size"] > width or spec["y"] + spec["size"] > height:
            err("size", f"must be at least {low} and keep the element within the canvas")
    if "max_lines" in spec:
        low, high = _TEXT_SIZE_RANGE
        if not low <= spec["size"] <= high:
            err("size", f"must be between {low} and {high}")
    if "radius" in spec and spec["radius"] > min(spec["w"], spec["h"]) // 2:
        err("radius", "must be at most half the box's width and height")
    for key, (low, high) in _FIELD_RANGES.items():
        if key in spec and not low <= spec[key] <= high:
            err(key, f"must be between {low} and {high}")
    return errors


def resolve_layout(overrides: Mapping[str, Any] | None, width: int, height: int) -> dict[str, dict[str, Any]]:
    """DEFAULT_LAYOUT (scaled to the canvas) with a template's overrides; LayoutError if they are wrong."""
    layout = _scaled_defaults(width, height)
    errors: list[dict[str, str]] = []
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, Mapping):
        raise LayoutError([{"field": "layout", "error": "must be an object of elements"}])
    for name, fields in overrides.items():
        if name not in layout:
            errors.append({"field": f"layout.{name}", "error": f"unknown element; known: {', '.join(DEFAULT_LAYOUT)}"})
            continue
        if not isinstance(fields, Mapping):
            errors.append({"field": f"layout.{name}", "error": "must be an object of fields"})
            continue
        for key, value in fields.items():
            default = DEFAULT_LAYOUT[name].get(key, True if key == "show" else None)
            if default is None:
                known = ", ".join([*DEFAULT_LAYOUT[name], "show"])
                errors.append({"field": f"layout.{name}.{key}", "error": f"unknown field; known: {known}"})
                continue
            problem = _check_field(name, key, value, default)
            if problem:
                errors.append({"field": f"layout.{name}.{key}", "error": problem})
            else:
                layout[name][key] = value
    if not errors:
        for name, spec in layout.items():
            errors.extend(_check_bounds(name, spec, width, height))
    if errors:
        raise LayoutError(errors)
    return layout


# -- text ------------------------------------------------------------------------------


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _tokens(text: str) -> list[str]:
    """Pieces a line may break between: each CJK character, each Latin word, each space."""
    tokens: list[str] = []
    word = ""
    for char in text:
        if char.isspace() or _is_wide(char):
            if word:
                tokens.append(word)
                word = ""
            tokens.append(" " if char.isspace() else char)
        else:
            word += char
    if word:
        tokens.append(word)
    # Keep closing punctuation with what precedes it, opening punctuation with what follows.
    merged: list[str] = []
    carry = ""
    for token in tokens:
        if merged and token[0] in _NO_LINE_START and not carry:
            merged[-1] += token
        elif token[-1] in _NO_LINE_END and len(token) == 1:
            carry += token
        else:
            merged.append(carry + token)
            carry = ""
    if carry:
        merged.append(carry)
    return merged


def _longest_prefix(text: str, face: ImageFont.FreeTypeFont, width: int) -> int:
    """How many leading characters of ``text`` fit in ``width`` (at least one)."""
    low, high = 1, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if face.getlength(text[:mid]) <= width:
            low = mid
        else:
            high = mid - 1
    return low


def wrap_text(text: str, face: ImageFont.FreeTypeFont, width: int, max_lines: int) -> list[str]:
    """``text`` in lines no wider than ``width``; past ``max_lines`` the last line ends in "…"."""
    lines: list[str] = []
    for paragraph in text.splitlines():
        line = ""
        for token in _tokens(paragraph):
            if face.getlength(line + token) <= width:
                line += token
                continue
            if line.strip():
                lines.append(line.rstrip())
            line = token.lstrip()
            while line and face.getlength(line) > width:  # one word wider than the box
                cut = _longest_prefix(line, face, width)
                lines.append(line[:cut])
                line = line[cut:]
        if line.strip():
            lines.append(line.rstrip())
    if len(lines) <= max_lines:
        return lines
    last = lines[max_lines - 1]
    while last and face.getlength(last + _ELLIPSIS) > width:
        last = last[:-1]
    return [*lines[: max_lines - 1], last.rstrip() + _ELLIPSIS]


def _draw_text(draw: ImageDraw.ImageDraw, spec: Mapping[str, Any], text: str) -> None:
    text = drawable(text, multiline=True) if text else ""
    if not text:
        return
    face = font(spec["size"])
    line_height = round(spec["size"] * 1.35)
    # The last line needs no leading below it, only room for descenders.
    fits = 1 + (spec["h"] - round(spec["size"] * 1.2)) // line_height
    max_lines = max(1, min(spec["max_lines"], fits))
    # Pillow's stroke in the fill colour is the usual faux bold: the font has one weight.
    stroke = max(1, spec["size"] // 36) if spec["bold"] else 0
    centered = spec["align"] == "center"
    x = spec["x"] + spec["w"] / 2 if centered else spec["x"]
    for index, line in enumerate(wrap_text(text, face, spec["w"] - 2 * stroke, max_lines)):
        draw.text(
            (x + (0 if centered else stroke), spec["y"] + index * line_height),
            line,
            font=face,
            fill=spec["color"],
            anchor="ma" if centered else "la",
            stroke_width=stroke,
            stroke_fill=spec["color"],
        )


# -- images ----------------------------------------------------------------------------


def _open_checked(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    if image.width * image.height > MAX_SOURCE_PIXELS:
        raise ValueError(f"image of {image.width}x{image.height} pixels is too large")
    return image


def _flatten(image: Image.Image, background: str = "#FFFFFF") -> Image.Image:
    """RGB, with any transparency laid over ``background`` instead of turning black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, background)
        return Image.alpha_composite(base, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, *, max_pixels: int = MAX_SOURCE_PIXELS) -> Image.Image:
    """An uploaded PNG or JPEG, upright and fully decoded; ValueError or OSError if it is not one."""
    image = _open_checked(data)
    if image.format not in ("PNG", "JPEG"):
        raise ValueError(f"{image.format or 'unknown'} images are not accepted")
    if image.width * image.height > max_pixels:
        raise ValueError("image too large")
    image.load()
    return ImageOps.exif_transpose(image)


def reencode(image: Image.Image) -> tuple[bytes, str]:
    """``image`` written anew, as PNG when it has transparency, else as JPEG, and that format's file
    extension: nothing else the uploaded file carried (metadata, trailing data) survives."""
    out = io.BytesIO()
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image.convert("RGBA").save(out, format="PNG")
        return out.getvalue(), "png"
    image.convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue(), "jpg"


@functools.lru_cache(maxsize=4)
def _fitted_background(data: bytes, width: int, height: int) -> Image.Image | None:
    # Keyed on the bytes: a template's background is decoded and scaled once, not per poster.
    try:
        image = decode_image(data)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB"
    return ImageOps.fit(image.convert(mode), (width, height), Image.Resampling.LANCZOS)


@functools.lru_cache(maxsize=16)
def _circle_mask(size: int) -> Image.Image:
    # Drawn at four times the size and reduced, for a smooth edge.
    big = Image.new("L", (size * 4, size * 4), 0)
    ImageDraw.Draw(big).ellipse((0, 0, size * 4 - 1, size * 4 - 1), fill=255)
    return big.resize((size, size), Image.Resampling.LANCZOS)


def _avatar_photo(data: bytes, size: int) -> Image.Image | None:
    try:
        image = _open_checked(data)
        image.draft("RGB", (size, size))  # JPEG decodes straight at a reduced scale
        image = _flatten(ImageOps.exif_transpose(image))
        return ImageOps.fit(image, (size, size), Image.Resampling.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _avatar_initial(name: str, size: int) -> Image.Image:
    color = _AVATAR_COLORS[zlib.crc32(name.encode("utf-8")) % len(_AVATAR_COLORS)]
    image = Image.new("RGB", (size, size), color)
    initial = name[:1].upper()
    face = font(max(8, int(size * 0.46)))
    ImageDraw.Draw(image).text((size / 2, size / 2), initial, font=face, fill="#FFFFFF", anchor="mm")
    return image


def _paste_avatar(canvas: Image.Image, spec: Mapping[str, Any], avatar: bytes | None, name: str) -> None:
    size = spec["size"]
    picture = _avatar_photo(avatar, size) if avatar else None
    if picture is None:
        picture = _avatar_initial(name, size)
    canvas.paste(picture, (spec["x"], spec["y"]), _circle_mask(size))


def qr_image(data: str, size: int) -> Image.Image:
    """A QR code of ``data`` on white, ``size`` px square, every module the same whole number of pixels."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=1, border=QR_QUIET_MODULES)
    qr.add_data(data)
    qr.make(fit=True)
    matrix = qr.get_matrix()
    modules = len(matrix)
    small = Image.new("L", (modules, modules))
    small.putdata([0 if dark else 255 for row in matrix for dark in row])
    box = max(1, size // modules)
    code = small.resize((modules * box, modules * box), Image.Resampling.NEAREST)
    out = Image.new("RGB", (size, size), "#FFFFFF")
    offset = (size - code.width) // 2
    out.paste(code, (offset, offset))
    return out


def _code_image(spec: PosterSpec, size: int) -> Image.Image:
    if spec.code_png is None:
        assert spec.qr_data is not None
        return qr_image(spec.qr_data, size)
    try:
        image = _flatten(_open_checked(spec.code_png))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise CodeImageError(str(error)) from None
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


# -- the poster --------------------------------------------------------------------------


def _shade(color: str, factor: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#%02X%02X%02X" % (int(r * factor), int(g * factor), int(b * factor))


@dataclass(frozen=True)
class _Encoded:
    """A poster as ``_encode`` wrote it: its pixels, and each band of rows compressed with its checksum."""

    pixels: bytes
    bands: tuple[bytes, ...]
    checksums: tuple[int, ...]


@dataclass
class _Design:
    """A template's design drawn once: the canvas with its background and TEMPLATE_ELEMENTS."""

    layout: dict[str, dict[str, Any]]
    base: Image.Image
    #: The last poster encoded with this design, whose bands the next one may reuse.
    last: _Encoded | None = None
    #: Per content (title, subtitle, caption): its drawn text as pieces to paste, or None where a
    #: member's element may touch it (then everything is drawn in DRAW_ORDER).
    content: OrderedDict[tuple[str, str, str], tuple[tuple[tuple[int, int], Image.Image], ...] | None] = field(default_factory=OrderedDict)


_designs: OrderedDict[tuple[Any, ...], _Design] = OrderedDict()
_designs_guard = threading.Lock()


def _design(spec: PosterSpec) -> _Design:
    """The design of ``spec``, drawn on first use and kept (DESIGN_CACHE_SIZE, least recently used out).

    Keyed on what is drawn, not on a template's id, so a changed template is simply another design.
    """
    layout = resolve_layout(spec.layout, spec.width, spec.height)
    key = (spec.width, spec.height, spec.background_color, spec.background_image, spec.headline, spec.body_text,
           json.dumps(layout, sort_keys=True))
    with _designs_guard:
        found = _designs.get(key)
        if found is not None:
            _designs.move_to_end(key)
            return found
    canvas = Image.new("RGB", (spec.width, spec.height), spec.background_color)
    if spec.background_image:
        background = _fitted_background(spec.background_image, spec.width, spec.height)
        if background is not None:
            canvas.paste(background, (0, 0), background if background.mode == "RGBA" else None)
    draw = ImageDraw.Draw(canvas)
    texts = {"headline": spec.headline, "body": spec.body_text}
    for element in TEMPLATE_ELEMENTS:
        _draw_element(canvas, draw, spec, layout[element], element, texts)
    design = _Design(layout=layout, base=canvas)
    with _designs_guard:
        design = _designs.setdefault(key, design)
        _designs.move_to_end(key)
        while len(_designs) > DESIGN_CACHE_SIZE:
            _designs.popitem(last=False)
    return design


def _draw_element(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, spec: PosterSpec, box: Mapping[str, Any], element: str, texts: Mapping[str, str]
) -> None:
    if not box.get("show", True):
        return
    if element == "header":
        draw.rectangle((box["x"], box["y"], box["x"] + box["w"] - 1, box["y"] + box["h"] - 1), fill=box["color"])
    elif element == "card":
        x0, y0, x1, y1 = box["x"], box["y"], box["x"] + box["w"] - 1, box["y"] + box["h"] - 1
        # A hard-edged shadow a shade darker than what lies under the card's lower edge.
        under = canvas.getpixel((min(x1, spec.width - 1), min(y1 + 1, spec.height - 1)))
        assert isinstance(under, tuple)  # an RGB canvas has a tuple per pixel
        shadow = _shade("#%02X%02X%02X" % under[:3], 0.93)
        if min(y1 + 6, spec.height - 1) > y0 + 6:
            draw.rounded_rectangle((x0, y0 + 6, x1, min(y1 + 6, spec.height - 1)), radius=box["radius"], fill=shadow)
        draw.rounded_rectangle((x0, y0, x1, y1), radius=box["radius"], fill=box["color"])
    elif element == "avatar":
        _paste_avatar(canvas, box, spec.avatar, texts["name"])
    elif element == "code":
        canvas.paste(_code_image(spec, box["size"]), (box["x"], box["y"]))
    else:
        _draw_text(draw, box, texts[element])


def _check_spec(spec: PosterSpec) -> None:
    if (spec.code_png is None) == (spec.qr_data is None):
        raise ValueError("give exactly one of code_png and qr_data")
    if not COLOR_RE.fullmatch(spec.background_color):
        raise LayoutError([{"field": "background_color", "error": "must be a colour like #F6F6F6"}])


def _member_area(box: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """Where a member's element may draw: its square, or its text box with a text size of room around."""
    if "w" in box:
        room = box["size"]
        return box["x"] - room, box["y"] - room, box["x"] + box["w"] + room, box["y"] + box["h"] + room
    return box["x"], box["y"], box["x"] + box["size"], box["y"] + box["size"]


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _content_pieces(
    spec: PosterSpec, design: _Design, texts: Mapping[str, str]
) -> tuple[tuple[tuple[int, int], Image.Image], ...] | None:
    """The content's text drawn on the design once, as the pieces of canvas it changed.

    Pasted before the member's elements instead of drawn after some of them: the same pixels, since
    no piece lies where a member's element may draw (else None, and the poster is drawn in order).
    """
    key = (texts["title"], texts["subtitle"], texts["caption"])
    with _designs_guard:
        if key in design.content:
            design.content.move_to_end(key)
            return design.content[key]
    canvas = design.base.copy()
    draw = ImageDraw.Draw(canvas)
    areas = [_member_area(design.layout[m]) for m in MEMBER_ELEMENTS if design.layout[m].get("show", True)]
    boxes: list[tuple[int, int, int, int]] = []
    for element in CONTENT_ELEMENTS:
        before = canvas.copy()
        _draw_element(canvas, draw, spec, design.layout[element], element, texts)
        changed = ImageChops.difference(before, canvas).getbbox()
        if changed is not None:
            boxes.append(changed)
    pieces = None if any(_overlap(box, area) for box in boxes for area in areas) else tuple((box[:2], canvas.crop(box)) for box in boxes)
    with _designs_guard:
        design.content[key] = pieces
        while len(design.content) > CONTENT_CACHE_SIZE:
            design.content.popitem(last=False)
    return pieces


def _draw(spec: PosterSpec, design: _Design) -> Image.Image:
    canvas = design.base.copy()
    draw = ImageDraw.Draw(canvas)
    name = drawable(spec.nickname) or FALLBACK_NAME
    caption = spec.caption if spec.caption is not None else (MINIPROGRAM_CAPTION if spec.code_png else QR_CAPTION)
    texts = {
        "name": name,
        "nickname": name + INVITE_SUFFIX,
        "title": spec.title,
        "subtitle": spec.subtitle,
        "caption": caption,
    }
    pieces = _content_pieces(spec, design, texts)
    if pieces is None:
        elements = DRAW_ORDER[len(TEMPLATE_ELEMENTS):]
    else:
        for xy, piece in pieces:
            canvas.paste(piece, xy)
        elements = tuple(e for e in DRAW_ORDER if e in MEMBER_ELEMENTS)
    for element in elements:
        _draw_element(canvas, draw, spec, design.layout[element], element, texts)
    return canvas


def render_image(spec: PosterSpec) -> Image.Image:
    """The poster as a Pillow image (see ``render_poster``)."""
    _check_spec(spec)
    return _draw(spec, _design(spec))


def render_poster(spec: PosterSpec) -> bytes:
    """The poster as PNG bytes. LayoutError for a layout that cannot be drawn, CodeImageError for a bad code."""
    _check_spec(spec)
    design = _design(spec)
    image = _draw(spec, design)
    encoded = _encode(image, design.last)
    design.last = encoded
    return _png_file(image.width, image.height, encoded)


def _encode(image: Image.Image, previous: _Encoded | None) -> _Encoded:
    """``image``'s rows compressed band by band; a band equal to ``previous``'s is taken from it."""
    pixels = image.tobytes()
    stride = image.width * 3
    band_bytes = stride * PNG_BAND_ROWS
    if previous is not None and len(previous.pixels) != len(pixels):
        previous = None
    bands: list[bytes] = []
    checksums: list[int] = []
    for index, start in enumerate(range(0, len(pixels), band_bytes)):
        chunk = pixels[start : start + band_bytes]
        if previous is not None and previous.pixels[start : start + band_bytes] == chunk:
            bands.append(previous.bands[index])
            checksums.append(previous.checksums[index])
            continue
        # Each row takes filter type 0 (none): flat colours compress well enough unfiltered, and fast.
        rows = b"\x00" + b"\x00".join(chunk[i : i + stride] for i in range(0, len(chunk), stride))
        compressor = zlib.compressobj(PNG_COMPRESS_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        bands.append(compressor.compress(rows) + compressor.flush(zlib.Z_SYNC_FLUSH))
        checksums.append(zlib.adler32(rows))
    return _Encoded(pixels, tuple(bands), tuple(checksums))


#: The last deflate block: empty, marked final.
_FINAL_BLOCK = zlib.compressobj(PNG_COMPRESS_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS).flush()
_ADLER_BASE = 65521


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings one after the other, from each one's checksum (zlib's adler32_combine)."""
    remainder = second_length % _ADLER_BASE
    low = (first & 0xFFFF) + (second & 0xFFFF) + _ADLER_BASE - 1
    high = (remainder * (first & 0xFFFF)) % _ADLER_BASE + (first >> 16) + (second >> 16) + _ADLER_BASE - remainder
    return (low % _ADLER_BASE) | ((high % _ADLER_BASE) << 16)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _png_file(width: int, height: int, encoded: _Encoded) -> bytes:
    stride = width * 3
    checksum = 1
    for index, band_checksum in enumerate(encoded.checksums):
        rows = min(PNG_BAND_ROWS, height - index * PNG_BAND_ROWS)
        checksum = adler32_combine(checksum, band_checksum, rows * (stride + 1))
    # A zlib stream: its header (deflate, 32 KiB window, no dictionary), the bands and the final block, the Adler-32.
    stream = b"".join((b"\x78\x01", *encoded.bands, _FINAL_BLOCK, struct.pack(">I", checksum)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits a channel, RGB, not interlaced
    return b"".join((b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", stream), _chunk(b"IEND", b"")))
