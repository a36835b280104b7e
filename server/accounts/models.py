"""Members (WeChat users), staff, bearer-token sessions and the staff audit log."""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class MemberStatus(str, enum.Enum):
    active = "active"
    disabled = "disabled"


class StaffRole(str, enum.Enum):
    owner = "owner"
    operations = "operations"
    finance = "finance"


class SubjectType(str, enum.Enum):
    member = "member"
    staff = "staff"


class Member(Base):
    """A WeChat user of the mini-program: buyer, and distributor once approved."""

    __tablename__ = "members"
    #: New members per day on the dashboard.
    __table_args__ = (Index("ix_members_created", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The user's id within our mini-program's appid (from jscode2session).
    openid: Mapped[str] = mapped_column(String(64), unique=True)
    #: The user's id across the merchant's WeChat apps; links mini-program and official account.
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    nickname: Mapped[str] = mapped_column(String(64), default="")
    avatar_url: Mapped[str] = mapped_column(String(512), default="")
    #: The phone number encrypted with a key derived from SECRET_KEY; never returned in full.
    phone_ciphertext: Mapped[str | None] = mapped_column(String(255))
    #: Keyed digest of the phone number, so a number can be matched without decrypting.
    phone_digest: Mapped[str | None] = mapped_column(String(64), index=True)
    #: What the API shows, e.g. 138****8000.
    phone_masked: Mapped[str | None] = mapped_column(String(32))
    #: The latest WeChat session_key, encrypted; it never leaves the server.
    session_key_ciphertext: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[MemberStatus] = mapped_column(enum_column(MemberStatus, "member_status"), default=MemberStatus.active)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Staff(Base):
    """A merchant's staff account for the web console."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    #: Werkzeug's salted scrypt hash.
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[StaffRole] = mapped_column(enum_column(StaffRole, "staff_role"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuthSession(Base):
    """One issued bearer token; revoking the row revokes the token."""

    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_subject", "subject_type", "subject_id"),)

    #: Random id carried inside the signed token.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject_type: Mapped[SubjectType] = mapped_column(enum_column(SubjectType, "subject_type"))
    #: members.id or staff.id, by subject_type.
    subject_id: Mapped[int] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    client_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")


class AuditEntry(Base):
    """What a staff member (or an operator at the CLI) changed, and why. Append-only."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: Null when the change came from the command line.
    staff_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"))
    action: Mapped[str] = mapped_column(String(64))
    #: What was changed, e.g. "staff:3" or "member:42".
    target: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)



class ExportState(str, enum.Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class ExportJob(Base):
    """A console list exported in the background because it has too many rows to stream at once.

    The file is written to ``EXPORT_DIR`` under a temporary name and renamed when complete; only the
    staff member who asked may download it, until ``expires_at``.
    """

    __tablename__ = "export_jobs"
    __table_args__ = (
        Index("ix_export_jobs_staff", "staff_id", "id"),
        Index("ix_export_jobs_state", "state", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    staff_id: Mapped[int] = mapped_column(BigId, ForeignKey("staff.id"))
    #: Which console list: "orders", "members", "leads", … (``server.console.export_pages.LISTS``).
    list_name: Mapped[str] = mapped_column(String(32))
    #: The list's filters as they were in the page's URL (only the list's own filter names).
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: "csv" or "xlsx".
    format: Mapped[str] = mapped_column(String(8))
    state: Mapped[ExportState] = mapped_column(enum_column(ExportState, "export_state"), default=ExportState.queued)
    rows_done: Mapped[int] = mapped_column(default=0)
    #: Rows the filters selected when the export was asked for.
    rows_total: Mapped[int] = mapped_column(default=0)
    #: The finished file's name inside EXPORT_DIR (never a path staff typed).
    file_name: Mapped[str | None] = mapped_column(String(128))
    #: Why a failed export failed, for the staff member's list.
    error: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Moved on every batch written: a running export whose heartbeat stops died with its process.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: After this the download answers 410 and the scheduler deletes the file.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
