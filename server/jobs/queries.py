"""Read-side figures of the job queue: counts by state, for the metrics and ``python -m server jobs``."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.jobs.models import Job, JobState


def job_counts(sess: Session) -> dict[str, int]:
    """Jobs by state (queued, running, failed), every state present: one count grouped over the state index."""
    counts = {state.value: 0 for state in JobState}
    for state, number in sess.execute(select(Job.state, func.count()).group_by(Job.state)):
        counts[state.value] = int(number)
    return counts
