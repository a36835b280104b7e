"""Members' posters (/api/v1/referral/posters) and poster templates in the console."""
from __future__ import annotations

import contextlib
import re
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, current_app, request, url_for
from pydantic import Field, StringConstraints

from server import db
from server.accounts.auth import current_member, current_staff, member_required, staff_required
from server.accounts.models import StaffRole
from server.api import Body, NonBlank, parse_body
from server.errors import envelope
from server.posters import services
from server.posters.errors import PosterNotFoundError
from server.posters.models import PosterTemplate
from server.referral.models import Channel
from server.wechat import miniprogram, official_account

bp = Blueprint("posters", __name__, url_prefix="/api/v1/referral")
admin_bp = Blueprint("posters_admin", __name__, url_prefix="/admin/api/v1/poster-templates")

#: What ``secrets.token_urlsafe(24)`` produces; anything else is not a poster.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32}")
#: Posters never change under a token, so clients and CDNs may keep them.
IMAGE_CACHE_CONTROL = "public, max-age=86400, immutable"
#: Base64 of a 1 MiB image plus room for a data: URL prefix.
BACKGROUND_MAX_CHARS = 4 * (services.BACKGROUND_MAX_BYTES // 3 + 1) + 64

ContentType = Annotated[str, StringConstraints(pattern=r"^(?:[a-z][a-z0-9_]{0,15})?$")]
ContentId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{0,64}$")]
Color = Annotated[str, StringConstraints(pattern=r"^#[0-9A-Fa-f]{6}$")]
Name = Annotated[NonBlank, StringConstraints(max_length=64)]
Headline = Annotated[str, StringConstraints(max_length=64)]
BodyText = Annotated[str, StringConstraints(max_length=255)]
Background = Annotated[str, StringConstraints(max_length=BACKGROUND_MAX_CHARS)]
Width = Annotated[int, Field(ge=300, le=2000)]
Height = Annotated[int, Field(ge=300, le=4000)]
Audience = Literal[1, 2, 3]
Layout = dict[str, dict[str, Any]]


class PosterBody(Body):
    template_id: int | None = Field(None, ge=1, le=services.MAX_ROW_ID)
    content_type: ContentType = ""
    content_id: ContentId = ""
    channel: Literal["miniprogram_code", "moments_poster", "h5_link", "official_account_qr"] = "miniprogram_code"


class TemplateBody(Body):
    name: Name
    width: Width = 750
    height: Height = 1334
    background_color: Color = "#F6F6F6"
    #: Base64 (or a data: URL) of a PNG or JPEG.
    background_image: Background | None = None
    headline: Headline = ""
    body_text: BodyText = ""
    layout: Layout = Field(default_factory=dict)
    audience: Audience = 3


class TemplatePatchBody(Body):
    """Fields left out or null are unchanged; ``background_image: ""`` removes the background."""

    name: Name | None = None
    width: Width | None = None
    height: Height | None = None
    background_color: Color | None = None
    background_image: Background | None = None
    headline: Headline | None = None
    body_text: BodyText | None = None
    layout: Layout | None = None
    audience: Audience | None = None


def _page(scene: str, page_query: str) -> str:
    query = f"scene={scene}" + (f"&{page_query}" if page_query else "")
    return f"{current_app.config['WECHAT_MINIPROGRAM_PAGE']}?{query}"


def serialize_poster(poster: services.Poster) -> dict[str, Any]:
    base = current_app.config["PUBLIC_BASE_URL"]
    scene = poster.scene.code
    return {
        "scene": scene,
        "image_url": base + url_for("posters.poster_image", token=poster.image.token),
        "page": _page(scene, poster.content.page_query),
        "h5_url": services.h5_url(base, scene),
        "channel": poster.scene.channel.value,
        "template_id": poster.template.id,
        "template_version": poster.template.version,
        "cached": poster.cached,
    }


def serialize_template(template: PosterTemplate) -> dict[str, Any]:
    """A template as a member chooses it."""
    return {
        "id": template.id,
        "name": template.name,
        "version": template.version,
        "width": template.width,
        "height": template.height,
        "headline": template.headline,
        "body_text": template.body_text,
        "is_default": template.is_default,
    }


def serialize_template_admin(template: PosterTemplate, has_background: bool) -> dict[str, Any]:
    data = serialize_template(template)
    data.update(
        {
            "background_color": template.background_color,
            "has_background_image": has_background,
            "layout": template.layout or {},
            "audience": template.audience,
            "active": template.active,
            "created_at": template.created_at.isoformat(),
            "updated_at": template.updated_at.isoformat(),
        }
    )
    return data


def _admin_view(template: PosterTemplate) -> dict[str, Any]:
    with_background = services.templates_with_background(db.session(), [template.id])
    return serialize_template_admin(template, template.id in with_background)


def _png(data: bytes, etag: str) -> Response:
    response = Response(data, mimetype="image/png")
    response.set_etag(etag)
    return response


@bp.post("/posters")
@member_required
def create_poster() -> Any:
    """The member's poster: drawn on first request, then served from the cache."""
    body = parse_body(PosterBody)
    with contextlib.ExitStack() as locks:
        poster = services.get_poster(
            db.session(),
            miniprogram(),
            current_member(),
            template_id=body.template_id,
            content_type=body.content_type,
            content_id=body.content_id,
            channel=Channel(body.channel),
            public_base_url=current_app.config["PUBLIC_BASE_URL"],
            locks=locks,
            # Commits early, by design: nothing is held while the avatar host and WeChat answer.
            commit_early=db.commit,
            oa=official_account(),
        )
        # Commits early, by design: before the render lock is released, so a request waiting on it finds the row.
        db.commit()
    return envelope(serialize_poster(poster))


@bp.get("/posters/<token>.png")
def poster_image(token: str) -> Any:
    """The poster image; the unguessable token is the permission, so <image> and wx.downloadFile need no header."""
    png = services.poster_png(db.session(), token) if TOKEN_RE.fullmatch(token) else None
    if png is None:
        raise PosterNotFoundError()
    response = _png(png, token)
    response.headers["Cache-Control"] = IMAGE_CACHE_CONTROL
    return response.make_conditional(request)


@bp.get("/poster-templates")
@member_required
def member_templates() -> Any:
    templates = services.member_templates(db.session(), current_member().id)
    return envelope({"items": [serialize_template(t) for t in templates]})


@admin_bp.get("")
@staff_required(StaffRole.operations)
def list_templates() -> Any:
    sess = db.session()
    templates = services.list_templates(sess)
    with_background = services.templates_with_background(sess, [t.id for t in templates])
    return envelope({"items": [serialize_template_admin(t, t.id in with_background) for t in templates]})


@admin_bp.post("")
@staff_required(StaffRole.operations)
def create_template() -> Any:
    body = parse_body(TemplateBody)
    template = services.create_template(db.session(), body.model_dump(), staff_id=current_staff().id)
    return envelope(_admin_view(template), status=201)


@admin_bp.get("/<int:template_id>")
@staff_required(StaffRole.operations)
def get_template(template_id: int) -> Any:
    return envelope(_admin_view(services.get_template(db.session(), template_id)))


@admin_bp.patch("/<int:template_id>")
@staff_required(StaffRole.operations)
def patch_template(template_id: int) -> Any:
    body = parse_body(TemplatePatchBody)
    sess = db.session()
    template = services.get_template(sess, template_id)
    changes = {name: value for name, value in body.model_dump().items() if value is not None}
    services.update_template(sess, template, changes, staff_id=current_staff().id)
    return envelope(_admin_view(template))


@admin_bp.post("/<int:template_id>/default")
@staff_required(StaffRole.operations)
def set_default(template_id: int) -> Any:
    sess = db.session()
    with contextlib.ExitStack() as locks:
        template = services.set_default_template(
            sess, services.get_template(sess, template_id), staff_id=current_staff().id, locks=locks
        )
        # Commits early, by design: before the default-template lock is released, so the next holder sees this default.
        db.commit()
    return envelope(_admin_view(template))


@admin_bp.post("/<int:template_id>/deactivate")
@staff_required(StaffRole.operations)
def deactivate(template_id: int) -> Any:
    sess = db.session()
    template = services.set_template_active(sess, services.get_template(sess, template_id), False, staff_id=current_staff().id)
    return envelope(_admin_view(template))


@admin_bp.post("/<int:template_id>/activate")
@staff_required(StaffRole.operations)
def activate(template_id: int) -> Any:
    sess = db.session()
    template = services.set_template_active(sess, services.get_template(sess, template_id), True, staff_id=current_staff().id)
    return envelope(_admin_view(template))


@admin_bp.get("/<int:template_id>/preview.png")
@staff_required(StaffRole.operations)
def preview(template_id: int) -> Any:
    """The template drawn with sample data; not stored, no WeChat call."""
    template = services.get_template(db.session(), template_id)
    png = services.preview_poster(template, current_app.config["PUBLIC_BASE_URL"])
    response = _png(png, f"{template.id}-{template.version}")
    response.headers["Cache-Control"] = "private, no-cache"
    return response.make_conditional(request)

