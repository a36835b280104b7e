"""Redis when ``REDIS_URL`` is set, in-process fallbacks otherwise.

The fallbacks are correct for one process (the default SQLite run); several
workers or hosts need Redis so they share counters, locks and cached tokens.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any, Iterator

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


class _LocalValues:
    """Values with an optional lifetime, for one process; a cache, so it may forget under pressure."""

    #: Entries kept before expired ones are dropped, then the oldest.
    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float | None, str]] = {}

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._values.get(key)
            if entry is None:
                return None
            expires, text = entry
            if expires is not None and expires <= time.monotonic():
                del self._values[key]
                return None
            return text

    def set(self, key: str, text: str, ttl: float | None) -> None:
        now = time.monotonic()
        with self._lock:
            self._values.pop(key, None)
            if len(self._values) >= self.MAX_ENTRIES:
                self._values = {k: v for k, v in self._values.items() if v[0] is None or v[0] > now}
                while len(self._values) >= self.MAX_ENTRIES:
                    del self._values[next(iter(self._values))]
            self._values[key] = (None if ttl is None else now + ttl, text)


def init_app(app: Flask) -> None:
    url = app.config.get("REDIS_URL")
    app.extensions["redis"] = redis.Redis.from_url(url) if url else None
    app.extensions["local_counters"] = _LocalCounters()
    app.extensions["local_values"] = _LocalValues()
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


def get_value(key: str) -> Any:
    """The value ``set_value`` stored under ``key``, or None once it expired or was never set.

    Values travel as JSON, so what comes back is a fresh copy (tuples come back as lists).
    """
    r = client()
    text = current_app.extensions["local_values"].get(key) if r is None else r.get(f"kv:{key}")
    return None if text is None else json.loads(text)


def set_value(key: str, value: Any, ttl: float | None) -> None:
    """Store a JSON-serialisable ``value`` under ``key`` for ``ttl`` seconds (None: no expiry).

    Shared by every worker through Redis; without Redis, kept in this process only. Either way
    it is a cache: callers must be able to rebuild the value when it is gone.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    r = client()
    if r is None:
        current_app.extensions["local_values"].set(key, text, ttl)
    elif ttl is None:
        r.set(f"kv:{key}", text)
    else:
        # Redis counts whole milliseconds, at least one.
        r.set(f"kv:{key}", text, px=max(1, int(ttl * 1000)))


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
