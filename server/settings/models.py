"""Merchant settings: one row per key the merchant changed; defaults live in code."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The value as JSON, already validated against the key's spec.
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    #: "staff:<id>" or "cli".
    updated_by: Mapped[str] = mapped_column(String(64), default="")


class Mutex(Base):
    """Named rows locked with SELECT … FOR UPDATE, for work that must never run twice at once."""

    __tablename__ = "mutexes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
