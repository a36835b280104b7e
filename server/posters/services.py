"""Poster templates, the content a poster advertises, and each member's poster, rendered once.

A member's poster is cached as a PosterImage row per (member, template id and
version, content, variant) and its PNG in Redis under the row's token. Services
flush and never commit; ``get_poster`` holds its render lock in the caller's
ExitStack, which the caller closes after committing, so a request waiting on the
same poster finds the committed row instead of rendering it again.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import logging
import re
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import redis
import requests
from flask import current_app
from requests.adapters import HTTPAdapter
from sqlalchemy import and_, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, undefer

from server import cache
from server.accounts import (
    services as accounts,  # a module, so accounts.services may import this one
)
from server.accounts.models import Member
from server.db import after_commit, utcnow
from server.errors import UpstreamError, ValidationError
from server.posters import render
from server.posters.errors import (
    ChannelNotSupportedError,
    ContentNotFoundError,
    DefaultTemplateError,
    InvalidBackgroundError,
    InvalidLayoutError,
    TemplateNotFoundError,
    UnknownContentTypeError,
)
from server.posters.models import PosterImage, PosterTemplate
from server.referral.models import Channel, Scene
from server.referral.official_account import (
    QR_CACHE_MIN_LIFE_SHARE,
    oa_qr_expire_seconds,
    scene_qrcode,
)
from server.referral.services import scene_for_share, scene_state
from server.wechat.client import (
    MiniProgram,
    OfficialAccount,
    WeChatError,
    WeChatUnavailableError,
)

logger = logging.getLogger(__name__)

#: Each channel's poster, cached apart (each carries its own channel's scene). The code on it:
#: a mini-program code ("miniprogram"), a QR of the H5 landing link ("h5", "moments") or the
#: official account's parametric QR code ("oa"; "oa-<seconds>" when the code is temporary, so
#: a change of ``oa_qr_expire_days`` draws the poster again).
VARIANTS = {
    Channel.miniprogram_code: "miniprogram",
    Channel.h5_link: "h5",
    Channel.moments_poster: "moments",
    Channel.official_account_qr: "oa",
}
#: Template audiences: 1 tier-1 distributors, 2 every distributor, 3 every member.
AUDIENCES = (1, 2, 3)
EVERYONE = 3

#: Ids are BIGINT on MySQL; a larger number names no row (and SQLite cannot even bind it).
MAX_ROW_ID = 2**63 - 1
CONTENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,15}")
CONTENT_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")

AVATAR_TIMEOUT = 1.5
AVATAR_MAX_BYTES = 1024 * 1024
BACKGROUND_MAX_BYTES = 1024 * 1024
#: Longer than a WeChat call (5 s) plus a render, so a lock never expires under a working render.
LOCK_SECONDS = 15.0
#: Serialises creating the built-in default and changing which template is the default.
DEFAULT_TEMPLATE_LOCK = "poster-default-template"
#: WeChat draws codes 280 to 1280 px wide.
CODE_WIDTH_RANGE = (280, 1280)

#: Template fields that change the picture: changing one bumps the version.
RENDERED_FIELDS = ("width", "height", "background_color", "background_image", "headline", "body_text", "layout")
TEMPLATE_FIELDS = ("name", "audience", *RENDERED_FIELDS)

#: The design every merchant starts with; its boxes are render.DEFAULT_LAYOUT.
BUILTIN_TEMPLATE: dict[str, Any] = {
    "name": "默认海报",
    "headline": "好物分享",
    "body_text": "精选好物 · 品质保障 · 会员专享优惠\n扫码或长按识别，和我一起逛逛",
    "background_color": "#F6F6F6",
    "layout": {},
    "audience": EVERYONE,
}


# -- content ---------------------------------------------------------------------


@dataclass(frozen=True)
class ContentInfo:
    """What a poster advertises: its title and subtitle, and what the mini-program page needs."""

    title: str
    subtitle: str = ""
    #: Appended to the mini-program page's query, e.g. "id=12"; the scene already names the content.
    page_query: str = ""


#: Looks up one item of a content type by id; None when there is no such item.
ContentResolver = Callable[[Session, str], "ContentInfo | None"]

#: The shop itself (content type ""): what every member can share without choosing anything.
SHOP_CONTENT = ContentInfo(title="我发现了一家好店，推荐给你", subtitle="精选好物 · 会员专享")

_resolvers: dict[str, ContentResolver] = {}


def register_content(content_type: str, resolver: ContentResolver) -> None:
    """Let posters advertise ``content_type`` (e.g. "product"); each package registers its own."""
    if not CONTENT_TYPE_RE.fullmatch(content_type):
        raise ValueError(f"content type must match {CONTENT_TYPE_RE.pattern}: {content_type!r}")
    _resolvers[content_type] = resolver


def unregister_content(content_type: str) -> None:
    _resolvers.pop(content_type, None)


def resolve_content(sess: Session, content_type: str, content_id: str) -> ContentInfo:
    """The content a poster advertises; 422 for an unknown type, 404 for an unknown item."""
    if not content_type:
        if content_id:
            raise ValidationError(data={"errors": [{"field": "content_id", "error": "must be empty without a content_type"}]})
        return SHOP_CONTENT
    resolver = _resolvers.get(content_type)
    if resolver is None:
        error = {"field": "content_type", "error": f"unknown content type {content_type!r}"}
        raise UnknownContentTypeError(data={"errors": [error]})
    if not content_id:
        raise ValidationError(data={"errors": [{"field": "content_id", "error": f"required for content type {content_type!r}"}]})
    info = resolver(sess, content_id)
    if info is None:
        raise ContentNotFoundError()
    return info


def content_key(content_type: str, content_id: str) -> str:
    """How a poster row names its content: "product:12", or "" for the shop."""
    return f"{content_type}:{content_id}" if content_type else ""


# -- templates -------------------------------------------------------------------


def visible_audiences(sess: Session, member_id: int) -> frozenset[int]:
    """The template audiences this member may use.

    Everyone sees audience 3. Distributor tiers (1, 2) are the distribution package's to decide;
    until it says, members see audience 3 only.
    """
    return frozenset({EVERYONE})


def default_template(sess: Session, *, locks: contextlib.ExitStack) -> PosterTemplate:
    """The active default template; the built-in design is created on first use.

    ``locks`` holds the lock that keeps two first posters from creating two defaults; close it
    after committing.
    """
    found = _current_default(sess)
    if found is not None:
        return found
    locks.enter_context(_lock(DEFAULT_TEMPLATE_LOCK))
    found = _current_default(sess)
    if found is not None:
        return found
    template = PosterTemplate(**BUILTIN_TEMPLATE, is_default=True)
    sess.add(template)
    sess.flush()
    return template


# Built once, with the cached poster's read below: every poster request runs them.
_CURRENT_DEFAULT = (
    select(PosterTemplate)
    .where(PosterTemplate.is_default.is_(True), PosterTemplate.active.is_(True))
    .order_by(PosterTemplate.updated_at.desc(), PosterTemplate.id.desc())
    .limit(1)
)
_CACHED_POSTER = (
    select(PosterImage, Scene)
    .join(Scene, Scene.code == PosterImage.scene_code)
    .where(
        PosterImage.member_id == bindparam("member_id"),
        PosterImage.template_id == bindparam("template_id"),
        PosterImage.template_version == bindparam("version"),
        PosterImage.content_key == bindparam("content"),
        PosterImage.variant == bindparam("variant"),
    )
)

#: The member's poster from the current default template, with its scene and the template, in one read:
#: what most poster requests (no template chosen) are answered with.
_CACHED_DEFAULT_POSTER = (
    select(PosterImage, Scene, PosterTemplate)
    .join(Scene, Scene.code == PosterImage.scene_code)
    .join(PosterTemplate, and_(PosterTemplate.id == PosterImage.template_id, PosterTemplate.version == PosterImage.template_version))
    .where(
        PosterTemplate.id == _CURRENT_DEFAULT.with_only_columns(PosterTemplate.id).scalar_subquery(),
        PosterImage.member_id == bindparam("member_id"),
        PosterImage.content_key == bindparam("content"),
        PosterImage.variant == bindparam("variant"),
    )
)


#: A poster about to be drawn needs the background too: read with the template, not after it.
_CURRENT_DEFAULT_TO_DRAW = _CURRENT_DEFAULT.options(undefer(PosterTemplate.background_image))


def _current_default(sess: Session) -> PosterTemplate | None:
    return sess.scalars(_CURRENT_DEFAULT_TO_DRAW).first()


def member_templates(sess: Session, member_id: int) -> list[PosterTemplate]:
    """Active templates the member may choose, the default first."""
    return list(
        sess.scalars(
            select(PosterTemplate)
            .where(PosterTemplate.active.is_(True), PosterTemplate.audience.in_(visible_audiences(sess, member_id)))
            .order_by(PosterTemplate.is_default.desc(), PosterTemplate.id)
        )
    )


def template_for_member(sess: Session, member_id: int, template_id: int) -> PosterTemplate:
    """A template the member may use; 404 if it does not exist, is inactive or is not for them."""
    template = (
        sess.get(PosterTemplate, template_id, options=[undefer(PosterTemplate.background_image)])
        if 1 <= template_id <= MAX_ROW_ID else None
    )
    if template is None or not template.active or template.audience not in visible_audiences(sess, member_id):
        raise TemplateNotFoundError()
    return template


def get_template(sess: Session, template_id: int) -> PosterTemplate:
    template = sess.get(PosterTemplate, template_id) if 1 <= template_id <= MAX_ROW_ID else None
    if template is None:
        raise TemplateNotFoundError()
    return template


def list_templates(sess: Session) -> list[PosterTemplate]:
    """Every template, active ones first, for the console."""
    return list(sess.scalars(select(PosterTemplate).order_by(PosterTemplate.active.desc(), PosterTemplate.id)))


def templates_with_background(sess: Session, template_ids: list[int]) -> set[int]:
    """Which of these templates have a background image, without loading the images."""
    if not template_ids:
        return set()
    return set(
        sess.scalars(
            select(PosterTemplate.id).where(PosterTemplate.id.in_(template_ids), PosterTemplate.background_image.is_not(None))
        )
    )


def prepare_background(data: str) -> bytes:
    """An uploaded background (base64, or a data: URL) checked and re-encoded; 422 if it is not a PNG or JPEG."""
    def refuse(reason: str) -> InvalidBackgroundError:
        return InvalidBackgroundError(data={"errors": [{"field": "background_image", "error": reason}]})

    payload = data.split(",", 1)[1] if data.startswith("data:") else data
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise refuse("not base64") from None
    if not raw:
        raise refuse("empty")
    if len(raw) > BACKGROUND_MAX_BYTES:
        raise refuse(f"larger than {BACKGROUND_MAX_BYTES} bytes")
    try:
        image = render.decode_image(raw)
    except Exception as error:  # Pillow raises many types for a file that is not an image
        raise refuse(f"not a PNG or JPEG image ({type(error).__name__})") from None
    return render.reencode(image)[0]


def _apply_template_fields(template: PosterTemplate, fields: Mapping[str, Any]) -> list[str]:
    """Set ``fields`` on ``template`` after checking them together; returns the names that changed."""
    unknown = set(fields) - set(TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(f"not template fields: {sorted(unknown)}")
    errors: list[dict[str, str]] = []
    if "background_color" in fields and not render.COLOR_RE.fullmatch(fields["background_color"]):
        errors.append({"field": "background_color", "error": "must be a colour like #F6F6F6"})
    if "audience" in fields and fields["audience"] not in AUDIENCES:
        errors.append({"field": "audience", "error": "must be 1, 2 or 3"})
    if errors:
        raise ValidationError(data={"errors": errors})
    width, height = fields.get("width", template.width), fields.get("height", template.height)
    layout = fields.get("layout", template.layout)
    try:
        render.resolve_layout(layout, width, height)
    except render.LayoutError as error:
        raise InvalidLayoutError(data={"errors": error.errors}) from None

    changed = []
    for name, value in fields.items():
        if name == "background_image":
            value = prepare_background(value) if value else None
        if getattr(template, name) != value:
            setattr(template, name, value)
            changed.append(name)
    return changed


def _blank_template() -> PosterTemplate:
    return PosterTemplate(
        name=BUILTIN_TEMPLATE["name"],
        version=1,
        width=render.DESIGN_WIDTH,
        height=render.DESIGN_HEIGHT,
        background_color=BUILTIN_TEMPLATE["background_color"],
        headline="",
        body_text="",
        layout={},
        audience=EVERYONE,
        is_default=False,
        active=True,
    )


def create_template(sess: Session, fields: Mapping[str, Any], *, staff_id: int | None) -> PosterTemplate:
    """A new, active, non-default template; the built-in design fills what ``fields`` leaves out."""
    template = _blank_template()
    _apply_template_fields(template, fields)
    sess.add(template)
    sess.flush()
    accounts.record_audit(sess, staff_id, "poster_template.create", f"poster_template:{template.id}", {"name": template.name})
    return template


def update_template(
    sess: Session, template: PosterTemplate, changes: Mapping[str, Any], *, staff_id: int | None
) -> PosterTemplate:
    """Change a template; a change to the picture bumps its version, so posters are drawn anew."""
    changed = _apply_template_fields(template, changes)
    if any(name in RENDERED_FIELDS for name in changed):
        template.version += 1
        # Posters of the old design will never be served again.
        forget_posters(sess, PosterImage.template_id == template.id, PosterImage.template_version < template.version)
    sess.flush()
    if changed:
        accounts.record_audit(
            sess, staff_id, "poster_template.update", f"poster_template:{template.id}",
            {"fields": changed, "version": template.version},
        )
    return template


def set_default_template(
    sess: Session, template: PosterTemplate, *, staff_id: int | None, locks: contextlib.ExitStack
) -> PosterTemplate:
    """Make ``template`` the one posters use when the member picks none; it must be active and for everyone.

    ``locks`` is as for ``default_template``.
    """
    if not template.active:
        raise ValidationError(data={"errors": [{"field": "active", "error": "an inactive template cannot be the default"}]})
    if template.audience != EVERYONE:
        raise ValidationError(data={"errors": [{"field": "audience", "error": "the default template must be for everyone (3)"}]})
    locks.enter_context(_lock(DEFAULT_TEMPLATE_LOCK))
    sess.execute(
        update(PosterTemplate)
        .where(PosterTemplate.is_default.is_(True), PosterTemplate.id != template.id)
        .values(is_default=False)
        .execution_options(synchronize_session="fetch")
    )
    template.is_default = True
    sess.flush()
    accounts.record_audit(sess, staff_id, "poster_template.set_default", f"poster_template:{template.id}")
    return template


def set_template_active(sess: Session, template: PosterTemplate, active: bool, *, staff_id: int | None) -> PosterTemplate:
    """Offer or withdraw a template; the default cannot be withdrawn."""
    if not active and template.is_default:
        raise DefaultTemplateError()
    if template.active != active:
        template.active = active
        if not active:
            forget_posters(sess, PosterImage.template_id == template.id)
        action = "poster_template.activate" if active else "poster_template.deactivate"
        accounts.record_audit(sess, staff_id, action, f"poster_template:{template.id}")
    sess.flush()
    return template


def draft_template(base: PosterTemplate | None, fields: Mapping[str, Any]) -> PosterTemplate:
    """``base`` (or a new template) with ``fields`` applied and checked as a save would, for a preview
    of unsaved changes: a copy that is never added to the session, so nothing is stored."""
    draft = _blank_template()
    if base is not None:
        for name in TEMPLATE_FIELDS:
            setattr(draft, name, getattr(base, name))
    _apply_template_fields(draft, fields)
    return draft


def preview_poster(template: PosterTemplate, public_base_url: str) -> bytes:
    """The template drawn with sample data, for the console; nothing is stored and WeChat is not called."""
    return render.render_poster(
        _spec(template, SHOP_CONTENT, nickname="示例会员", avatar=None, qr_data=f"{public_base_url}/s/PREVIEW0000000000")
    )


# -- members' posters --------------------------------------------------------------


@dataclass(frozen=True)
class Poster:
    """A member's poster and what it was made of; ``cached`` when it was not drawn by this call."""

    image: PosterImage
    scene: Scene
    template: PosterTemplate
    content: ContentInfo
    cached: bool


def variant_for(channel: Channel) -> str:
    """The poster variant of ``channel`` (see VARIANTS); 422 for a channel that has no poster."""
    variant = VARIANTS.get(channel)
    if variant is None:
        reason = f"channel {channel.value} has no poster"
        raise ChannelNotSupportedError(data={"errors": [{"field": "channel", "error": reason}]})
    return variant


def h5_url(public_base_url: str, scene_code: str) -> str:
    return f"{public_base_url}/s/{scene_code}"


def get_poster(
    sess: Session,
    mp: MiniProgram,
    member: Member,
    *,
    template_id: int | None = None,
    content_type: str = "",
    content_id: str = "",
    channel: Channel = Channel.miniprogram_code,
    public_base_url: str,
    locks: contextlib.ExitStack,
    commit_early: Callable[[], None],
    oa: OfficialAccount | None = None,
) -> Poster:
    """The member's poster for this template, content and channel: the cached one, or drawn now.

    ``locks`` receives the lock that keeps concurrent identical requests from drawing twice;
    close it after committing. A WeChat failure is UpstreamError and stores nothing.

    Has the caller commit early when it draws, by design: ``commit_early`` is the caller's
    ``db.commit``, and ``sess`` the session it commits. The template, content and scene are read
    (and created where needed) and committed first; no transaction is open while the avatar is
    fetched, WeChat draws the mini-program code or the poster is rendered; the new poster row is
    added afterwards, for the caller to commit. ``oa`` is the official account whose QR code an
    ``official_account_qr`` poster carries.
    """
    variant = variant_for(channel)
    if variant == "oa" and oa is None:
        raise ValueError("an official-account poster needs the official account")
    looked = False
    if template_id is None and variant != "oa":
        # Most requests: the default template's poster, drawn before. Read with the template in one go;
        # the content is checked once a poster is found, so a request that finds none is refused (or
        # drawn) in the order the full path below takes: template first, then content.
        row = sess.execute(_CACHED_DEFAULT_POSTER, {"member_id": member.id, "content": content_key(content_type, content_id), "variant": variant}).first()
        if row is not None:
            content = resolve_content(sess, content_type, content_id)
            if _still_works(sess, row[0], row[1], channel, None):
                return Poster(row[0], row[1], row[2], content, cached=True)
        # None for the current default's key (or a stale one, now forgotten): not worth asking again
        # until the render lock is held.
        looked = True
    if template_id is None:
        template = default_template(sess, locks=locks)
    else:
        template = template_for_member(sess, member.id, template_id)
    content = resolve_content(sess, content_type, content_id)
    oa_expire_seconds = oa_qr_expire_seconds(sess) if variant == "oa" else None
    cache_variant = f"oa-{oa_expire_seconds}" if oa_expire_seconds else variant
    key = (member.id, template.id, template.version, content_key(content_type, content_id), cache_variant)

    found = None if looked else _cached_poster(sess, key, channel, oa_expire_seconds)
    if found is not None:
        return Poster(found[0], found[1], template, content, cached=True)
    scene = scene_for_share(sess, member.id, channel, content_type, content_id)
    nickname, avatar_url = member.nickname, member.avatar_url
    _ = template.background_image  # read with the template; else loaded now: after the commit it would open a transaction again
    # Nothing is held from here until the new row is added: not on the avatar host, not on WeChat.
    # (A commit, not a rollback, so the objects read so far stay loaded and are not read again.)
    commit_early()
    # Fetched before the lock: a slow avatar host must not hold up other members' requests.
    avatar = fetch_avatar(avatar_url, allow_loopback=_loopback_allowed()) if avatar_url else None
    if locks.enter_context(_lock("poster:" + "|".join(map(str, key)))):
        found = _cached_poster(sess, key, channel, oa_expire_seconds)
        if found is not None:
            return Poster(found[0], found[1], template, content, cached=True)
        commit_early()  # the look is a transaction too (on SQLite one that blocks every writer)

    started = time.perf_counter()
    if variant == "miniprogram":
        code = _miniprogram_code(mp, scene.code, _code_width(template))
        spec = _spec(template, content, nickname=nickname, avatar=avatar, code_png=code)
    elif variant == "oa":
        # WeChat's ticket URL is what its own QR image encodes; drawn here, it needs no image download.
        assert oa is not None
        qr = scene_qrcode(oa, scene.code, oa_expire_seconds)
        spec = _spec(template, content, nickname=nickname, avatar=avatar, qr_data=qr.qrcode_url)
    else:
        spec = _spec(template, content, nickname=nickname, avatar=avatar, qr_data=h5_url(public_base_url, scene.code))
    try:
        png = render.render_poster(spec)
    except render.CodeImageError:
        logger.warning("WeChat returned a code that is not an image")
        raise UpstreamError() from None
    image = PosterImage(
        member_id=member.id,
        template_id=template.id,
        template_version=template.version,
        content_key=key[3],
        variant=cache_variant,
        scene_code=scene.code,
        token=secrets.token_urlsafe(24),
        content_type="image/png",
        image=png,
        render_ms=round((time.perf_counter() - started) * 1000),
    )
    sess.add(image)
    try:
        sess.flush()
    except IntegrityError:
        # Drawn meanwhile by a worker that could not take the lock in time: serve that one. Everything this
        # request wrote before was committed early, so the transaction holds only the refused row: rolled back
        # whole, with no savepoint to open on the way.
        sess.rollback()
        found = _cached_poster(sess, key, channel, oa_expire_seconds)
        if found is None:
            raise
        return Poster(found[0], found[1], template, content, cached=True)
    after_commit(lambda: _remember_png(image.token, png))
    return Poster(image, scene, template, content, cached=False)


def _cached_poster(
    sess: Session, key: tuple[int, int, int, str, str], channel: Channel, oa_expire_seconds: int | None
) -> tuple[PosterImage, Scene] | None:
    """The cached poster of ``key`` while it still works; a stale one is forgotten.

    A poster is stale when its scene no longer binds, when its scene is another channel's (the
    H5 channels once shared one drawing), or when it carries a temporary official-account QR
    code that may have expired: a code taken from the cache has at least the share of its
    life that makes it fresh there left, so the poster is kept for that long.
    """
    member_id, template_id, version, content, variant = key
    row = sess.execute(_CACHED_POSTER, {"member_id": member_id, "template_id": template_id, "version": version, "content": content, "variant": variant}).first()
    if row is None:
        return None
    image, scene = row
    return (image, scene) if _still_works(sess, image, scene, channel, oa_expire_seconds) else None


def _still_works(sess: Session, image: PosterImage, scene: Scene, channel: Channel, oa_expire_seconds: int | None) -> bool:
    """Whether a cached poster may be served (see ``_cached_poster``); a stale one is forgotten."""
    stale = scene_state(scene) is not None or scene.channel != channel
    if oa_expire_seconds is not None:
        lifetime = timedelta(seconds=oa_expire_seconds * QR_CACHE_MIN_LIFE_SHARE)
        stale = stale or image.created_at + lifetime <= utcnow()
    if stale:
        # Its code would bind nobody, or not as this channel: draw a new one.
        forget_posters(sess, PosterImage.id == image.id)
        sess.expunge(image)
    return not stale


@contextlib.contextmanager
def _lock(name: str) -> Iterator[bool]:
    """``cache.lock`` that yields whether it was taken, rather than failing the request.

    Without Redis (or while it is away), ``cache.lock`` takes the lock in the database, on a
    connection of its own, so the early commits in ``get_poster`` do not release it.

    Held until the caller has committed, so whoever waited sees the committed rows when it
    looks again. Not taken in time, the request goes on: a poster's unique key still keeps one
    row, and at worst a second default template is drawn from.
    """
    held = cache.lock(name, timeout=LOCK_SECONDS)
    try:
        held.__enter__()
    except (TimeoutError, redis.exceptions.LockError):
        logger.warning("lock %s not taken in %ss; going on without it", name, LOCK_SECONDS)
        yield False
        return
    try:
        yield True
    finally:
        try:
            held.__exit__(None, None, None)
        except redis.exceptions.LockError:
            logger.warning("lock %s expired before it was released", name)


def _code_width(template: PosterTemplate) -> int:
    """The width to ask WeChat for: the code's box, so the image is placed without resampling."""
    size = render.resolve_layout(template.layout, template.width, template.height)["code"]["size"]
    low, high = CODE_WIDTH_RANGE
    return min(max(size, low), high)


def _miniprogram_code(mp: MiniProgram, scene: str, width: int) -> bytes:
    page = current_app.config["WECHAT_MINIPROGRAM_PAGE"]
    try:
        return mp.get_unlimited_code(scene, page=page, width=width)
    except WeChatUnavailableError:
        raise UpstreamError() from None
    except WeChatError as error:
        logger.warning("WeChat refused a mini-program code: errcode=%s", error.errcode)
        raise UpstreamError(data={"errcode": error.errcode}) from None


def _spec(
    template: PosterTemplate,
    content: ContentInfo,
    *,
    nickname: str,
    avatar: bytes | None,
    code_png: bytes | None = None,
    qr_data: str | None = None,
) -> render.PosterSpec:
    return render.PosterSpec(
        code_png=code_png,
        qr_data=qr_data,
        width=template.width,
        height=template.height,
        background_color=template.background_color,
        background_image=template.background_image,
        headline=template.headline,
        body_text=template.body_text,
        title=content.title,
        subtitle=content.subtitle,
        nickname=nickname,
        avatar=avatar,
        layout=template.layout or {},
    )


def forget_posters(sess: Session, *where: Any) -> int:
    """Delete the poster rows matching ``where``; their cached PNGs go once the deletion commits."""
    tokens = list(sess.scalars(select(PosterImage.token).where(*where)))
    if not tokens:
        return 0
    sess.execute(delete(PosterImage).where(PosterImage.token.in_(tokens)).execution_options(synchronize_session=False))
    after_commit(lambda: _forget_pngs(tokens))
    return len(tokens)


def on_member_profile_changed(sess: Session, *, member: Member) -> None:
    """Handler of ``events.member_profile_changed``: posters show the nickname and avatar, so the next request draws them again."""
    invalidate_member_posters(sess, member.id)


def invalidate_member_posters(sess: Session, member_id: int) -> int:
    """Drop a member's cached posters (after a nickname or avatar change); returns how many."""
    return forget_posters(sess, PosterImage.member_id == member_id)


# -- serving the image ----------------------------------------------------------------


def _png_key(token: str) -> str:
    return f"poster:png:{token}"


def _remember_png(token: str, png: bytes) -> None:
    r = cache.client()
    if r is not None:
        try:
            r.set(_png_key(token), png, ex=current_app.config["POSTER_CACHE_TTL"])
        except redis.RedisError as error:
            cache.failed(error)  # served from the database until Redis answers again


def _forget_pngs(tokens: list[str]) -> None:
    r = cache.client()
    if r is not None:
        try:
            for start in range(0, len(tokens), 500):
                r.delete(*(_png_key(t) for t in tokens[start : start + 500]))
        except redis.RedisError as error:
            # The rows are gone; a cached PNG stays reachable only under its random token, until it expires.
            cache.failed(error)


def poster_png(sess: Session, token: str) -> bytes | None:
    """The PNG served under ``token``: from Redis when it can, else from the database (and back into Redis)."""
    r = cache.client()
    if r is not None:
        try:
            cached = r.get(_png_key(token))
        except redis.RedisError as error:
            cache.failed(error)
            r = None
        else:
            if cached is not None:
                return bytes(cached)  # type: ignore[arg-type]  # redis types get() as sync-or-async; this client is sync
    png = sess.scalar(select(PosterImage.image).where(PosterImage.token == token))
    if png is not None and r is not None:
        try:
            r.set(_png_key(token), png, ex=current_app.config["POSTER_CACHE_TTL"])
        except redis.RedisError as error:
            cache.failed(error)  # the database just answered; Redis is tried again after a pause
    return png


# -- avatars -------------------------------------------------------------------------


def _loopback_allowed() -> bool:
    """Tests and sandbox runs serve avatars from this machine; production never fetches from it."""
    return bool(current_app.testing or current_app.config.get("WECHAT_SANDBOX"))


def _address_allowed(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


class _PinnedAddressAdapter(HTTPAdapter):
    """Connects to the address checked beforehand, whatever DNS answers by then (no rebinding).

    TLS still verifies the certificate against the URL's host name.
    """

    def __init__(self, address: str, hostname: str) -> None:
        super().__init__(max_retries=0)
        self._address = address
        self._hostname = hostname

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = self._address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self._hostname
            pool_kwargs["assert_hostname"] = self._hostname
        return host_params, pool_kwargs


def fetch_avatar(
    url: str,
    *,
    allow_loopback: bool = False,
    timeout: float | None = None,
    max_bytes: int | None = None,
) -> bytes | None:
    """The avatar's bytes, or None on any failure (the poster then draws the member's initial).

    Only http(s), only public addresses (loopback too when ``allow_loopback``), no redirects,
    at most ``max_bytes`` (AVATAR_MAX_BYTES) within ``timeout`` (AVATAR_TIMEOUT) seconds in all.
    """
    try:
        return _fetch(url, allow_loopback, timeout or AVATAR_TIMEOUT, max_bytes or AVATAR_MAX_BYTES)
    except (requests.RequestException, OSError, ValueError) as error:
        logger.info("avatar not fetched from %s: %s", urlsplit(url).hostname, type(error).__name__)
        return None


def _fetch(url: str, allow_loopback: bool, timeout: float, max_bytes: int) -> bytes | None:
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ValueError("not a plain http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = {str(info[4][0]) for info in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)}
    if not addresses or not all(_address_allowed(a, allow_loopback) for a in addresses):
        raise ValueError("the host resolves to an address posters may not fetch from")
    with requests.Session() as http:
        http.trust_env = False  # no proxy from the environment: the checked address is the one used
        http.mount(f"{parts.scheme}://", _PinnedAddressAdapter(sorted(addresses)[0], parts.hostname))
        with http.get(url, headers={"Host": parts.netloc}, timeout=timeout, stream=True, allow_redirects=False) as response:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            if int(response.headers.get("Content-Length") or 0) > max_bytes:
                raise ValueError("too large")
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise ValueError("too large")
                if time.monotonic() > deadline:
                    raise ValueError("too slow")
    return bytes(body)
