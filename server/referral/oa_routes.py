"""The official account: WeChat's callback (/wechat/oa), members' QR codes, the member zone H5 (/h5/member).

The member zone is what the account's menu opens (seed 003: 底部栏设置会员专区). It is
signed in through the account's web OAuth, not a bearer token: a signed cookie holds
the visitor's unionid, and the page shows the mini-program member behind it.
"""
from __future__ import annotations

import json
import secrets
from typing import Any

import click
from flask import Blueprint, Response, current_app, redirect, render_template, request
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner
from wechatpy.events import ScanEvent, SubscribeEvent, SubscribeScanEvent, UnsubscribeEvent
from werkzeug.wrappers import Response as BaseResponse  # what redirect() builds; flask.Response is one too

from server import db, security
from server.accounts.auth import current_member, member_required
from server.accounts.models import MemberStatus
from server.cache import get_value, set_value
from server.errors import AppError, envelope
from server.referral import official_account as services
from server.settings.services import get_setting
from server.wechat import miniprogram, oa_messages, official_account
from server.wechat.client import WeChatError
from server.wechat.oa_messages import SUCCESS, CallbackRejectedError, CallbackUnreadableError, IncomingMessage

# No url_prefix: the routes span the callback, the member API and the H5 pages. cli_group=None
# puts ``oa-menu`` at the top of ``python -m server``.
bp = Blueprint("official_account", __name__, template_folder="templates", cli_group=None)

#: The member zone's sign-in cookie, and the OAuth round trip's anti-forgery cookie.
ZONE_COOKIE = "member_zone"
NONCE_COOKIE = "member_zone_oauth"
ZONE_COOKIE_MAX_AGE = 7 * 24 * 3600
#: Seconds a browser has to come back from WeChat's OAuth page.
OAUTH_MAX_AGE = 600
_SCOPE_LETTERS = {"snsapi_base": "b", "snsapi_userinfo": "u"}
#: How long a pushed message is remembered, so WeChat's retries (three, within 15 s) count once.
EVENT_MEMORY_SECONDS = 300


def _text(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/plain")


# -- WeChat's callback ---------------------------------------------------------------------


@bp.get("/wechat/oa")
def verify_callback_url() -> Response:
    """WeChat checks the callback URL once, when it is saved in the MP console: echo ``echostr``."""
    codec = oa_messages()
    if codec is None:
        return _text("the official account is not configured", 404)
    try:
        return _text(codec.verify_url(request.args))
    except CallbackRejectedError as error:
        current_app.logger.warning("official-account URL check refused: %s", error)
        return _text("invalid signature", 403)


@bp.post("/wechat/oa")
def receive_message() -> Response:
    """A message or event pushed by WeChat; answers a passive reply or ``success``, never an error page."""
    codec = oa_messages()
    if codec is None:
        return _text("the official account is not configured", 404)
    try:
        incoming = codec.open(request.args, request.get_data(cache=False))
    except CallbackRejectedError as error:
        current_app.logger.warning("official-account callback refused: %s", error)
        return _text("invalid signature", 403)
    except CallbackUnreadableError as error:
        current_app.logger.warning("official-account callback unreadable: %s", error)
        return _text("bad request", 400)

    message = incoming.message
    if isinstance(message, UnsubscribeEvent):
        _record_follow(incoming.openid, following=False)
        return _text(SUCCESS)
    if isinstance(message, (SubscribeScanEvent, ScanEvent)):
        scene_code, event = message.scene_id or "", "subscribe" if isinstance(message, SubscribeScanEvent) else "SCAN"
    elif isinstance(message, SubscribeEvent):
        scene_code, event = "", "subscribe"
    else:
        return _text(SUCCESS)
    scan = None
    if scene_code:
        try:
            scan = _record_scan_once(incoming, scene_code, event)
        except Exception:  # the follower still gets their welcome; WeChat must not see an error
            current_app.logger.exception("official-account scan not recorded")
            db.session().rollback()
    if event == "subscribe":
        _record_follow(incoming.openid, following=True)
    newcomer = scan is not None and scan.member is None
    body = codec.reply_text(incoming, _welcome(event, newcomer))
    return Response(body, mimetype="application/xml")


def _record_scan_once(incoming: IncomingMessage, scene_code: str, event: str) -> services.OAScan | None:
    """Record the scan unless this very push was recorded already; None for such a retry."""
    # WeChat retries a push it got no answer to in 5 seconds; FromUserName and CreateTime name it.
    key = f"oa-event:{security.digest(incoming.openid, 'oa-openid')[:24]}:{incoming.message.time}:{event}"
    if get_value(key) is not None:
        return None
    scan = services.record_oa_scan(db.session(), official_account(), incoming.openid, scene_code, event)
    db.after_commit(lambda: set_value(key, 1, EVENT_MEMORY_SECONDS))
    # Commits here, by design: a commit that fails must still leave the follower their welcome.
    db.commit()
    return scan


def _record_follow(oa_openid: str, *, following: bool) -> None:
    """Announce that the user followed or left; committed with the callback's answer. A failure costs
    the record, never WeChat's answer."""
    # Asked before the savepoint opens: no transaction waits on WeChat.
    unionid = services.follower_unionid(official_account(), oa_openid) if following else None
    try:
        with db.session().begin_nested():
            services.record_follow(db.session(), oa_openid, unionid, following)
    except Exception:
        current_app.logger.exception("official-account follow not recorded")


def _welcome(event: str, newcomer: bool) -> str:
    zone = f"{current_app.config['PUBLIC_BASE_URL']}/h5/member"
    shop = get_setting(db.session(), "shop_name")
    first = f"欢迎关注「{shop}」！" if event == "subscribe" else f"欢迎回到「{shop}」！"
    text = f'{first}\n点击进入<a href="{zone}">会员专区</a>，领取你的专属分享链接和二维码。'
    if newcomer:
        text += f"\n还不是会员？在微信中打开「{shop}」小程序，登录即可加入。"
    return text


# -- members' QR codes -----------------------------------------------------------------------


def _serialize_qrcode(qr: services.OAQRCode) -> dict[str, Any]:
    return {
        "scene": qr.scene,
        "ticket": qr.ticket,
        "qrcode_url": qr.qrcode_url,
        "image_url": qr.image_url,
        "expire_seconds": qr.expire_seconds,
    }


@bp.post("/api/v1/referral/oa-qrcode")
@member_required
def member_qrcode() -> Any:
    """The member's official-account QR code: following through it binds the follower to them."""
    scene, expire_seconds = services.member_oa_scene(db.session(), current_member().id)
    # Commits early, by design: no database lock is held across the network call.
    db.commit()
    return envelope(_serialize_qrcode(services.scene_qrcode(official_account(), scene.code, expire_seconds)))


# -- the member zone (会员专区) ----------------------------------------------------------------


def _state_signer() -> TimestampSigner:
    return TimestampSigner(current_app.config["SECRET_KEY"], salt="member-zone-oauth")


def _secure_cookies() -> bool:
    return current_app.config["PUBLIC_BASE_URL"].startswith("https://")


def _page(template_state: str, status: int = 200, **context: Any) -> Response:
    shop = get_setting(db.session(), "shop_name")
    response = Response(render_template("member_zone.html", state=template_state, shop_name=shop, **context), status=status)
    # Personal pages: no shared cache may keep one member's page for another.
    response.headers["Cache-Control"] = "no-store"
    return response


def _start_oauth(scope: str) -> BaseResponse:
    """Send the browser through the account's OAuth; ``state`` is bound to it by a nonce cookie."""
    nonce = secrets.token_hex(8)
    # WeChat allows ``state`` only letters and digits, at most 128: the signed value goes as hex,
    # with the scope as one letter to stay short enough.
    state = _state_signer().sign(f"{nonce}-{_SCOPE_LETTERS[scope]}").hex()
    redirect_uri = f"{current_app.config['PUBLIC_BASE_URL']}/h5/member/oauth"
    response = redirect(official_account().oauth_url(redirect_uri, state, scope))
    response.set_cookie(NONCE_COOKIE, nonce, max_age=OAUTH_MAX_AGE, httponly=True, samesite="Lax",
                        secure=_secure_cookies(), path="/h5/member")
    return response


def _checked_state(state: str) -> str | None:
    """The scope of a ``state`` we issued to this browser within OAUTH_MAX_AGE, else None."""
    try:
        value = _state_signer().unsign(bytes.fromhex(state), max_age=OAUTH_MAX_AGE).decode("ascii")
    except (ValueError, BadSignature, SignatureExpired, UnicodeDecodeError):
        return None
    nonce, _, letter = value.partition("-")
    cookie = request.cookies.get(NONCE_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie, nonce):
        return None
    return next((scope for scope, known in _SCOPE_LETTERS.items() if known == letter), None)


def _zone_unionid() -> str | None:
    token = request.cookies.get(ZONE_COOKIE)
    payload = security.load_token(token, "member-zone", ZONE_COOKIE_MAX_AGE) if token else None
    unionid = payload.get("u") if payload else None
    return unionid if isinstance(unionid, str) and unionid else None


@bp.get("/h5/member")
def member_zone() -> BaseResponse:
    """The member zone: the member's share link, official-account QR code, leads and team."""
    unionid = _zone_unionid()
    if unionid is None:
        return _start_oauth("snsapi_base")
    sess = db.session()
    member = services.member_for_unionid(sess, unionid)
    if member is None:
        return _page("not_member")
    if member.status != MemberStatus.active:
        return _page("disabled", 403)
    zone = services.member_zone(sess, member)
    # Commits early, by design: no transaction is open while WeChat draws the QR code.
    db.commit()
    qr = None
    try:
        qr = services.scene_qrcode(official_account(), zone.oa_scene.code, zone.oa_expire_seconds)
    except AppError:
        current_app.logger.warning("member zone shown without its QR code: WeChat failed")
    share_url = f"{current_app.config['PUBLIC_BASE_URL']}/s/{zone.share_scene.code}"
    return _page("member", member=member, zone=zone, share_url=share_url, qr=qr)


@bp.get("/h5/member/oauth")
def member_zone_oauth() -> BaseResponse:
    """Where WeChat's OAuth sends the browser back: identify the visitor, set the cookie, show the zone."""
    scope = _checked_state(request.args.get("state", ""))
    if scope is None:
        # Not a redirect back to OAuth: a browser that refuses cookies would loop for ever.
        return _page("expired", 400)
    code = request.args.get("code")
    if not code:
        return _page("refused")  # the user declined snsapi_userinfo's consent screen
    try:
        identity = services.oauth_identity(official_account(), code)
    except services.InvalidOAuthCodeError:
        return _page("expired", 400)
    except AppError:
        return _page("unavailable", 502)
    if identity.snapshot:
        # A Moments snapshot page: WeChat gives every viewer the same virtual openid, so nobody
        # may sign in or be bound through it; the visitor has to open the full page.
        return _page("snapshot", 403)
    if identity.unionid is None:
        if scope == "snsapi_base":
            # Not a follower: only the consent screen of snsapi_userinfo yields a unionid.
            return _start_oauth("snsapi_userinfo")
        return _page("unidentified")
    response = redirect("/h5/member")
    response.set_cookie(ZONE_COOKIE, security.sign_token({"u": identity.unionid}, "member-zone"),
                        max_age=ZONE_COOKIE_MAX_AGE, httponly=True, samesite="Lax", secure=_secure_cookies(), path="/h5")
    response.delete_cookie(NONCE_COOKIE, path="/h5/member")
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the menu ------------------------------------------------------------------------------------


@bp.cli.command("oa-menu")
@click.option("--pagepath", default="pages/index/index", show_default=True, help="The mini-program page its button opens.")
def push_menu_command(pagepath: str) -> None:
    """Push the official account's menu: the member zone (H5) and the mini-program."""
    menu = services.build_menu(current_app.config["PUBLIC_BASE_URL"], miniprogram().appid, pagepath)
    try:
        official_account().create_menu(menu)
    except WeChatError as error:
        raise click.ClickException(f"WeChat refused the menu: {error}") from None
    click.echo(json.dumps(menu, ensure_ascii=False, indent=2))
    click.echo("menu pushed to the official account")
