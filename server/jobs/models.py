"""The jobs table: follow-up work written in the same transaction as the change that needs it (an outbox).

A row is durable exactly when the change commits, and is gone when the change rolls back. Drainers
(server/jobs/queue.py) take rows, run them in units of work of their own and delete them with the
work's commit: the table holds only what is still to do and what failed for good, so it stays small.
"""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class JobState(str, enum.Enum):
    #: Waiting for a drainer (first time, or again after a failure, from ``run_after``).
    queued = "queued"
    #: Taken by a drainer until ``run_after``; after that another drainer may take it again.
    running = "running"
    #: Given up after ``MAX_ATTEMPTS`` tries; kept, counted and listed until retried or purged.
    failed = "failed"


class Job(Base):
    """One piece of follow-up work: a ``kind`` (its handler) and a reference (an order id)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_run_after", "state", "run_after"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str] = mapped_column(String(64))
    #: ``kind:ref`` while the job waits untaken, NULL from its first claim on: the same work is queued
    #: once while it waits, and a change made while it runs queues it again (so it sees that change).
    pending_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    state: Mapped[JobState] = mapped_column(enum_column(JobState, "job_state"), default=JobState.queued)
    #: Tries so far, counted when a drainer takes the job (so a job that kills its process is counted too).
    attempts: Mapped[int] = mapped_column(default=0)
    #: When the job may next be taken: queued, once its backoff is over; running, once its lease ends.
    run_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The claim that holds it (host:pid:token); the outcome is recorded only under the same claim.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    #: The last failure: its exception type and message, cut to fit.
    last_error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When it failed for good.
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
