"""The official account: WeChat's callback (/wechat/oa), members' QR codes and the account's menu.

The member zone the menu opens (/h5/member) is ``server.memberzone``.
"""
from __future__ import annotations

import json
from typing import Any

import click
from flask import Blueprint, Response, current_app, request
from wechatpy.events import ScanEvent, SubscribeEvent, SubscribeScanEvent, UnsubscribeEvent

from server import db, security
from server.accounts.auth import current_member, member_required
from server.cache import get_value, set_value
from server.errors import envelope
from server.referral import official_account as services
from server.settings.services import get_setting
from server.wechat import miniprogram, oa_messages, official_account
from server.wechat.client import WeChatError
from server.wechat.oa_messages import SUCCESS, CallbackRejectedError, CallbackUnreadableError, IncomingMessage

# No url_prefix: the routes span the callback and the member API. cli_group=None
# puts ``oa-menu`` at the top of ``python -m server``.
bp = Blueprint("official_account", __name__, cli_group=None)

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
