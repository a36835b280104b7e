"""Follow-up work that must not delay a response: run on a small background pool after the commit.

Each task gets its own app context and unit of work. Only work that is safe to lose here uses it: a
notification's first send (its outbox row is durable and the scheduler sends it if this is lost), a
manual settlement or an export (a run lost with its process shows as failed, and staff start it
again). Work that must happen is queued in the database instead (server/jobs). Tests set
``TASKS_EAGER`` to run tasks inline, in order.
"""
from __future__ import annotations

import atexit
import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from flask import Flask, current_app

from server import db


def init_app(app: Flask) -> None:
    if not app.config.get("TASKS_EAGER"):
        pool = ThreadPoolExecutor(max_workers=app.config.get("TASK_WORKERS", 2), thread_name_prefix="task")
        app.extensions["task_pool"] = pool
        atexit.register(pool.shutdown, wait=True)


def _run(app: Flask, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    with db.unit_of_work(app):
        try:
            fn(*args)
            db.commit()
        except Exception:
            app.logger.exception("background task %s failed; the scheduler's sweep will retry it", getattr(fn, "__name__", fn))


def defer(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in its own unit of work once the current one has committed."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # current_app is typed as the Flask it proxies

    def start() -> None:
        pool = app.extensions.get("task_pool")
        if pool is None:
            _run(app, fn, args)
        else:
            # In a copy of the request's context, so the task's log lines carry the request's id.
            pool.submit(contextvars.copy_context().run, _run, app, fn, args)

    db.after_commit(start)
