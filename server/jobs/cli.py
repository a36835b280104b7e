"""``python -m server jobs``: the job queue's counts and failed jobs, retrying them, draining by hand."""
from __future__ import annotations

from datetime import timedelta

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select

from server import db
from server.db import utcnow
from server.jobs import queue
from server.jobs.models import Job, JobState
from server.jobs.queries import job_counts

jobs_cli = AppGroup("jobs", help="The durable job queue: counts, failed jobs, retries.")

#: Failed jobs ``list`` shows.
LISTED = 50


@jobs_cli.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]), default=JobState.failed.value, show_default=True, help="Which jobs to list.")
def list_command(state: str) -> None:
    """The counts by state, then the oldest jobs of STATE (failed by default) with their last error."""
    sess = db.session()
    counts = job_counts(sess)
    click.echo(", ".join(f"{name} {number}" for name, number in counts.items()))
    rows = sess.scalars(select(Job).where(Job.state == JobState(state)).order_by(Job.id).limit(LISTED)).all()
    for row in rows:
        when = (row.finished_at if row.state == JobState.failed else None) or row.run_after
        click.echo(f"#{row.id} {row.kind} {row.ref} {row.state.value} tries {row.attempts} {when:%Y-%m-%d %H:%M:%S} {row.last_error}".rstrip())
    if counts[state] > len(rows):
        click.echo(f"… and {counts[state] - len(rows)} more")


@jobs_cli.command("retry")
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--all", "all_failed", is_flag=True, help="Every failed job.")
def retry_command(job_ids: tuple[int, ...], all_failed: bool) -> None:
    """Queue failed jobs again now, with their tries counted from zero: JOB_IDS, or --all."""
    if bool(job_ids) == all_failed:
        raise click.UsageError("give job ids or --all, not both")
    retried = queue.retry(db.session(), None if all_failed else list(job_ids))
    db.commit()
    click.echo(f"{retried} failed jobs queued again")


@jobs_cli.command("drain")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after this many jobs.")
def drain_command(limit: int | None) -> None:
    """Run the due jobs now, in this process (the web processes and the scheduler drain them anyway)."""
    counts = queue.drain(current_app._get_current_object(), limit=limit)  # type: ignore[attr-defined]  # current_app is typed as the Flask it proxies
    click.echo(f"{counts['done']} done, {counts['failed']} failed")


@jobs_cli.command("purge")
@click.option("--days", type=click.IntRange(min=0), default=30, show_default=True, help="Keep failures newer than this.")
def purge_command(days: int) -> None:
    """Delete failed jobs that failed more than DAYS days ago."""
    purged = queue.purge_failed(db.session(), utcnow() - timedelta(days=days))
    db.commit()
    click.echo(f"{purged} failed jobs deleted")


def init_app(app: Flask) -> None:
    app.cli.add_command(jobs_cli)
