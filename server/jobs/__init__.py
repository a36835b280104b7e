"""The durable job queue (an outbox in the database): follow-up work queued in the same transaction as
the change that needs it, and drained by every web process and the scheduler (see ``queue``)."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register ``python -m server jobs``; start this process's drainer with its first request (commands start none)."""
    from server.jobs import cli, queue

    cli.init_app(app)
    if app.config.get("TASKS_EAGER") or int(app.config.get("JOB_DRAINERS", 1)) <= 0:
        return

    @app.before_request
    def _start_drainer() -> None:
        if "job_drainer" not in app.extensions:
            queue.start_drainer(app)
