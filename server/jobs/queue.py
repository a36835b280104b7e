"""The durable job queue: ``enqueue`` in the change's transaction, drainers that take and run the rows.

Taking a job is a short transaction of its own: the due rows are read with ``FOR UPDATE SKIP LOCKED``
(MariaDB; SQLite's ``BEGIN IMMEDIATE`` already lets one writer in at a time), marked ``running`` under
a claim token with a lease (``run_after`` = the lease's end) and committed. Each job then runs in a
unit of work of its own, whose commit also deletes the row, conditional on the claim still being the
row's: the work and its "done" commit together. A failure rolls the work back and, in a new
transaction, puts the job back with a backoff, or marks it failed after ``MAX_ATTEMPTS``. A drainer
that dies leaves its jobs ``running`` until the lease ends; then any drainer takes them again. The
handlers are idempotent, so a job run twice (a lease that ran out under a very slow run) does no harm.

Every web process runs a drainer thread, woken right after a commit that queued a job and polling
every ``JOB_POLL_SECONDS`` besides; the scheduler process runs one too. Tests (``TASKS_EAGER``) drain
inline after the commit instead, through the same claim and run.

Back-pressure: while a process's drainer is behind (it has found a full batch waiting on every claim for
``BEHIND`` or longer), a request that queues a job also runs the oldest due job itself after its commit,
before it answers. Requests that make work then come no faster than the work is done, so the backlog
stops growing; the answers slow down instead (WeChat Pay waits up to 5 s for one, and resends later).
"""
from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from flask import Flask, current_app, has_app_context
from sqlalchemy import ColumnElement, Insert, and_, delete, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.orm import Session

from server import db, logs, metrics
from server.db import rowcount, utcnow
from server.jobs.models import Job, JobState

#: A taken job is its drainer's this long; after that another drainer may take it again.
LEASE = timedelta(minutes=5)
#: Tries before a job is marked failed.
MAX_ATTEMPTS = 8
#: The longest wait between two tries.
MAX_BACKOFF = timedelta(hours=1)
#: Jobs one claim takes (each then runs and commits on its own).
CLAIM_BATCH = 20
#: A drainer that has found a full batch waiting on every claim for this long is behind: requests help.
BEHIND = 1.0

Handler = Callable[[Session, str], None]

_handlers: dict[str, Handler] = {}
_log = logging.getLogger(__name__)


def register(kind: str, handler: Handler) -> None:
    """Run ``handler(sess, ref)`` for jobs of ``kind`` (each package registers its own in ``init_app``)."""
    _handlers[kind] = handler


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th try failed: 10 s, 20 s, 40 s … at most ``MAX_BACKOFF``."""
    return min(timedelta(seconds=10 * 2 ** min(max(attempts - 1, 0), 16)), MAX_BACKOFF)


def enqueue(sess: Session, kind: str, ref: str | int) -> None:
    """Queue ``kind`` for ``ref`` in the caller's transaction: it exists once the caller commits, never if it
    rolls back. The same work waiting untaken is queued once, and is brought forward to run now.

    The waiting row is updated rather than only looked at: that locks it until this transaction ends, so a
    drainer cannot take it (SKIP LOCKED) and run it before this change is visible. The UPDATE locks that row
    alone; an upsert that finds the row would also lock the gap before its key (MariaDB's duplicate check
    takes a next-key lock even under READ COMMITTED), and two transactions queueing new work into each
    other's gaps would deadlock. When nothing is waiting, the new row is inserted by an upsert on
    ``pending_key``, no savepoint needed: if another transaction queued the same work meanwhile, this one
    waits for it and then takes its row over. A row taken meanwhile has lost its key, and the work is
    queued again.
    """
    if kind not in _handlers:
        raise ValueError(f"no handler for job kind {kind!r}")
    key, now = f"{kind}:{ref}", utcnow()
    if not rowcount(sess.execute(update(Job).where(Job.pending_key == key).values(run_after=now))):
        sess.execute(_upsert(sess.get_bind().dialect.name).values(kind=kind, ref=str(ref), pending_key=key, run_after=now))
    db.after_commit(wake)


def _upsert(dialect: str) -> Insert:
    """INSERT of a job that, where its ``pending_key`` is taken, moves that row's ``run_after`` instead."""
    if dialect in db.MYSQL_FAMILY:
        on_mysql = mysql.insert(Job)
        return on_mysql.on_duplicate_key_update(run_after=on_mysql.inserted.run_after)
    if dialect == "sqlite":
        on_sqlite = sqlite.insert(Job)
        return on_sqlite.on_conflict_do_update(index_elements=[Job.pending_key], set_={"run_after": on_sqlite.excluded.run_after})
    raise NotImplementedError(f"no upsert for {dialect}")


# -- taking and running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    ref: str
    attempts: int
    token: str


def _token() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def claim(app: Flask, limit: int = CLAIM_BATCH, now: datetime | None = None) -> list[Claimed]:
    """Take up to ``limit`` due jobs (queued and due, or running with their lease over); commits."""
    now = now or utcnow()
    token = _token()
    with db.unit_of_work(app) as sess:
        rows = sess.execute(
            select(Job.id, Job.kind, Job.ref, Job.attempts)
            .where(Job.state.in_((JobState.queued, JobState.running)), Job.run_after <= now)
            .order_by(Job.run_after, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            sess.rollback()
            return []
        ids = [row.id for row in rows]
        sess.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(state=JobState.running, claimed_by=token, run_after=now + LEASE, attempts=Job.attempts + 1, pending_key=None)
        )
        db.commit()
    return [Claimed(row.id, row.kind, row.ref, row.attempts + 1, token) for row in rows]


def _ours(claimed: Claimed) -> ColumnElement[bool]:
    """The job's row while the claim is still its own (a lease that ran out and was taken again is not)."""
    return and_(Job.id == claimed.id, Job.claimed_by == claimed.token, Job.state == JobState.running)


def run(app: Flask, claimed: Claimed) -> bool:
    """Run one taken job in its own unit of work, deleting its row with the work's commit; True if it succeeded."""
    began = time.perf_counter()
    token = logs.request_id.set(f"job-{claimed.kind}-{claimed.id}")
    try:
        with db.unit_of_work(app) as sess:
            handler = _handlers.get(claimed.kind)
            if handler is None:
                raise LookupError(f"no handler for job kind {claimed.kind!r}")
            handler(sess, claimed.ref)
            sess.execute(delete(Job).where(_ours(claimed)))
            db.commit()
        metrics.count_queued_job(claimed.kind, "done", time.perf_counter() - began)
        return True
    except Exception as error:
        _log.exception("job %s %s (%s) failed, try %s", claimed.kind, claimed.ref, claimed.id, claimed.attempts)
        outcome = _record_failure(app, claimed, error)
        metrics.count_queued_job(claimed.kind, outcome, time.perf_counter() - began)
        return False
    finally:
        logs.request_id.reset(token)


def _record_failure(app: Flask, claimed: Claimed, error: Exception) -> str:
    """Put the job back after its backoff, or mark it failed after ``MAX_ATTEMPTS``; "retried" or "failed"."""
    now = utcnow()
    message = db.fit(Job.last_error, f"{type(error).__name__}: {error}")
    if claimed.attempts >= MAX_ATTEMPTS:
        outcome, values = "failed", {"state": JobState.failed, "finished_at": now}
    else:
        outcome, values = "retried", {"state": JobState.queued, "run_after": now + backoff(claimed.attempts)}
    with db.unit_of_work(app):
        db.session().execute(update(Job).where(_ours(claimed)).values(claimed_by=None, last_error=message, **values))
        db.commit()
    return outcome


def drain(app: Flask, *, limit: int | None = None, now: datetime | None = None) -> dict[str, int]:
    """Take and run due jobs until none is due (or ``limit`` have run); how many succeeded and failed."""
    counts = {"done": 0, "failed": 0}
    while limit is None or counts["done"] + counts["failed"] < limit:
        batch = claim(app, CLAIM_BATCH if limit is None else min(CLAIM_BATCH, limit - counts["done"] - counts["failed"]), now)
        if not batch:
            break
        for claimed in batch:
            counts["done" if run(app, claimed) else "failed"] += 1
    return counts


# -- the drainer of a process ------------------------------------------------------------------------------

_inline = threading.local()


def _drain_inline(app: Flask, limit: int | None) -> None:
    if getattr(_inline, "draining", False):
        return  # queued by a job this thread is running: the drain in progress (or the drainer) takes it
    _inline.draining = True
    try:
        drain(app, limit=limit)
    finally:
        _inline.draining = False


def wake() -> None:
    """After a commit that queued a job: run it inline (tests, ``TASKS_EAGER``) or wake this process's drainer,
    and while the drainer is behind, run the oldest due job here first (back-pressure)."""
    if not has_app_context():
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # current_app is typed as the Flask it proxies
    if app.config.get("TASKS_EAGER"):
        _drain_inline(app, None)
        return
    drainer = start_drainer(app)
    if drainer is None:
        return
    drainer.wake()
    if drainer.behind() and int(app.config.get("JOB_BACKPRESSURE", 1)):
        _drain_inline(app, 1)


class Drainer:
    """Threads that drain the queue: woken by ``wake`` and every ``poll`` seconds; stopped at exit."""

    def __init__(self, app: Flask, threads: int, poll: float) -> None:
        self.app = app
        self.poll = poll
        self._event = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name=f"jobs-{n}", daemon=True) for n in range(threads)]
        #: Since when every claim has found a full batch waiting (None: the last one did not).
        self._full_since: float | None = None

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        self._event.set()

    def behind(self) -> bool:
        """Whether every claim has found a full batch waiting for ``BEHIND`` seconds or more."""
        since = self._full_since
        return since is not None and time.monotonic() - since >= BEHIND

    def _note(self, taken: int) -> None:
        if taken < CLAIM_BATCH:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = time.monotonic()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._event.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._event.wait(self.poll)
            self._event.clear()
            try:
                while not self._stop.is_set():
                    batch = claim(self.app)
                    self._note(len(batch))
                    if not batch:
                        break
                    for claimed in batch:
                        run(self.app, claimed)
            except Exception:
                _log.exception("the job drainer failed; it tries again in %s s", self.poll)


_start_lock = threading.Lock()


def start_drainer(app: Flask) -> Drainer | None:
    """This process's drainer for ``app``, started on first use; None when the app runs none (``JOB_DRAINERS`` 0)."""
    drainer: Drainer | None = app.extensions.get("job_drainer")
    if drainer is not None or app.config.get("TASKS_EAGER") or int(app.config.get("JOB_DRAINERS", 1)) <= 0:
        return drainer
    with _start_lock:
        drainer = app.extensions.get("job_drainer")
        if drainer is None:
            drainer = Drainer(app, int(app.config.get("JOB_DRAINERS", 1)), float(app.config.get("JOB_POLL_SECONDS", 2.0)))
            app.extensions["job_drainer"] = drainer
            drainer.start()
            # A job cut off at exit is taken again once its lease ends; most finish within the wait.
            atexit.register(drainer.stop)
    return drainer


# -- operators ---------------------------------------------------------------------------------------------


def retry(sess: Session, job_ids: list[int] | None = None) -> int:
    """Queue failed jobs again now, with their tries reset (all of them without ids); how many. Only flushes."""
    stmt = update(Job).where(Job.state == JobState.failed)
    if job_ids is not None:
        stmt = stmt.where(Job.id.in_(job_ids))
    return rowcount(sess.execute(stmt.values(state=JobState.queued, attempts=0, run_after=utcnow(), finished_at=None)))


def purge_failed(sess: Session, older_than: datetime) -> int:
    """Delete failed jobs that failed before ``older_than``; how many. Only flushes."""
    return rowcount(sess.execute(delete(Job).where(Job.state == JobState.failed, Job.finished_at < older_than)))
