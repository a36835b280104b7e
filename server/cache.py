"""Redis when ``REDIS_URL`` is set, in-process fallbacks otherwise.

The fallbacks are correct for one process (the default SQLite run); several
workers or hosts need Redis so they share counters, locks and cached tokens.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import redis
from flask import Flask, current_app


class _LocalCounters:
    """Fixed-window counters for one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str, window: int) -> int:
        now = time.monotonic()
        with self._lock:
            if len(self._windows) > 10_000:  # forget finished windows so memory stays bounded
                self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
            expires, count = self._windows.get(key, (now + window, 0))
            if expires <= now:
                expires, count = now + window, 0
            self._windows[key] = (expires, count + 1)
            return count + 1


def init_app(app: Flask) -> None:
    url = app.config.get("REDIS_URL")
    app.extensions["redis"] = redis.Redis.from_url(url) if url else None
    app.extensions["local_counters"] = _LocalCounters()
    app.extensions["local_locks"] = {}
    app.extensions["local_locks_guard"] = threading.Lock()


def client() -> redis.Redis | None:
    """The shared Redis client, or None when running without Redis."""
    return current_app.extensions["redis"]


def hit(key: str, window: int) -> int:
    """Count one event in the current ``window``-second window of ``key``; returns the count so far."""
    r = client()
    if r is None:
        return current_app.extensions["local_counters"].hit(key, window)
    full_key = f"rl:{key}"
    pipe = r.pipeline()
    pipe.incr(full_key)
    pipe.expire(full_key, window, nx=True)
    count, _ = pipe.execute()
    return int(count)


@contextlib.contextmanager
def lock(name: str, timeout: float = 10.0) -> Iterator[None]:
    """A lock shared by every worker (Redis) or by the threads of this process."""
    r = client()
    if r is not None:
        with r.lock(f"lock:{name}", timeout=timeout, blocking_timeout=timeout):
            yield
        return
    ext = current_app.extensions
    with ext["local_locks_guard"]:
        local = ext["local_locks"].setdefault(name, threading.Lock())
    if not local.acquire(timeout=timeout):
        raise TimeoutError(f"could not take lock {name}")
    try:
        yield
    finally:
        local.release()


def enforce_rate_limit(key: str, limit: int, window: int) -> None:
    """Raise RateLimitedError once ``key`` has been hit more than ``limit`` times in ``window`` seconds."""
    from server.errors import RateLimitedError

    if hit(key, window) > limit:
        raise RateLimitedError(data={"retry_after_seconds": window})
