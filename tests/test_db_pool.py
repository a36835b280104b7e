"""The MariaDB pool without a ping per checkout or a rollback per checkin, still correct when the server
closes its connections (a restart, ``wait_timeout``, a KILL) and when a connection comes back with a
transaction open."""
from __future__ import annotations

import time
from typing import Any, Callable

import pymysql
import pytest
from flask import Flask
from sqlalchemy import make_url, text

from server import db
from tests.statements import is_mysql, round_trips


@pytest.fixture
def mariadb(app: Flask) -> Flask:
    if not is_mysql(app):
        pytest.skip("the socket check and the checkin rule are MariaDB's (TEST_DATABASE_URL)")
    return app


def _server_connection(app: Flask) -> Any:
    url = make_url(app.config["DATABASE_URL"])
    return pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, password=url.password, database=url.database)


def _app_thread_ids(app: Flask) -> list[int]:
    """The server's ids of the connections open on the test database, but for the one asking."""
    with _server_connection(app) as admin, admin.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()")
        return [int(row[0]) for row in cur.fetchall()]


def _until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


def _closed_by_server(app: Flask, thread_id: int) -> bool:
    with _server_connection(app) as admin, admin.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (thread_id,))
        return cur.fetchone()[0] == 0


def test_a_connection_the_server_killed_is_replaced_at_checkout(mariadb: Flask, client: Any, wx_login: Any) -> None:
    alice = wx_login("alice")
    killed = _app_thread_ids(mariadb)
    assert killed
    with _server_connection(mariadb) as admin, admin.cursor() as cur:
        for thread_id in killed:
            cur.execute(f"KILL CONNECTION {thread_id}")
    _until(lambda: all(_closed_by_server(mariadb, t) for t in killed))
    # As after a server restart: the next request gets a new connection, not an error.
    with round_trips(mariadb) as sent:
        response = client.get("/api/v1/me", headers=alice["headers"])
    assert response.status_code == 200, response.get_json()
    assert "PING" not in sent
    assert not set(_app_thread_ids(mariadb)) & set(killed)


def test_a_connection_idle_past_wait_timeout_is_replaced_at_checkout(mariadb: Flask, client: Any, wx_login: Any) -> None:
    alice = wx_login("alice")
    with mariadb.extensions["db_engine"].connect() as conn:
        thread_id = int(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())
        conn.exec_driver_sql("SET SESSION wait_timeout = 1")
    _until(lambda: _closed_by_server(mariadb, thread_id))
    assert _closed_by_server(mariadb, thread_id)
    response = client.get("/api/v1/me", headers=alice["headers"])
    assert response.status_code == 200, response.get_json()


def test_a_transaction_left_open_on_a_checked_in_connection_is_rolled_back(mariadb: Flask) -> None:
    engine = mariadb.extensions["db_engine"]
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("INSERT INTO staff (username, password_hash, role, active, created_at) VALUES ('left-open', 'x', 'owner', 1, UTC_TIMESTAMP())")
        cur.close()
    finally:
        raw.close()  # back to the pool, never committed
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM staff WHERE username = 'left-open'")).scalar_one() == 0
        conn.commit()


def test_a_committed_read_goes_back_to_the_pool_without_a_rollback(mariadb: Flask) -> None:
    with mariadb.app_context():
        db.session().execute(text("SELECT 1"))  # the pool's connection is opened outside the count
        db.commit()
    with round_trips(mariadb) as sent, mariadb.app_context():
        db.session().execute(text("SELECT 1"))
        db.commit()
    assert sent == ["SELECT", "COMMIT"]
    with round_trips(mariadb) as sent, mariadb.app_context():
        db.session().execute(text("SELECT 1"))
        # Not committed: the session's close rolls it back, once.
    assert sent == ["SELECT", "ROLLBACK"]
