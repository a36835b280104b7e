"""Redis going away degrades nothing essential, and the app goes back to it when it returns.

The shared Redis is never stopped: the app talks to it through a loopback proxy that the test
closes (the outage) and opens again (Redis returns), or to a closed port.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
import redis
from sqlalchemy import func, select

from server import db
from server.accounts.models import StaffRole
from server.accounts.services import create_staff
from server.posters.models import PosterImage
from server.referral.models import Lead

#: Nothing listens here: connecting is refused at once.
CLOSED_REDIS = "redis://127.0.0.1:9/0"
POSTERS = "/api/v1/referral/posters"
#: Seconds the app skips Redis after a failure, short so the test sees it come back.
RETRY_SECONDS = 0.5


class RedisProxy:
    """Forwards a loopback port to Redis; ``stop()`` is an outage, ``start()`` Redis coming back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._guard = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        """Close the port and every forwarded connection; returns once all threads ended."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._guard:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), "proxy thread did not end"

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            upstream = socket.create_connection(self.target, timeout=5)
            with self._guard:
                self._sockets += [downstream, upstream]
            self._spawn(self._pump, downstream, upstream)
            self._spawn(self._pump, upstream, downstream)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[tuple[RedisProxy, str]]:
    """A started proxy to this worker's Redis db, and the URL that reaches Redis through it."""
    parts = urlsplit(redis_url)
    proxy = RedisProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    proxy.start()
    yield proxy, f"redis://127.0.0.1:{proxy.port}{parts.path}"
    proxy.stop()


def _count(app: Any, model: Any) -> int:
    with app.app_context():
        return db.session().scalar(select(func.count()).select_from(model)) or 0


def _sign_in(client: Any, name: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/wx-login", json={"code": f"sandbox:{name}"})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['data']['token']}"}


def test_everything_essential_works_through_an_outage_and_redis_is_used_again(redis_proxy, app_factory, redis_url, sandbox):
    proxy, proxied_url = redis_proxy
    app = app_factory(REDIS_URL=proxied_url, REDIS_TIMEOUT=0.5, REDIS_RETRY_SECONDS=RETRY_SECONDS)
    client = app.test_client()
    direct = redis.Redis.from_url(redis_url)
    counter = "rl:login:addr:127.0.0.1"
    state = sandbox.app.extensions["sandbox_state"]
    with app.app_context():
        create_staff(db.session(), username="owner-1", password="correct-horse", role=StaffRole.owner)
        db.commit()

    _sign_in(client, "before")
    assert int(direct.get(counter)) == 1
    health = client.get("/healthz").get_json()["data"]
    assert (health["status"], health["redis"], "reason" in health) == ("ok", True, False)

    proxy.stop()
    try:
        tokens_before = state.token_requests
        started = time.monotonic()
        alice = _sign_in(client, "alice")
        staff = client.post("/admin/api/v1/auth/login", json={"username": "owner-1", "password": "correct-horse"})
        assert staff.status_code == 200, staff.get_json()
        phone = client.post("/api/v1/me/phone", headers=alice, json={"code": "sandbox-phone:13800138000"})
        assert phone.status_code == 200, phone.get_json()
        poster = client.post(POSTERS, headers=alice, json={"channel": "h5_link"})
        assert poster.status_code == 200, poster.get_json()
        drawn = client.post(POSTERS, headers=alice, json={})
        assert drawn.status_code == 200, drawn.get_json()
        image = client.get(urlsplit(drawn.get_json()["data"]["image_url"]).path)
        assert image.status_code == 200 and image.data.startswith(b"\x89PNG")
        lead = client.post(
            "/api/v1/referral/leads", headers=alice, json={"contact_name": "王先生", "phone": "13900001111", "note": "询价"}
        )
        assert lead.status_code == 201, lead.get_json()
        form = client.post(
            f"/s/{poster.get_json()['data']['scene']}/lead", data={"contact_name": "李女士", "phone": "13700001111", "note": "要做小程序"}
        )
        assert form.status_code == 200
        assert _count(app, Lead) == 2
        # Signing in twice more is counted in this process while Redis is away, not lost and not in Redis.
        _sign_in(client, "bob")
        assert int(direct.get(counter)) == 1
        # One direct token fetch for the phone and the code, kept in the process for the next call.
        assert state.token_requests == tokens_before + 1
        health = client.get("/healthz")
        assert health.status_code == 200
        data = health.get_json()["data"]
        assert data["status"] == "degraded" and data["redis"] is False
        assert "Redis" in data["reason"]
        # The breaker keeps a dead Redis from costing every request a connection attempt.
        assert time.monotonic() - started < 10
    finally:
        proxy.start()

    time.sleep(RETRY_SECONDS + 0.1)
    _sign_in(client, "carol")
    assert int(direct.get(counter)) == 2  # counted in Redis again
    health = client.get("/healthz").get_json()["data"]
    assert (health["status"], health["redis"], "reason" in health) == ("ok", True, False)
    direct.close()


def test_a_closed_redis_port_costs_no_wait_and_rate_limits_still_hold(app_factory, sandbox):
    app_factory()  # the first app's Redis (if any) is the one flushed after the test
    app = app_factory(REDIS_URL=CLOSED_REDIS, REDIS_TIMEOUT=0.5, LOGIN_RATE_LIMIT=3)
    client = app.test_client()
    statuses = [client.post("/api/v1/auth/wx-login", json={"code": "sandbox:dora"}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    health = client.get("/healthz").get_json()["data"]
    assert health["status"] == "degraded" and "Redis" in health["reason"]


@pytest.mark.slow
def test_concurrent_poster_draws_in_an_outage_draw_once(app_factory, sandbox):
    """Two workers (two apps, each with its own process-local state) and two threads each."""
    first = app_factory()
    workers = [app_factory(REDIS_URL=CLOSED_REDIS, REDIS_TIMEOUT=0.5)]
    if first.extensions["db_engine"].dialect.name == "mysql":
        workers.append(app_factory(REDIS_URL=CLOSED_REDIS, REDIS_TIMEOUT=0.5))
    else:
        workers.append(workers[0])  # SQLite serves one process: the lock is the process's own
    headers = _sign_in(workers[0].test_client(), "erin")
    state = sandbox.app.extensions["sandbox_state"]
    before = state.calls["/wxa/getwxacodeunlimit"]
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def draw(worker: Any) -> None:
        local = worker.test_client()
        barrier.wait()
        response = local.post(POSTERS, headers=headers, json={})
        results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=draw, args=(worker,)) for worker in workers for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [status for status, _ in results] == [200] * 4, results
    assert sorted(body["data"]["cached"] for _, body in results) == [False, True, True, True]
    assert state.calls["/wxa/getwxacodeunlimit"] == before + 1
    assert _count(first, PosterImage) == 1


def test_after_a_failure_redis_is_skipped_for_a_while_then_tried_again(app_factory, monkeypatch):
    from server import cache

    app_factory()
    app = app_factory(REDIS_URL=CLOSED_REDIS, REDIS_TIMEOUT=0.5, REDIS_RETRY_SECONDS=0.3)
    link = app.extensions["redis_link"]
    attempts: list[str] = []
    real_pipeline = link.client.pipeline
    monkeypatch.setattr(link.client, "pipeline", lambda *a, **k: attempts.append("hit") or real_pipeline(*a, **k))
    with app.app_context():
        assert [cache.hit("k", 60) for _ in range(5)] == [1, 2, 3, 4, 5]
        assert attempts == ["hit"]  # one attempt, then the breaker skips Redis
        assert link.reason is not None and "127.0.0.1" not in link.reason
        time.sleep(0.35)
        assert cache.hit("k", 60) == 6
        assert attempts == ["hit", "hit"]  # tried again once the pause was over
        cache.set_value("v", {"a": 1}, None)
        assert cache.get_value("v") == {"a": 1}  # kept in the process meanwhile


def test_database_locks_exclude_each_other_and_time_out(app_factory):
    """The fallback lock: on MariaDB a GET_LOCK on a connection of its own, on SQLite the process's."""
    from server import cache

    app_factory()
    app = app_factory(REDIS_URL=CLOSED_REDIS, REDIS_TIMEOUT=0.5)
    long_name = "poster:" + "x" * 200
    assert len(cache.database_lock_name(long_name)) <= cache.DB_LOCK_NAME_MAX
    assert cache.database_lock_name(long_name) != cache.database_lock_name(long_name + "y")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with app.app_context(), cache.lock(long_name, timeout=5):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        with app.app_context():
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                with cache.lock(long_name, timeout=1):
                    pass
            assert time.monotonic() - started < 5
            with cache.lock("another-name", timeout=1):  # other names are not held up
                pass
    finally:
        release.set()
        thread.join(10)
    with app.app_context(), cache.lock(long_name, timeout=1):
        pass  # released with the holder
