"""WeChat adapters for the app: one MiniProgram per app, its token shared through Redis.

Nothing here knows whether ``WECHAT_API_BASE`` is WeChat or the sandbox.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from flask import Flask, current_app, has_app_context

from server import cache
from server.wechat.client import LockFactory, MiniProgram


def _app_lock_factory(app: Flask) -> LockFactory:
    """``server.cache.lock`` for ``app``, usable with or without an app context."""

    @contextlib.contextmanager
    def factory(name: str) -> Iterator[Any]:
        if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
            # Pushing a second context here would run the app's teardown handlers when it pops.
            with cache.lock(name):
                yield
            return
        # A thread or job without this app's context: lend it one for the lock.
        with app.app_context(), cache.lock(name):
            yield

    return factory


def init_app(app: Flask) -> None:
    """Build the app's MiniProgram; runs after ``server.cache.init_app`` so Redis is known."""
    app.extensions["wechat_miniprogram"] = MiniProgram.from_config(
        app.config, app.extensions.get("redis"), _app_lock_factory(app)
    )


def miniprogram() -> MiniProgram:
    """The current app's MiniProgram."""
    return current_app.extensions["wechat_miniprogram"]
