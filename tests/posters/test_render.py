"""The renderer on its own: font coverage, text wrapping, layout checks, codes that scan."""
from __future__ import annotations

import io
import zlib

import pytest
import zxingcpp
from PIL import Image, ImageDraw

from server.config import ROOT
from server.posters import render
from wechat_sandbox import render_code

SCENE = "AbCdEfGhIjKlMnOp"


def _png(color: str, size: tuple[int, int] = (64, 64), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def _decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def _texts(image: Image.Image) -> list[str]:
    return [result.text for result in zxingcpp.read_barcodes(image)]


def _ink(image: Image.Image, box: dict[str, int], threshold: int = 128) -> int:
    """Dark pixels inside a layout box."""
    region = image.convert("L").crop((box["x"], box["y"], box["x"] + box["w"], box["y"] + box["h"]))
    return sum(region.histogram()[:threshold])


def test_the_font_is_the_bundled_file_not_a_system_font():
    assert render.FONT_PATH.is_file()
    assert render.FONT_PATH.is_relative_to(ROOT / "server" / "posters" / "fonts")
    assert render.font(24).path == str(render.FONT_PATH)
    assert render.font(24) is render.font(24)  # loaded once per size


def test_bundled_font_draws_alices_name_and_not_boxes():
    notdef = render.glyph_mask("\U000f0001")  # a private-use code point no font of this kind maps
    masks = {char: render.glyph_mask(char) for char in "爱丽丝"}
    assert any(notdef), "the .notdef glyph should be a visible box"
    assert all(any(mask) for mask in masks.values())
    assert len({notdef, *masks.values()}) == 4, "each character has its own glyph, none is the .notdef box"
    assert all(render.has_glyph(char) for char in "爱丽丝邀请你长按识别小程序码二维码")


def test_font_covers_latin_digits_and_chinese_punctuation():
    sample = "AZaz09@#%&()-_+=，。！？：；“”‘’（）《》【】、…—·￥"
    assert [c for c in sample if not render.has_glyph(c)] == []


def test_drawable_drops_what_would_draw_as_boxes():
    assert render.drawable("爱丽丝🌟") == "爱丽丝"
    assert render.drawable("👨‍👩‍👧 Bob\u200b\n") == "Bob"
    assert render.drawable("第一行\t 🌟\n\n第二行", multiline=True) == "第一行\n第二行"
    assert render.drawable("第一行\n第二行") == "第一行 第二行"


def test_line_breaks_in_template_text_are_kept():
    face = render.font(30)
    assert render.wrap_text("第一行\n第二行", face, 600, 5) == ["第一行", "第二行"]


def test_cjk_wraps_between_any_characters_and_latin_only_at_spaces():
    face = render.font(30)
    text = "你好，世界。这是一个很长的句子（带括号）和 English words mixed together."
    lines = render.wrap_text(text, face, 300, 10)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert all(face.getlength(line) <= 300 for line in lines)
    assert not any(line[0] in "，。）" for line in lines), lines
    for word in ("English", "words", "mixed", "together."):
        assert any(word in line for line in lines), f"{word} was split: {lines}"


def test_overlong_text_ends_in_an_ellipsis_and_long_words_break():
    face = render.font(30)
    lines = render.wrap_text("好" * 200, face, 300, 2)
    assert len(lines) == 2 and lines[-1].endswith("…")
    assert all(face.getlength(line) <= 300 for line in lines)
    url = render.wrap_text("x" * 80, face, 300, 10)
    assert len(url) > 1 and "".join(url) == "x" * 80


def test_miniprogram_poster_keeps_the_code_scannable_and_the_nickname_visible():
    spec = render.PosterSpec(code_png=render_code(SCENE, 300), nickname="爱丽丝", headline="好物分享", title="标题")
    image = _decode(render.render_poster(spec))
    assert image.size == (750, 1334) and image.format == "PNG"
    assert _texts(image) == [SCENE]
    assert _ink(image, render.DEFAULT_LAYOUT["nickname"]) > 100


def test_h5_poster_draws_a_qr_of_the_link():
    link = f"https://shop.example.com/s/{SCENE}"
    image = _decode(render.render_poster(render.PosterSpec(qr_data=link, nickname="Bob")))
    assert _texts(image) == [link]


def test_exactly_one_kind_of_code():
    with pytest.raises(ValueError):
        render.render_poster(render.PosterSpec())
    with pytest.raises(ValueError):
        render.render_poster(render.PosterSpec(code_png=render_code(SCENE, 300), qr_data="x"))


def test_a_code_that_is_not_an_image_is_a_code_image_error():
    with pytest.raises(render.CodeImageError):
        render.render_poster(render.PosterSpec(code_png=b"{\"errcode\": 0}"))


@pytest.mark.parametrize("size", [(600, 900), (1080, 1920), (750, 750)])
def test_default_layout_scales_to_other_canvases(size):
    layout = render.resolve_layout({}, *size)
    assert all(box["x"] + box.get("w", box.get("size", 0)) <= size[0] for box in layout.values())
    assert all(box["y"] + box.get("h", box.get("size", 0)) <= size[1] for box in layout.values())
    image = _decode(render.render_poster(render.PosterSpec(qr_data="https://a.example/s/x", width=size[0], height=size[1])))
    assert image.size == size
    assert _texts(image) == ["https://a.example/s/x"]


def test_layout_overrides_move_elements():
    layout = {"code": {"x": 20, "y": 20, "size": 200}, "header": {"show": False}, "card": {"color": "#00FF00"}}
    image = _decode(render.render_poster(render.PosterSpec(qr_data="hello", layout=layout, background_color="#0000FF")))
    assert _texts(image) == ["hello"]
    assert image.getpixel((5, 700)) == (0, 0, 255)  # no header band: the background shows
    assert image.getpixel((60, 1280)) == (0, 255, 0)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"code": {"x": 600}}, "layout.code.size"),
        ({"code": {"x": -1}}, "layout.code.x"),
        ({"title": {"w": 9999}}, "layout.title.w"),
        ({"header": {"color": "red"}}, "layout.header.color"),
        ({"header": {"color": "#12345"}}, "layout.header.color"),
        ({"title": {"size": 5}}, "layout.title.size"),
        ({"title": {"x": 1.5}}, "layout.title.x"),
        ({"title": {"x": True}}, "layout.title.x"),
        ({"title": {"align": "justify"}}, "layout.title.align"),
        ({"title": {"font": "Arial"}}, "layout.title.font"),
        ({"sticker": {"x": 1}}, "layout.sticker"),
        ({"code": 3}, "layout.code"),
        ({"card": {"radius": 400}}, "layout.card.radius"),
    ],
)
def test_bad_layouts_are_refused_with_the_field(overrides, field):
    with pytest.raises(render.LayoutError) as caught:
        render.resolve_layout(overrides, 750, 1334)
    assert field in [e["field"] for e in caught.value.errors], caught.value.errors


def test_background_image_covers_the_canvas():
    spec = render.PosterSpec(qr_data="x", background_image=_png("#0000FF", (300, 200), "JPEG"))
    image = _decode(render.render_poster(spec))
    r, g, b = image.getpixel((5, 1330))  # below the card: only the background is there
    assert b > 200 and r < 40 and g < 40


def test_undecodable_background_leaves_the_colour():
    image = _decode(render.render_poster(render.PosterSpec(qr_data="x", background_image=b"junk", background_color="#123456")))
    assert image.getpixel((5, 1330)) == (0x12, 0x34, 0x56)


def test_avatar_photo_is_cropped_to_a_circle():
    box = render.DEFAULT_LAYOUT["avatar"]
    image = _decode(render.render_poster(render.PosterSpec(qr_data="x", avatar=_png("#FF0000", (200, 120)))))
    cx, cy = box["x"] + box["size"] // 2, box["y"] + box["size"] // 2
    assert image.getpixel((cx, cy)) == (255, 0, 0)
    assert image.getpixel((box["x"] + 2, box["y"] + 2)) == (255, 255, 255)  # corner: the card shows through


@pytest.mark.parametrize("avatar", [None, b"", b"not an image"])
def test_missing_or_broken_avatar_draws_the_initial(avatar):
    box = render.DEFAULT_LAYOUT["avatar"]
    image = _decode(render.render_poster(render.PosterSpec(qr_data="x", avatar=avatar, nickname="爱丽丝")))
    ring = image.getpixel((box["x"] + box["size"] // 2, box["y"] + 6))
    assert ring in {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in render._AVATAR_COLORS}
    region = image.convert("L").crop((box["x"], box["y"], box["x"] + box["size"], box["y"] + box["size"]))
    assert region.getextrema()[1] == 255  # the white initial


def test_decode_image_accepts_png_and_jpeg_only():
    assert render.decode_image(_png("#00FF00")).size == (64, 64)
    assert render.decode_image(_png("#00FF00", fmt="JPEG")).size == (64, 64)
    with pytest.raises(ValueError):
        render.decode_image(_png("#00FF00", fmt="GIF"))
    with pytest.raises(ValueError):
        render.decode_image(_png("#00FF00", (5000, 4000)))


# -- the PNG writer -----------------------------------------------------------------------


def _idat(png: bytes) -> bytes:
    at = png.index(b"IDAT")
    return png[at + 4 : at + 4 + int.from_bytes(png[at - 4 : at], "big")]


@pytest.mark.parametrize("size", [(750, 1334), (601, 999), (750, 750)])
def test_posters_encode_exactly_the_pixels_drawn_with_a_valid_zlib_stream(size):
    specs = [
        render.PosterSpec(qr_data=f"https://a.example/s/{n}", nickname=name, width=size[0], height=size[1], headline="好物分享")
        for n, name in enumerate(["爱丽丝", "Bob", "Carol"])
    ]
    for spec in specs:  # the second and third reuse bands of the one before
        png = render.render_poster(spec)
        image = _decode(png)
        assert image.format == "PNG" and image.mode == "RGB" and image.size == size
        assert image.tobytes() == render.render_image(spec).tobytes()
        rows = zlib.decompress(_idat(png))  # checks the Adler-32 over every band
        assert len(rows) == size[1] * (size[0] * 3 + 1)


def test_a_poster_reuses_the_bands_it_shares_with_the_designs_last_poster():
    first = render.render_poster(render.PosterSpec(qr_data="https://a.example/s/one", nickname="爱丽丝"))
    second = render.render_poster(render.PosterSpec(qr_data="https://a.example/s/two", nickname="Bob"))
    header_rows = render.DEFAULT_LAYOUT["avatar"]["y"] // render.PNG_BAND_ROWS * render.PNG_BAND_ROWS
    first_rows, second_rows = zlib.decompress(_idat(first)), zlib.decompress(_idat(second))
    stride = 750 * 3 + 1
    assert first_rows[: header_rows * stride] == second_rows[: header_rows * stride]
    assert first_rows != second_rows
    # The bands above the avatar are the same compressed bytes in both files.
    assert _idat(first)[:200] == _idat(second)[:200]


def test_a_changed_design_is_drawn_afresh():
    before = _decode(render.render_poster(render.PosterSpec(qr_data="x", layout={"header": {"color": "#00FF00"}})))
    after = _decode(render.render_poster(render.PosterSpec(qr_data="x", layout={"header": {"color": "#0000FF"}})))
    assert before.getpixel((5, 5)) == (0, 255, 0) and after.getpixel((5, 5)) == (0, 0, 255)


def test_adler32_combine_matches_zlib():
    for first, second in ((b"", b""), (b"abc", b"defgh"), (bytes(range(256)) * 300, b"\xff" * 70000), (b"x" * 65521, b"y" * 65522)):
        assert render.adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second)) == zlib.adler32(first + second)



def _drawn_in_order(spec: render.PosterSpec) -> bytes:
    """Every element drawn onto the canvas in DRAW_ORDER, as before the design and content were kept."""
    layout = render.resolve_layout(spec.layout, spec.width, spec.height)
    canvas = Image.new("RGB", (spec.width, spec.height), spec.background_color)
    name = render.drawable(spec.nickname) or render.FALLBACK_NAME
    caption = render.MINIPROGRAM_CAPTION if spec.code_png else render.QR_CAPTION
    texts = {"headline": spec.headline, "body": spec.body_text, "name": name, "nickname": name + render.INVITE_SUFFIX,
             "title": spec.title, "subtitle": spec.subtitle, "caption": caption}
    draw = ImageDraw.Draw(canvas)
    for element in render.DRAW_ORDER:
        render._draw_element(canvas, draw, spec, layout[element], element, texts)
    return canvas.tobytes()


@pytest.mark.parametrize(
    "layout, pasted",
    [
        ({}, True),
        ({"title": {"y": 500}}, False),  # the title runs over the avatar
        ({"code": {"x": 60, "y": 600, "size": 200}}, False),  # the code covers the title
        ({"caption": {"y": 1000}}, False),  # the caption sits on the code
        ({"subtitle": {"x": 300, "y": 900, "w": 400}}, False),
    ],
)
def test_content_drawn_once_and_pasted_gives_the_pixels_of_drawing_in_order(layout, pasted):
    for n, nickname in enumerate(["爱丽丝", "Bob", "很长很长的昵称很长很长的昵称很长很长的昵称"]):
        spec = render.PosterSpec(code_png=render_code(f"AbCdEfGhIjKlMn{n:02d}", 300), nickname=nickname, layout=layout,
                                 headline="好物分享", title="我发现了一家好店，推荐给你" * 3, subtitle="限时特惠 ¥39.9")
        assert _decode(render.render_poster(spec)).tobytes() == _drawn_in_order(spec)
    design = render._design(spec)
    assert (design.content[(spec.title, spec.subtitle, render.MINIPROGRAM_CAPTION)] is not None) is pasted
