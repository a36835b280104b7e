"""The official account (公众号) as a referral channel: QR scans, pending attribution, QR codes, menu.

A follower is known to the official account by an openid of its own; the member
behind it is found by unionid, which the account and the mini-program share.
Someone who follows through a member's QR code before they ever open the
mini-program is remembered by unionid (an ``OAAttribution``) and bound when they
first sign in there.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import cache, events, security
from server.accounts.models import Member
from server.db import utcnow
from server.errors import AppError, UpstreamError
from server.referral.models import (
    Binding,
    Channel,
    Lead,
    OAAttribution,
    Scene,
    TouchKind,
)
from server.referral.services import (
    BindResult,
    bind_member,
    scene_for_share,
    scene_state,
    touch,
)
from server.settings.services import SettingSpec, get_setting, register
from server.wechat.client import (
    QR_MAX_EXPIRE_SECONDS,
    OAuthResult,
    OfficialAccount,
    WeChatError,
    WeChatUnavailableError,
)
from server.wechat.formats import SCENE_RE

register(
    SettingSpec(
        "oa_qr_expire_days",
        int,
        0,
        "Days a member's official-account QR code stays valid: 0 for a permanent code (WeChat allows "
        "an account 100,000 of them), 1-30 for a temporary one.",
        minimum=0,
        maximum=QR_MAX_EXPIRE_SECONDS // 86400,
    ),
)

#: How long a follower's first QR scan is kept for them before another scan may replace it.
PENDING_ATTRIBUTION_DAYS = 30
#: A cached temporary QR code is handed out only while it has at least this share of its life left.
QR_CACHE_MIN_LIFE_SHARE = 0.5
#: WeChat errcodes meaning the OAuth code is bad or spent: the user's fault, not WeChat's.
BAD_OAUTH_CODE_ERRORS = frozenset({40029, 40163, 41008})


class InvalidOAuthCodeError(AppError):
    http_status, code, message = 400, 40012, "the WeChat OAuth code is invalid or already used"


def _upstream(error: WeChatError) -> UpstreamError:
    if isinstance(error, WeChatUnavailableError):
        return UpstreamError()
    current_app.logger.warning("WeChat refused an official-account call: errcode=%s", error.errcode)
    return UpstreamError(data={"errcode": error.errcode})


def oa_actor(oa_openid: str) -> str:
    """The timeline's actor for a follower who is not (yet) a known member: a keyed digest, not the openid."""
    return f"oa:{security.digest(oa_openid, 'oa-openid')[:16]}"


def member_for_unionid(sess: Session, unionid: str) -> Member | None:
    """The mini-program member with this unionid (the oldest, should WeChat ever have given it twice)."""
    return sess.scalars(select(Member).where(Member.unionid == unionid).order_by(Member.id).limit(1)).first()


# -- scans ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OAScan:
    """What became of a follower's scan of a member's QR code."""

    #: The member behind the follower, if they have used the mini-program.
    member: Member | None
    #: For a known member: what ``bind_member`` made of the scene.
    binding: BindResult | None
    #: For someone not a member yet: the scene now waits for their first sign-in.
    pending: bool


def record_oa_scan(sess: Session, oa: OfficialAccount, oa_openid: str, scene_code: str, event: str) -> OAScan:
    """A follower scanned (``SCAN``) or followed through (``subscribe``) the QR code of ``scene_code``.

    The scan joins the lead timeline; a known member is bound at once, anyone else keeps the
    scene as a pending attribution for their first mini-program sign-in. WeChat being
    unreachable loses the attribution, not the scan.
    """
    # Ask WeChat before touching the database, so no transaction waits on the network.
    try:
        unionid = oa.user_info(oa_openid).unionid
    except WeChatError as error:
        current_app.logger.warning("official-account user lookup failed (errcode=%s); scan kept unattributed", error.errcode)
        unionid = None
    member = member_for_unionid(sess, unionid) if unionid else None
    valid_code = SCENE_RE.fullmatch(scene_code) is not None
    scene = sess.get(Scene, scene_code) if valid_code else None
    detail: dict[str, Any] = {"event": event}
    if member is None:
        detail["actor"] = oa_actor(oa_openid)
    if scene is None:
        detail["channel"] = Channel.official_account_qr.value
    if not valid_code:
        detail["scene_str"] = scene_code[:64]
    touch(sess, member.id if member else None, TouchKind.scan, scene, scene_code if valid_code else None, **detail)
    sess.flush()
    if member is not None:
        return OAScan(member, bind_member(sess, member, scene_code) if valid_code else None, False)
    pending = unionid is not None and scene is not None and scene_state(scene) is None and _keep_pending(sess, unionid, scene)
    return OAScan(None, None, pending)


def follower_unionid(oa: OfficialAccount, oa_openid: str) -> str | None:
    """The unionid WeChat gives for a follower; None when it gives none or cannot be reached. Call it
    with no transaction open."""
    try:
        return oa.user_info(oa_openid).unionid
    except WeChatError as error:
        current_app.logger.warning("official-account user lookup failed (errcode=%s); follow kept without unionid", error.errcode)
        return None


def record_follow(sess: Session, oa_openid: str, unionid: str | None, following: bool) -> None:
    """A user followed the account or left it: announced as ``events.oa_follow_changed`` for whoever keeps track of followers."""
    events.oa_follow_changed.send(sess, oa_openid=oa_openid, unionid=unionid, following=following)


def _keep_pending(sess: Session, unionid: str, scene: Scene) -> bool:
    """Remember ``scene`` for ``unionid`` unless a live earlier one is protected; True if kept."""
    now = utcnow()
    expires_at = now + timedelta(days=PENDING_ATTRIBUTION_DAYS)
    row = sess.scalars(select(OAAttribution).where(OAAttribution.unionid == unionid).with_for_update()).first()
    if row is None:
        try:
            with sess.begin_nested():
                sess.add(OAAttribution(unionid=unionid, scene_code=scene.code, created_at=now, expires_at=expires_at))
        except IntegrityError:
            return False  # a concurrent scan of the same person got there first, and first touch wins
        return True
    if row.scene_code == scene.code:
        return True
    # The pending scene follows the merchant's binding policy as far as it can: last touch replaces it.
    if row.expires_at > now and get_setting(sess, "binding_policy") != "last_touch":
        return False
    row.scene_code, row.created_at, row.expires_at = scene.code, now, expires_at
    sess.flush()
    return True


def take_pending_scene(sess: Session, unionid: str) -> str | None:
    """Consume the person's pending attribution: its scene if still live, else None. Works once."""
    row = sess.scalars(select(OAAttribution).where(OAAttribution.unionid == unionid).with_for_update()).first()
    if row is None:
        return None
    scene_code = row.scene_code if row.expires_at > utcnow() else None
    sess.delete(row)
    sess.flush()
    return scene_code


# -- members' QR codes --------------------------------------------------------------------


@dataclass(frozen=True)
class OAQRCode:
    """A member's official-account QR code, ready to show."""

    scene: str
    ticket: str
    #: What the code encodes.
    qrcode_url: str
    #: The code's image on WeChat's (or the sandbox's) image host.
    image_url: str
    #: Seconds it is still valid; None for a permanent code.
    expire_seconds: int | None


def oa_qr_expire_seconds(sess: Session) -> int | None:
    """How long a member's official-account QR code should live (None: permanent)."""
    days = get_setting(sess, "oa_qr_expire_days")
    return min(days * 86400, QR_MAX_EXPIRE_SECONDS) or None


def member_oa_scene(sess: Session, member_id: int) -> tuple[Scene, int | None]:
    """The member's official-account scene, and how long its QR code should live (None: permanent)."""
    return scene_for_share(sess, member_id, Channel.official_account_qr), oa_qr_expire_seconds(sess)


def scene_qrcode(oa: OfficialAccount, scene_code: str, expire_seconds: int | None) -> OAQRCode:
    """The QR code of ``scene_code``, created once and cached, so repeated calls reuse its ticket.

    Permanent codes are scarce (100,000 per account) and temporary ones are still valid, so
    asking WeChat again would only waste them. Call it outside a database transaction.
    """
    key = f"oa-qr:{oa.appid}:{scene_code}:{expire_seconds or 'permanent'}"
    entry = _usable(cache.get_value(key))
    if entry is None:
        # One request creates the code; concurrent ones wait and read what it cached.
        with cache.lock(key):
            entry = _usable(cache.get_value(key))
            if entry is None:
                try:
                    qr = oa.create_scene_qr(scene_code, expire_seconds)
                except WeChatError as error:
                    raise _upstream(error) from None
                now = time.time()
                entry = {
                    "ticket": qr.ticket,
                    "url": qr.url,
                    "expires_at": None if qr.expire_seconds is None else now + qr.expire_seconds,
                    "fresh_until": None if qr.expire_seconds is None else now + qr.expire_seconds * QR_CACHE_MIN_LIFE_SHARE,
                }
                ttl = None if qr.expire_seconds is None else qr.expire_seconds * QR_CACHE_MIN_LIFE_SHARE
                cache.set_value(key, entry, ttl)
    expires_at = entry["expires_at"]
    return OAQRCode(
        scene=scene_code,
        ticket=entry["ticket"],
        qrcode_url=entry["url"],
        image_url=oa.qrcode_image_url(entry["ticket"]),
        expire_seconds=None if expires_at is None else max(0, int(expires_at - time.time())),
    )


def _usable(entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        return None
    fresh_until = entry.get("fresh_until")
    return entry if fresh_until is None or fresh_until > time.time() else None


# -- the member zone (会员专区) ------------------------------------------------------------


def oauth_identity(oa: OfficialAccount, code: str) -> OAuthResult:
    """Who came back from the account's web OAuth; the unionid from ``user/info`` when OAuth omits it.

    ``snsapi_base`` never carries a unionid, but for a follower ``user/info`` does; for anyone
    else it stays None and only ``snsapi_userinfo`` can tell. A snapshot user (``result.snapshot``)
    is nobody in particular and comes back as such, never looked up.
    """
    try:
        result = oa.oauth_exchange(code)
        if result.snapshot:
            return result
        if result.unionid is None:
            result = OAuthResult(result.openid, oa.user_info(result.openid).unionid)
    except WeChatError as error:
        if error.errcode in BAD_OAUTH_CODE_ERRORS:
            raise InvalidOAuthCodeError() from None
        raise _upstream(error) from None
    return result


@dataclass(frozen=True)
class MemberZone:
    """What the member zone shows a member."""

    share_scene: Scene
    oa_scene: Scene
    #: How long the member's QR code should live; None for a permanent one.
    oa_expire_seconds: int | None
    leads: int
    team_direct: int
    team_indirect: int


def member_zone(sess: Session, member: Member) -> MemberZone:
    """The member's share link scene, QR scene and counts (for display; nothing rewards headcount)."""
    share = scene_for_share(sess, member.id, Channel.h5_link)
    oa_scene, expire_seconds = member_oa_scene(sess, member.id)
    leads = sess.scalar(select(func.count()).select_from(Lead).where(Lead.sharer_id == member.id)) or 0
    direct, indirect = (
        sess.scalar(select(func.count()).select_from(Binding).where(column == member.id)) or 0
        for column in (Binding.inviter_id, Binding.upline_id)
    )
    return MemberZone(share, oa_scene, expire_seconds, leads, direct, indirect)


# -- the menu -------------------------------------------------------------------------------------


def build_menu(public_base_url: str, miniprogram_appid: str, pagepath: str) -> dict[str, Any]:
    """The account's menu: the member zone (H5, through OAuth) and the mini-program itself."""
    base = public_base_url.rstrip("/")
    return {
        "button": [
            {"type": "view", "name": "会员专区", "url": f"{base}/h5/member"},
            # WeChat clients too old for mini-programs open ``url`` instead.
            {"type": "miniprogram", "name": "进入商城", "url": f"{base}/h5/member", "appid": miniprogram_appid,
             "pagepath": pagepath},
        ]
    }
