"""The lead timeline: every touch a person makes on the way from a share to an order."""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class TouchKind(str, enum.Enum):
    visit = "visit"
    scan = "scan"
    sign_in = "sign_in"
    bind = "bind"
    lead = "lead"


class TouchEvent(Base):
    """One event in a person's lead timeline. Append-only."""

    __tablename__ = "touch_events"
    __table_args__ = (Index("ix_touch_events_member_time", "member_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: Null for an anonymous visit that has not signed in yet.
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"))
    kind: Mapped[TouchKind] = mapped_column(enum_column(TouchKind, "touch_kind"))
    #: The scene the person arrived with, as given (it may be unknown or revoked).
    scene: Mapped[str | None] = mapped_column(String(32), index=True)
    #: Where the touch came from: miniprogram, h5, official_account, ...
    channel: Mapped[str] = mapped_column(String(32), default="")
    #: Who caused it: "member:<id>", "staff:<id>" or "system".
    actor: Mapped[str] = mapped_column(String(64), default="system")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
