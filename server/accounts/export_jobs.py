"""Staff exports of console lists: the audit entry every export leaves, and the background jobs that
write the long ones to ``EXPORT_DIR``.

A job moves queued → running → done or failed. Running jobs move ``updated_at`` with every batch they
write, so one whose process died is found by its silence (``fail_stale_exports``); a done job's file
is downloadable by its staff member alone until ``expires_at``, then deleted (``remove_expired_exports``).

Services take a session and plain arguments, ``flush()`` and never commit; the console's runner and
the scheduler commit.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from server.accounts.models import ExportJob, ExportState
from server.accounts.services import record_audit
from server.db import fit, rowcount, utcnow

#: Jobs still to finish: a staff member may have only a few at once.
ACTIVE = (ExportState.queued, ExportState.running)
#: A queued or running job with no progress for this long died with its process.
STALE_AFTER = timedelta(minutes=10)
#: Rows of expired exports stay this long (the list shows them as expired, the link answers 410), then go.
ROWS_KEPT = timedelta(days=7)
#: The suffix of a file still being written; it is renamed to its final name when complete.
PART = ".part"


def record_export(
    sess: Session, *, staff_id: int, list_name: str, fmt: str, filters: dict[str, str], rows: int, job_id: int | None = None
) -> None:
    """The audit entry of an export: which list, with which filters, how many rows, and its job if any."""
    detail: dict[str, Any] = {"format": fmt, "filters": filters, "rows": rows}
    if job_id is not None:
        detail["job"] = job_id
    record_audit(sess, staff_id, "export.create", f"export:{list_name}", detail)


def active_exports(sess: Session, staff_id: int) -> list[ExportJob]:
    """The staff member's exports that are queued or running."""
    return list(sess.scalars(select(ExportJob).where(ExportJob.staff_id == staff_id, ExportJob.state.in_(ACTIVE)).order_by(ExportJob.id)))


def start_export(sess: Session, *, staff_id: int, list_name: str, fmt: str, filters: dict[str, str], rows_total: int) -> ExportJob:
    """A queued export job for the staff member, audited; the file gets a name nobody can guess."""
    job = ExportJob(staff_id=staff_id, list_name=list_name, format=fmt, filters=filters, rows_total=rows_total)
    sess.add(job)
    sess.flush()
    job.file_name = f"{list_name}-{job.id}-{secrets.token_hex(12)}.{fmt}"
    record_export(sess, staff_id=staff_id, list_name=list_name, fmt=fmt, filters=filters, rows=rows_total, job_id=job.id)
    sess.flush()
    return job


def begin_export(sess: Session, job_id: int, now: datetime | None = None) -> ExportJob | None:
    """Take a queued job to running; None when it is not queued any more (another worker took it, or it failed)."""
    now = now or utcnow()
    taken = rowcount(
        sess.execute(
            update(ExportJob).where(ExportJob.id == job_id, ExportJob.state == ExportState.queued).values(state=ExportState.running, updated_at=now)
        )
    )
    if not taken:
        return None
    job = sess.get(ExportJob, job_id)
    if job is not None:
        sess.refresh(job)
    return job


def record_progress(sess: Session, job: ExportJob, rows_done: int, now: datetime | None = None) -> None:
    job.rows_done = rows_done
    job.updated_at = now or utcnow()
    sess.flush()


def finish_export(sess: Session, job: ExportJob, *, rows_done: int, ttl: timedelta, now: datetime | None = None) -> None:
    """The file is complete under its final name: downloadable until ``now + ttl``."""
    now = now or utcnow()
    job.state = ExportState.done
    job.rows_done = rows_done
    job.updated_at = job.finished_at = now
    job.expires_at = now + ttl
    sess.flush()


def fail_export(sess: Session, job_id: int, error: str, *, ttl: timedelta, now: datetime | None = None) -> None:
    """Mark an export failed with the reason staff are shown; its row goes with the expired ones."""
    now = now or utcnow()
    job = sess.get(ExportJob, job_id)
    if job is None or job.state not in ACTIVE:
        return
    job.state = ExportState.failed
    job.error = fit(ExportJob.error, error)
    job.updated_at = job.finished_at = now
    job.expires_at = now + ttl
    sess.flush()


def fail_stale_exports(sess: Session, export_dir: Path, *, ttl: timedelta, now: datetime | None = None) -> int:
    """Jobs queued or running without progress for ``STALE_AFTER`` died with their process: failed, their partial file removed."""
    now = now or utcnow()
    stale = list(sess.scalars(select(ExportJob).where(ExportJob.state.in_(ACTIVE), ExportJob.updated_at < now - STALE_AFTER)))
    for job in stale:
        fail_export(sess, job.id, "导出中断：处理它的进程已退出，请重新导出。", ttl=ttl, now=now)
        if job.file_name:
            _remove(export_dir, job.file_name + PART)
    return len(stale)


def remove_expired_exports(sess: Session, export_dir: Path, now: datetime | None = None) -> tuple[int, int]:
    """Delete the files of expired exports, and the rows that expired more than ``ROWS_KEPT`` ago; (files, rows)."""
    now = now or utcnow()
    expired = list(sess.scalars(select(ExportJob).where(ExportJob.expires_at <= now, ExportJob.file_name.is_not(None))))
    for job in expired:
        assert job.file_name is not None
        _remove(export_dir, job.file_name)
        _remove(export_dir, job.file_name + PART)
        job.file_name = None
    rows = rowcount(sess.execute(delete(ExportJob).where(ExportJob.expires_at <= now - ROWS_KEPT)))
    sess.flush()
    return len(expired), rows


def _remove(export_dir: Path, name: str) -> None:
    (export_dir / name).unlink(missing_ok=True)
