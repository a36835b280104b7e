"""The durable job queue: queued with the change, drained, leases, backoff and failure, no double run."""
from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any, Callable

import pytest
from flask import Flask
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session as OrmSession

from server import db
from server.db import utcnow
from server.jobs import queue
from server.jobs.models import Job, JobState
from server.jobs.queries import job_counts
from server.settings.models import Setting

RECORD = "test-record"
ran: list[str] = []
#: Refs whose job raises.
failing: set[str] = set()


def record(sess: Any, ref: str) -> None:
    """A job that leaves a trace in the database (in its own unit of work) and in ``ran``."""
    if ref in failing:
        raise RuntimeError(f"job {ref} fails")
    sess.merge(Setting(key=f"test-job-{ref}", value="done"))
    sess.flush()
    ran.append(ref)


queue.register(RECORD, record)


@pytest.fixture
def quiet_app(app_factory: Callable[..., Flask]) -> Flask:
    """An app whose commits leave jobs queued: no inline drain, no drainer thread (the test drains)."""
    ran.clear()
    failing.clear()
    return app_factory(TASKS_EAGER=False, JOB_DRAINERS=0)


def _enqueue(app: Flask, *refs: str, commit: bool = True) -> None:
    with db.unit_of_work(app) as sess:
        for ref in refs:
            queue.enqueue(sess, RECORD, ref)
        if commit:
            db.commit()


def _jobs(app: Flask) -> list[Job]:
    with db.unit_of_work(app) as sess:
        rows = list(sess.scalars(select(Job).order_by(Job.id)))
        sess.expunge_all()
        return rows


def _traces(app: Flask) -> int:
    with db.unit_of_work(app) as sess:
        return int(sess.scalar(select(func.count()).select_from(Setting).where(Setting.key.like("test-job-%"))) or 0)


def test_a_job_exists_only_if_its_change_commits(quiet_app: Flask) -> None:
    _enqueue(quiet_app, "rolled-back", commit=False)
    assert _jobs(quiet_app) == []
    _enqueue(quiet_app, "kept")
    [job] = _jobs(quiet_app)
    assert (job.kind, job.ref, job.state, job.attempts, job.pending_key) == (RECORD, "kept", JobState.queued, 0, f"{RECORD}:kept")


def test_the_same_waiting_work_is_queued_once_and_again_once_taken(quiet_app: Flask) -> None:
    _enqueue(quiet_app, "7", "7")
    _enqueue(quiet_app, "7")
    assert len(_jobs(quiet_app)) == 1
    [claimed] = queue.claim(quiet_app)
    _enqueue(quiet_app, "7")  # a change made while the job runs: it must be seen by a run that starts after it
    assert [(j.state, j.pending_key) for j in _jobs(quiet_app)] == [(JobState.running, None), (JobState.queued, f"{RECORD}:7")]
    assert queue.run(quiet_app, claimed)
    assert queue.drain(quiet_app) == {"done": 1, "failed": 0}
    assert ran == ["7", "7"] and _jobs(quiet_app) == []


def test_a_drained_job_does_its_work_and_its_row_goes_with_the_same_commit(quiet_app: Flask) -> None:
    _enqueue(quiet_app, "a", "b")
    assert queue.drain(quiet_app) == {"done": 2, "failed": 0}
    assert ran == ["a", "b"] and _traces(quiet_app) == 2 and _jobs(quiet_app) == []
    assert queue.drain(quiet_app) == {"done": 0, "failed": 0}


def test_a_job_whose_run_is_lost_leaves_its_row_and_no_trace(quiet_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    _enqueue(quiet_app, "lost")
    [claimed] = queue.claim(quiet_app)
    real_delete = queue.delete

    def crash_at_commit(*args: Any) -> Any:
        raise SystemExit("the process dies before its commit")

    monkeypatch.setattr(queue, "delete", crash_at_commit)
    with pytest.raises(SystemExit):
        queue.run(quiet_app, claimed)
    monkeypatch.setattr(queue, "delete", real_delete)
    [job] = _jobs(quiet_app)
    assert job.state == JobState.running and _traces(quiet_app) == 0


def test_a_crashed_drainers_job_is_taken_again_once_its_lease_ends(quiet_app: Flask) -> None:
    _enqueue(quiet_app, "orphan")
    [first] = queue.claim(quiet_app)  # this drainer dies here: the job stays running
    assert queue.claim(quiet_app) == []  # leased: nobody else takes it
    assert queue.claim(quiet_app, now=utcnow() + queue.LEASE - timedelta(seconds=5)) == []
    [second] = queue.claim(quiet_app, now=utcnow() + queue.LEASE + timedelta(seconds=1))
    assert (second.id, second.attempts) == (first.id, 2) and second.token != first.token
    assert queue.run(quiet_app, second)
    assert ran == ["orphan"] and _jobs(quiet_app) == []
    # The first claimant, back from the dead, finds its claim gone: it records nothing over the new one.
    assert queue.run(quiet_app, first)
    assert ran == ["orphan", "orphan"] and _jobs(quiet_app) == []


def test_a_failing_job_backs_off_then_fails_visibly_and_can_be_retried(quiet_app: Flask) -> None:
    failing.add("bad")
    _enqueue(quiet_app, "bad")
    now = utcnow()
    waits = []
    for attempt in range(1, queue.MAX_ATTEMPTS + 1):
        [claimed] = queue.claim(quiet_app, now=now)
        assert claimed.attempts == attempt
        assert not queue.run(quiet_app, claimed)
        [job] = _jobs(quiet_app)
        assert job.claimed_by is None and job.last_error == "RuntimeError: job bad fails"
        if attempt < queue.MAX_ATTEMPTS:
            assert job.state == JobState.queued
            waits.append(job.run_after - utcnow())
            assert queue.claim(quiet_app, now=now) == []  # not before its backoff
            now = job.run_after
    assert job.state == JobState.failed and job.finished_at is not None
    assert [round(w.total_seconds() / 10) for w in waits[:4]] == [1, 2, 4, 8]  # 10, 20, 40, 80 s
    assert queue.claim(quiet_app, now=now + timedelta(days=1)) == []  # failed jobs are never taken
    with db.unit_of_work(quiet_app) as sess:
        assert job_counts(sess) == {"queued": 0, "running": 0, "failed": 1}
    failing.clear()
    runner = quiet_app.test_cli_runner()
    listed = runner.invoke(args=["jobs", "list"])
    assert listed.exit_code == 0 and "failed 1" in listed.output and f"#{job.id} {RECORD} bad failed tries 8" in listed.output
    assert "RuntimeError: job bad fails" in listed.output
    retried = runner.invoke(args=["jobs", "retry", "--all"])
    assert retried.exit_code == 0 and "1 failed jobs queued again" in retried.output
    drained = runner.invoke(args=["jobs", "drain"])
    assert drained.exit_code == 0 and "1 done, 0 failed" in drained.output
    assert ran == ["bad"] and _jobs(quiet_app) == []


def test_the_cli_refuses_a_retry_without_ids_or_with_both(quiet_app: Flask) -> None:
    runner = quiet_app.test_cli_runner()
    assert runner.invoke(args=["jobs", "retry"]).exit_code == 2
    assert runner.invoke(args=["jobs", "retry", "1", "--all"]).exit_code == 2


def test_old_failures_are_purged(quiet_app: Flask) -> None:
    _enqueue(quiet_app, "old", "recent")
    with db.unit_of_work(quiet_app) as sess:
        sess.execute(update(Job).values(state=JobState.failed, pending_key=None, finished_at=utcnow()))
        sess.execute(update(Job).where(Job.ref == "old").values(finished_at=utcnow() - timedelta(days=40)))
        db.commit()
    result = quiet_app.test_cli_runner().invoke(args=["jobs", "purge", "--days", "30"])
    assert result.exit_code == 0 and "1 failed jobs deleted" in result.output
    assert [j.ref for j in _jobs(quiet_app)] == ["recent"]


def test_a_process_drainer_runs_a_job_right_after_the_commit(app_factory: Callable[..., Flask]) -> None:
    ran.clear()
    app = app_factory(TASKS_EAGER=False, JOB_DRAINERS=1, JOB_POLL_SECONDS=60)
    with app.app_context():
        queue.enqueue(db.session(), RECORD, "woken")
        db.commit()  # wakes (and here starts) the drainer: no wait for its 60-second poll
    drainer = app.extensions["job_drainer"]
    try:
        deadline = time.monotonic() + 10
        while ran != ["woken"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ran == ["woken"]
    finally:
        drainer.stop()
    assert _jobs(app) == []


def test_while_the_drainer_is_behind_a_request_that_queues_work_runs_the_oldest_job_itself(app_factory: Callable[..., Flask]) -> None:
    ran.clear()
    app = app_factory(TASKS_EAGER=False, JOB_DRAINERS=1)
    drainer = queue.Drainer(app, threads=1, poll=60)  # never started: only the requests drain here
    app.extensions["job_drainer"] = drainer
    _enqueue(app, "old-1", "old-2")  # the backlog a busy drainer has not reached
    assert ran == [] and not drainer.behind()
    drainer._note(queue.CLAIM_BATCH)  # a claim found a full batch waiting …
    assert not drainer.behind()
    drainer._full_since = time.monotonic() - queue.BEHIND  # … and every claim since, for BEHIND seconds
    assert drainer.behind()
    _enqueue(app, "new")
    assert ran == ["old-1"]  # after its commit, before it answers, the request ran the oldest due job
    drainer._note(3)  # a claim found less than a batch: caught up
    _enqueue(app, "newer")
    assert ran == ["old-1"] and [j.ref for j in _jobs(app)] == ["old-2", "new", "newer"]
    app.config["JOB_BACKPRESSURE"] = 0  # turned off: behind or not, requests leave the jobs to the drainers
    drainer._full_since = time.monotonic() - queue.BEHIND
    _enqueue(app, "newest")
    assert ran == ["old-1"]


def test_eager_mode_drains_through_the_queue_after_the_commit(app: Flask) -> None:
    ran.clear()
    with app.app_context():
        queue.enqueue(db.session(), RECORD, "eager")
        assert ran == []  # nothing before the commit
        db.commit()
    assert ran == ["eager"] and _jobs(app) == []


@pytest.mark.slow
def test_drainers_racing_never_run_one_job_twice(quiet_app: Flask) -> None:
    """Four drainers against 200 jobs on MariaDB: SKIP LOCKED claims hand each job to exactly one."""
    if quiet_app.extensions["db_engine"].dialect.name != "mysql":
        pytest.skip("SQLite's BEGIN IMMEDIATE admits one claimant at a time; the race exists on MariaDB")
    refs = [f"r{n}" for n in range(200)]
    _enqueue(quiet_app, *refs)
    running: Counter[str] = Counter()
    overlaps: list[str] = []
    guard = threading.Lock()

    def slow_record(sess: Any, ref: str) -> None:
        with guard:
            running[ref] += 1
            if running[ref] > 1:
                overlaps.append(ref)
        time.sleep(0.002)
        record(sess, ref)
        with guard:
            running[ref] -= 1

    queue.register(RECORD, slow_record)
    barrier = threading.Barrier(4)
    try:

        def drainer() -> None:
            barrier.wait()
            queue.drain(quiet_app)

        threads = [threading.Thread(target=drainer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        queue.register(RECORD, record)
    assert overlaps == []
    assert sorted(Counter(ran).values()) == [1] * 200 and set(ran) == set(refs)
    assert _jobs(quiet_app) == [] and _traces(quiet_app) == 200


def test_queueing_brings_waiting_work_forward_in_one_statement_and_adds_new_work_in_two(quiet_app: Flask) -> None:
    from tests.statements import statements_sent

    _enqueue(quiet_app, "later")
    with db.unit_of_work(quiet_app) as sess:
        sess.execute(update(Job).values(run_after=utcnow() + timedelta(hours=1)))  # waiting out a backoff, say
        db.commit()
    assert queue.claim(quiet_app) == []
    for ref, expected in (("later", ["UPDATE"]), ("new", ["UPDATE", "INSERT"])):
        with db.unit_of_work(quiet_app) as sess:
            sess.connection()  # the transaction is open: only what enqueue sends is recorded
            with statements_sent(quiet_app) as sent:
                queue.enqueue(sess, RECORD, ref)
            db.commit()
        assert [s.split(None, 1)[0] for s in sent] == expected, sent
    assert sorted(j.ref for j in _jobs(quiet_app)) == ["later", "new"]
    assert sorted(c.ref for c in queue.claim(quiet_app)) == ["later", "new"]  # both due now


@pytest.mark.slow
def test_the_same_work_queued_by_two_transactions_at_once_is_one_job_and_waits_for_both(quiet_app: Flask) -> None:
    """The second transaction's enqueue waits on the first's new row and then takes it over; while either is
    open, no drainer can take the job (it would run before their changes are visible)."""
    if quiet_app.extensions["db_engine"].dialect.name != "mysql":
        pytest.skip("SQLite serialises writers; the row locks exist on MariaDB")
    engine = quiet_app.extensions["db_engine"]
    one, two = OrmSession(engine), OrmSession(engine)
    try:
        with quiet_app.app_context():
            queue.enqueue(one, RECORD, "shared")
        done = threading.Event()

        def second() -> None:
            with quiet_app.app_context():
                queue.enqueue(two, RECORD, "shared")
            done.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not done.wait(0.5)  # waits on the first transaction's row
        assert queue.claim(quiet_app) == []  # the row is locked: SKIP LOCKED passes it by
        one.commit()
        assert done.wait(10)
        thread.join()
        assert queue.claim(quiet_app) == []  # still locked by the second transaction
        two.commit()
    finally:
        one.close()
        two.close()
    [job] = _jobs(quiet_app)
    assert job.ref == "shared" and job.state == JobState.queued
    assert queue.drain(quiet_app) == {"done": 1, "failed": 0}


@pytest.mark.slow
def test_transactions_bringing_waiting_work_forward_and_queueing_new_work_do_not_deadlock(quiet_app: Flask) -> None:
    """Bringing a waiting job forward locks its row and nothing else: an upsert that finds the row takes a
    next-key lock on MariaDB (the key and the gap before it, even under READ COMMITTED), and two
    transactions each queueing new work into the other's gap deadlocked."""
    if quiet_app.extensions["db_engine"].dialect.name != "mysql":
        pytest.skip("SQLite serialises writers; the row locks exist on MariaDB")
    _enqueue(quiet_app, "10", "20", "30")
    engine = quiet_app.extensions["db_engine"]
    one, two = OrmSession(engine), OrmSession(engine)
    errors: list[BaseException] = []

    def queue_in(sess: Any, ref: str) -> None:
        try:
            with quiet_app.app_context():
                queue.enqueue(sess, RECORD, ref)
        except Exception as error:  # noqa: BLE001 - recorded for the assertion below
            errors.append(error)

    try:
        queue_in(one, "30")  # waiting work brought forward by each transaction
        queue_in(two, "10")
        first = threading.Thread(target=queue_in, args=(one, "05"))  # new work before the other's key
        first.start()
        first.join(0.5)
        queue_in(two, "25")  # new work before this one's
        first.join(10)
        assert not first.is_alive()
        assert errors == [], errors
        one.commit()
        two.commit()
    finally:
        one.close()
        two.close()
    assert sorted(j.ref for j in _jobs(quiet_app)) == ["05", "10", "20", "25", "30"]


@pytest.mark.parametrize("dialect", ["mysql", "mariadb", "sqlite"])
def test_the_new_row_upsert_is_made_for_each_database_name_sqlalchemy_gives(dialect: str) -> None:
    """``mariadb+pymysql://`` URLs report "mariadb", ``mysql+pymysql://`` ones "mysql": both get MariaDB's upsert."""
    from sqlalchemy.dialects import mysql as mysql_dialect
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    compiled = str(queue._upsert(dialect).values(kind=RECORD, ref="1", pending_key=f"{RECORD}:1").compile(
        dialect=sqlite_dialect.dialect() if dialect == "sqlite" else mysql_dialect.dialect()
    ))
    assert ("ON CONFLICT (pending_key) DO UPDATE" if dialect == "sqlite" else "ON DUPLICATE KEY UPDATE run_after") in compiled, compiled
    with pytest.raises(NotImplementedError):
        queue._upsert("oracle")
