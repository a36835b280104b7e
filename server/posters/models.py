"""Poster templates the merchant designs, and the rendered posters cached per member."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.dialects.mysql import LONGBLOB
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, utcnow

#: Image bytes: LONGBLOB on MySQL/MariaDB (a plain BLOB stops at 64 KiB); the services cap the size.
ImageBlob = LargeBinary().with_variant(LONGBLOB(), "mysql", "mariadb")


class PosterTemplate(Base):
    """A poster design: background, text and where the code, avatar and nickname go."""

    __tablename__ = "poster_templates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    #: Bumped on every change, so cached posters of the old design are re-rendered.
    version: Mapped[int] = mapped_column(default=1)
    width: Mapped[int] = mapped_column(default=750)
    height: Mapped[int] = mapped_column(default=1334)
    #: "#RRGGBB" behind everything.
    background_color: Mapped[str] = mapped_column(String(9), default="#FFFFFF")
    #: An uploaded background image (PNG or JPEG), drawn over the colour; none for the built-in look.
    background_image: Mapped[bytes | None] = mapped_column(ImageBlob, deferred=True)
    headline: Mapped[str] = mapped_column(String(64), default="")
    body_text: Mapped[str] = mapped_column(String(255), default="")
    #: Boxes and colours of the elements, see server.posters.render.DEFAULT_LAYOUT.
    layout: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: 1: only tier-1 distributors see it; 2: every distributor; 3: every member.
    audience: Mapped[int] = mapped_column(default=3)
    is_default: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PosterImage(Base):
    """A rendered poster, cached per (member, template version, content, variant)."""

    __tablename__ = "poster_images"
    __table_args__ = (
        UniqueConstraint("member_id", "template_id", "template_version", "content_key", "variant", name="cache_key"),
        Index("ix_poster_images_member", "member_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    template_id: Mapped[int] = mapped_column(BigId, ForeignKey("poster_templates.id"))
    template_version: Mapped[int]
    #: What the poster advertises, e.g. "product:12"; "" for the shop.
    content_key: Mapped[str] = mapped_column(String(96), default="")
    #: The channel's drawing, see server.posters.services.VARIANTS: "miniprogram", "h5", "moments",
    #: "oa" or "oa-<seconds>" (a temporary official-account code).
    variant: Mapped[str] = mapped_column(String(16))
    scene_code: Mapped[str] = mapped_column(String(32), ForeignKey("scenes.code"))
    #: Random, unguessable name under which the image is served.
    token: Mapped[str] = mapped_column(String(32), unique=True)
    content_type: Mapped[str] = mapped_column(String(32), default="image/png")
    image: Mapped[bytes] = mapped_column(ImageBlob, deferred=True)
    #: Milliseconds the render took, for the operator's eye.
    render_ms: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
