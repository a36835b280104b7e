"""Redis when ``REDIS_URL`` is set, with fallbacks for when it is not set or not answering.

Without Redis, rate limits and cached values live in this process, and locks are taken in the
database (MariaDB/MySQL ``GET_LOCK``) or, on SQLite, in this process. Those fallbacks are what a
Redis outage runs on, too: a failed call opens a breaker (``RedisLink``) that skips Redis for
``REDIS_RETRY_SECONDS``, after which the next call tries it again, so an outage costs one short
connection attempt every few seconds rather than one per request, and the app goes back to Redis
by itself when it answers. Several workers or hosts need Redis to share counters and cached values;
while it is away each process counts for itself.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from typing import Any, Iterator

import redis
from flask import Flask, current_app
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from server import db
from server.errors import RateLimitedError

logger = logging.getLogger(__name__)

#: The longest name MariaDB/MySQL ``GET_LOCK`` takes; longer lock names are hashed to fit.
DB_LOCK_NAME_MAX = 64


class RedisLink:
    """The Redis client behind a circuit breaker: after a failure, Redis is skipped for a while.

    Usable without an app context (the WeChat token storage holds one).
    """

    def __init__(self, client: redis.Redis, retry_seconds: float = 5.0) -> None:
        self.client = client
        self.retry_seconds = retry_seconds
        self._guard = threading.Lock()
        self._skip_until = 0.0
        #: Why Redis is not being used right now; None while it answers.
        self.reason: str | None = None

    def usable(self) -> redis.Redis | None:
        """The client, or None while the breaker is open after a failure."""
        return None if time.monotonic() < self._skip_until else self.client

    def failed(self, error: BaseException) -> None:
        """Record that Redis did not answer: skip it for ``retry_seconds``."""
        with self._guard:
            self._skip_until = time.monotonic() + self.retry_seconds
            if self.reason is None:
                # The error's text names the host and port; the log may have them, /healthz not.
                logger.warning("Redis is not answering (%s); using the fallbacks", error)
            self.reason = f"Redis is not answering ({type(error).__name__}): rate limits are counted per process, " \
                "locks are taken in the database, WeChat tokens and posters come from the process or the database"

    def answered(self) -> None:
        """Record that Redis answered: close the breaker."""
        if self.reason is not None:
            with self._guard:
                if self.reason is not None:
                    logger.warning("Redis answers again")
                self.reason = None
                self._skip_until = 0.0

    def ping(self) -> bool:
        """Ask Redis now, whatever the breaker says (for the health check); records the outcome."""
        try:
            self.client.ping()
        except redis.RedisError as error:
            self.failed(error)
            return False
        self.answered()
        return True


def connect(url: str, *, timeout: float = 1.0, retry_seconds: float = 5.0) -> RedisLink:
    """A ``RedisLink`` to ``url`` whose calls fail within ``timeout`` seconds and are not retried."""
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        # A retry would multiply the wait; the breaker decides when Redis is tried again.
        retry=Retry(NoBackoff(), 0),
    )
    return RedisLink(client, retry_seconds)


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

    def forget(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)

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
    link = (
        connect(
            url,
            timeout=float(app.config.get("REDIS_TIMEOUT") or 1.0),
            retry_seconds=float(app.config.get("REDIS_RETRY_SECONDS") or 5.0),
        )
        if url
        else None
    )
    app.extensions["redis_link"] = link
    app.extensions["redis"] = link.client if link else None
    app.extensions["local_counters"] = _LocalCounters()
    app.extensions["local_values"] = _LocalValues()
    app.extensions["local_locks"] = {}
    app.extensions["local_locks_guard"] = threading.Lock()
    app.extensions["lock_engine"] = None


def link() -> RedisLink | None:
    """The app's Redis behind its breaker, or None when running without Redis."""
    return current_app.extensions["redis_link"]


def client() -> redis.Redis | None:
    """The shared Redis client when it is configured and answering (the breaker is closed), else None.

    A caller using it directly reports failures with ``failed()``.
    """
    current = link()
    return current.usable() if current is not None else None


def failed(error: BaseException) -> None:
    """Report that a Redis call failed: every caller skips Redis for a while."""
    current = link()
    if current is not None:
        current.failed(error)


def answered() -> None:
    current = link()
    if current is not None:
        current.answered()


def degraded_reason() -> str | None:
    """Why Redis is configured but not in use, checked now; None when it answers or is not configured."""
    current = link()
    if current is None or current.ping():
        return None
    return current.reason


def hit(key: str, window: int) -> int:
    """Count one event in the current ``window``-second window of ``key``; returns the count so far.

    Counted in Redis for every worker; in this process without Redis or while it is away.
    """
    r = client()
    if r is not None:
        full_key = f"rl:{key}"
        try:
            pipe = r.pipeline()
            pipe.incr(full_key)
            pipe.expire(full_key, window, nx=True)
            count, _ = pipe.execute()
        except redis.RedisError as error:
            failed(error)
        else:
            answered()
            return int(count)
    return current_app.extensions["local_counters"].hit(key, window)


def get_value(key: str) -> Any:
    """The value ``set_value`` stored under ``key``, or None once it expired or was never set.

    Values travel as JSON, so what comes back is a fresh copy (tuples come back as lists).
    """
    r = client()
    text_value = None
    if r is not None:
        try:
            text_value = r.get(f"kv:{key}")
        except redis.RedisError as error:
            failed(error)
            r = None
        else:
            answered()
    if r is None:
        text_value = current_app.extensions["local_values"].get(key)
    return None if text_value is None else json.loads(text_value)


def set_value(key: str, value: Any, ttl: float | None) -> None:
    """Store a JSON-serialisable ``value`` under ``key`` for ``ttl`` seconds (None: no expiry).

    Shared by every worker through Redis; without Redis (or while it is away), kept in this
    process only. Either way it is a cache: callers must be able to rebuild the value when it is gone.
    """
    text_value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    r = client()
    if r is not None:
        try:
            if ttl is None:
                r.set(f"kv:{key}", text_value)
            else:
                # Redis counts whole milliseconds, at least one.
                r.set(f"kv:{key}", text_value, px=max(1, int(ttl * 1000)))
        except redis.RedisError as error:
            failed(error)
        else:
            answered()
            return
    current_app.extensions["local_values"].set(key, text_value, ttl)


def forget_values(*keys: str) -> None:
    """Drop what ``set_value`` stored under ``keys``: in Redis, and in this process (where it went while Redis was away)."""
    if not keys:
        return
    r = client()
    if r is not None:
        try:
            r.delete(*(f"kv:{key}" for key in keys))
        except redis.RedisError as error:
            failed(error)
        else:
            answered()
    local = current_app.extensions["local_values"]
    for key in keys:
        local.forget(key)


@contextlib.contextmanager
def lock(name: str, timeout: float = 10.0) -> Iterator[None]:
    """A lock shared by every worker: in Redis, else in the database (MariaDB/MySQL), else in this process.

    Raises TimeoutError when it is not taken within ``timeout`` seconds. A Redis lock expires after
    ``timeout`` seconds even if not released; a database lock lasts until released (or until its
    connection ends). If Redis goes away while the lock is held, it is left to expire.
    """
    r = client()
    if r is not None:
        held = r.lock(f"lock:{name}", timeout=timeout, blocking_timeout=timeout)
        try:
            taken = held.acquire()
        except redis.exceptions.LockError:
            raise
        except redis.RedisError as error:
            failed(error)
        else:
            answered()
            if not taken:
                raise TimeoutError(f"could not take lock {name}")
            try:
                yield
            finally:
                try:
                    held.release()
                except redis.exceptions.LockError:
                    logger.warning("lock %s expired before it was released", name)
                except redis.RedisError as error:
                    failed(error)
            return
    with _fallback_lock(name, timeout):
        yield


@contextlib.contextmanager
def _fallback_lock(name: str, timeout: float) -> Iterator[None]:
    engine = _lock_engine()
    if engine is not None:
        with _database_lock(engine, name, timeout):
            yield
        return
    # SQLite: its only lock is the whole database's write lock, which the request's own writes
    # need; a SQLite deployment is one process, where a thread lock is shared by every request.
    ext = current_app.extensions
    with ext["local_locks_guard"]:
        local = ext["local_locks"].setdefault(name, threading.Lock())
    if not local.acquire(timeout=timeout):
        raise TimeoutError(f"could not take lock {name}")
    try:
        yield
    finally:
        local.release()


def _lock_engine() -> Engine | None:
    """Connections for database locks (MariaDB/MySQL only), apart from the request's pool.

    Each lock has its own connection in autocommit mode: the lock belongs to the connection, not to a
    transaction, so it survives the request's commits, holds no transaction open while WeChat is
    called, and cannot starve the request pool.
    """
    ext = current_app.extensions
    main: Engine | None = ext.get("db_engine")
    if main is None or not db.mysql_family(main.dialect):
        return None
    with ext["local_locks_guard"]:
        if ext["lock_engine"] is None:
            ext["lock_engine"] = create_engine(main.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        return ext["lock_engine"]


def database_lock_name(name: str) -> str:
    """``name`` as a ``GET_LOCK`` name: itself when short enough, else a digest of it."""
    if len(name) <= DB_LOCK_NAME_MAX:
        return name
    return "lock:" + hashlib.sha256(name.encode("utf-8")).hexdigest()[: DB_LOCK_NAME_MAX - 5]


@contextlib.contextmanager
def _database_lock(engine: Engine, name: str, timeout: float) -> Iterator[None]:
    db_name = database_lock_name(name)
    with engine.connect() as conn:
        taken = conn.execute(text("SELECT GET_LOCK(:name, :timeout)"), {"name": db_name, "timeout": timeout}).scalar()
        if taken != 1:
            raise TimeoutError(f"could not take lock {name}")
        try:
            yield
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": db_name})


def enforce_rate_limit(key: str, limit: int, window: int) -> None:
    """Raise RateLimitedError once ``key`` has been hit more than ``limit`` times in ``window`` seconds."""
    if hit(key, window) > limit:
        raise RateLimitedError(data={"retry_after_seconds": window})
