"""The mini-program's WeChat: ``wx.login`` code exchange, phone numbers, and mini-program codes
(``wxacode.getUnlimited``), drawn as QR codes that carry the scene.
"""
from __future__ import annotations

import base64
import io
import os
import re
import time
from typing import Any

import qrcode
import qrcode.constants
from flask import Blueprint, Response, jsonify, request
from PIL import Image, ImageDraw

from server.wechat.formats import SCENE_MAX_LENGTH, SCENE_RE
from wechat_sandbox.core import WeChatFault, json_body, state, wechat_api

#: The image width range WeChat clamps ``width`` to.
CODE_MIN_WIDTH, CODE_MAX_WIDTH = 280, 1280
#: The stand-in for the round "sun code" is a QR code at this error-correction level.
QR_ERROR_CORRECTION = qrcode.constants.ERROR_CORRECT_M
#: Blank modules around the code, the quiet zone a scanner needs.
QR_QUIET_MODULES = 4

LOGIN_CODE = re.compile(r"sandbox:([A-Za-z0-9_.\-]{1,64})")
#: JPEG quality of mini-program codes: high enough that no artefact blurs a module edge.
CODE_JPEG_QUALITY = 95
PHONE_CODE = re.compile(r"sandbox-phone:(?:\+([1-9]\d{0,3})-)?(\d{4,15})")
CN_MOBILE = re.compile(r"1\d{10}")
#: A page path as WeChat wants it: no leading slash, no query (parameters go in the scene).
PAGE_PATH = re.compile(r"[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*")
ENV_VERSIONS = frozenset({"release", "trial", "develop"})


miniprogram_bp = Blueprint("sandbox_miniprogram", __name__)


@wechat_api(miniprogram_bp, "/sns/jscode2session", "GET")
def jscode2session() -> Response:
    args = request.args
    appid = state().check_credentials(args.get("appid"), args.get("secret"))
    if args.get("grant_type") != "authorization_code":
        raise WeChatFault(40002, "invalid grant_type")
    js_code = args.get("js_code")
    if not js_code:
        raise WeChatFault(41008, "missing code")
    match = LOGIN_CODE.fullmatch(js_code)
    name = match.group(1) if match is not None else state().redeem_login_code(js_code, appid)
    return jsonify(
        session_key=base64.b64encode(os.urandom(16)).decode("ascii"),
        openid=state().openid(appid, name),
        unionid=state().unionid(name),
    )


@wechat_api(miniprogram_bp, "/wxa/business/getuserphonenumber", "POST")
def get_user_phone_number() -> Response:
    appid = state().check_token(request.args.get("access_token"))
    body = json_body(WeChatFault(47001, "data format error"))
    code = body.get("code")
    if not isinstance(code, str) or not code:
        raise WeChatFault(47001, "data format error")
    match = PHONE_CODE.fullmatch(code)
    if match is None:
        raise WeChatFault(40029, "invalid code")
    country, digits = match.group(1) or "86", match.group(2)
    if country == "86":
        if not CN_MOBILE.fullmatch(digits):
            raise WeChatFault(40029, "invalid code")
        phone_number = digits
    else:
        phone_number = f"+{country}{digits}"
    return jsonify(
        errcode=0,
        errmsg="ok",
        phone_info={
            "phoneNumber": phone_number,
            "purePhoneNumber": digits,
            "countryCode": country,
            "watermark": {"timestamp": int(time.time()), "appid": appid},
        },
    )


def _color(value: Any) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(value[key]) for key in ("r", "g", "b"))
    except (KeyError, TypeError, ValueError):
        raise WeChatFault(47001, "data format error") from None
    if not all(0 <= c <= 255 for c in rgb):
        raise WeChatFault(47001, "data format error")
    return rgb  # type: ignore[return-value]


def render_code(
    scene: str, width: int, color: tuple[int, int, int] = (0, 0, 0), transparent: bool = False, image_format: str = "PNG"
) -> bytes:
    """An image (PNG, or JPEG unless transparent), ``width`` pixels square, of a QR code whose content is exactly ``scene``."""
    qr = qrcode.QRCode(error_correction=QR_ERROR_CORRECTION, box_size=1, border=0)
    qr.add_data(scene)
    qr.make(fit=True)
    matrix = qr.get_matrix()
    modules = len(matrix)
    # Whole pixels per module keep every module the same size, which scanners like.
    box = max(1, width // (modules + 2 * QR_QUIET_MODULES))
    offset = (width - box * modules) // 2
    image = Image.new("RGBA", (width, width), (255, 255, 255, 0 if transparent else 255))
    draw = ImageDraw.Draw(image)
    for row, cells in enumerate(matrix):
        for col, dark in enumerate(cells):
            if dark:
                x, y = offset + col * box, offset + row * box
                draw.rectangle((x, y, x + box - 1, y + box - 1), fill=(*color, 255))
    out = io.BytesIO()
    if transparent or image_format == "PNG":
        (image if transparent else image.convert("RGB")).save(out, format="PNG")
    else:
        image.convert("RGB").save(out, format="JPEG", quality=CODE_JPEG_QUALITY, subsampling=0)
    return out.getvalue()


@wechat_api(miniprogram_bp, "/wxa/getwxacodeunlimit", "POST")
def get_wxacode_unlimit() -> Response:
    state().check_token(request.args.get("access_token"))
    bad_scene = WeChatFault(40169, "invalid length for scene, or the data is not json string")
    body = json_body(bad_scene)
    scene = body.get("scene")
    if not isinstance(scene, str) or not 1 <= len(scene) <= SCENE_MAX_LENGTH:
        raise bad_scene
    # fullmatch, not match: the pattern ends in "$", which would let a trailing newline through.
    if not SCENE_RE.fullmatch(scene):
        raise WeChatFault(40129, "invalid scene")

    width = body.get("width", 430)
    if isinstance(width, bool) or not isinstance(width, int):
        raise WeChatFault(47001, "data format error")
    width = min(max(width, CODE_MIN_WIDTH), CODE_MAX_WIDTH)
    env_version = body.get("env_version", "release")
    if env_version not in ENV_VERSIONS:
        raise WeChatFault(40097, "invalid args")
    flags = {name: body.get(name, default) for name, default in
             (("check_path", True), ("auto_color", False), ("is_hyaline", False))}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise WeChatFault(47001, "data format error")

    page = body.get("page")
    if page is not None and not isinstance(page, str):
        raise WeChatFault(47001, "data format error")
    if flags["check_path"] and page:
        known = state().pages
        if not PAGE_PATH.fullmatch(page) or (known is not None and page not in known):
            raise WeChatFault(41030, "invalid page")

    color = (0, 0, 0)
    if not flags["auto_color"] and "line_color" in body:
        color = _color(body["line_color"])
    # WeChat answers image/jpeg, and a PNG only when asked for a transparent background.
    if flags["is_hyaline"]:
        return Response(render_code(scene, width, color, transparent=True), mimetype="image/png")
    return Response(render_code(scene, width, color, image_format="JPEG"), mimetype="image/jpeg")
