"""Fixtures shared by every tier.

The database is the one the run is configured for: a SQLite file by default,
MariaDB when TEST_DATABASE_URL says so. It is migrated once per run with
Alembic and emptied after every test. Redis is used when TEST_REDIS_URL is set,
and its test database is flushed after every test. WeChat is the sandbox,
served on a real port, so the wechatpy clients speak HTTP to it.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit
from typing import Any, Callable, Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, make_url, select, text
from werkzeug.routing import Rule

from server import create_app, migrate
from server.config import TestingConfig
from server.db import make_engine
from server.models import metadata
from wechat_sandbox import (
    SandboxServer,
    create_sandbox_app,
    pay_merchant_from_config,
    sandbox_apps_from_config,
    serve_in_thread,
)


def _reuse_url_builders() -> None:
    """Build each URL rule's builder once per process instead of once per app.

    Werkzeug generates and compiles two small functions for every rule an app registers (most of
    what building the app costs), and a test run builds an app for nearly every test. A builder is
    a function of the rule's text, its defaults and its parsed parts, called with the rule bound to
    it, so rules alike in those share one.
    """
    compile_builder = Rule._compile_builder
    builders: dict[tuple[Any, ...], Callable[..., tuple[str, str]]] = {}

    def reused(self: Rule, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        key = (self.rule, repr(sorted((self.defaults or {}).items())), tuple(self._trace), append_unknown)
        builder = builders.get(key)
        if builder is None:
            builder = builders[key] = compile_builder(self, append_unknown)
        return builder

    Rule._compile_builder = reused  # type: ignore[method-assign]


_reuse_url_builders()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """The fake WeChat, on an ephemeral port, for the whole run."""
    config = vars(TestingConfig())
    server = serve_in_thread(
        create_sandbox_app(sandbox_apps_from_config(config), seed="tests", pay=pay_merchant_from_config(config))
    )
    yield server
    server.shutdown()


def _worker_number() -> int:
    """0 without pytest-xdist; N for its worker gwN, so parallel workers never share a database."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") else 0


def _worker_database(url: str) -> str:
    """The MySQL database for this worker: referral_test, referral_test_gw1, …, created if missing."""
    parsed = make_url(url)
    if not os.environ.get("PYTEST_XDIST_WORKER") or parsed.get_backend_name() != "mysql":
        return url
    parsed = parsed.set(database=f"{parsed.database}_{os.environ['PYTEST_XDIST_WORKER']}")
    server = create_engine(parsed.set(database=""))
    with server.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    server.dispose()
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly migrated test database (one per xdist worker)."""
    url = _worker_database(os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}")
    engine = make_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "mysql":
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
        for table in reversed(metadata.sorted_tables):
            conn.execute(text(f"DROP TABLE IF EXISTS {table.name}"))
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        if conn.dialect.name == "mysql":
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
    engine.dispose()
    config = TestingConfig()
    config.DATABASE_URL = url
    migrator = create_app(config)
    migrate.upgrade(migrator)
    migrator.extensions["db_engine"].dispose()
    yield url


def _worker_redis(url: str | None) -> str | None:
    """Each xdist worker flushes its own Redis database (15, 14, …)."""
    if not url:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{int(parts.path.lstrip('/') or 0) - _worker_number()}"))


def make_config(database_url: str, sandbox: SandboxServer, **overrides: Any) -> TestingConfig:
    config = TestingConfig()
    config.DATABASE_URL = database_url
    config.REDIS_URL = _worker_redis(config.REDIS_URL)
    config.WECHAT_API_BASE = sandbox.base_url
    config.WECHAT_PAY_API_BASE = sandbox.base_url
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


#: Rows the migrations seed and every run relies on (the named locks, so first use never races).
KEPT_TABLES = frozenset({"mutexes"})


def _empty_database(app: Flask) -> None:
    with app.extensions["db_engine"].begin() as conn:
        mysql = conn.dialect.name == "mysql"
        if mysql:
            # Rows pointing at rows of their own table (contract phases) cannot be deleted in one
            # statement with checks on; every table is emptied, so nothing dangles afterwards.
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
        for table in reversed(metadata.sorted_tables):
            if table.name not in KEPT_TABLES:
                conn.execute(table.delete())
        if mysql:
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")


@pytest.fixture
def app_factory(database_url: str, sandbox: SandboxServer) -> Iterator[Callable[..., Flask]]:
    """Build apps on the test database with config overrides; all are cleaned up after the test."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app(make_config(database_url, sandbox, **overrides))
        apps.append(app)
        return app

    yield build
    if apps:
        _empty_database(apps[0])
        redis_client = apps[0].extensions["redis"]
        if redis_client is not None:
            redis_client.flushdb()
    for app in apps:
        app.extensions["db_engine"].dispose()


class DemoShop:
    """The rows ``seed-demo`` writes, made once per worker and inserted afresh where a test asks for them.

    Seeding through the services takes seconds (staff passwords, the business story, a month of report
    rollups); inserting the same rows takes a fraction of one. The rows are taken on an empty database
    and the database is emptied again, so the first test that asks sees what every later one sees. The
    demo's history is dated from the day it was made: a test on a later day (in the shop's time) seeds
    through the services instead.
    """

    def __init__(self, database_url: str, sandbox: SandboxServer) -> None:
        from server import db
        from server.clock import local
        from server.demo import seed_demo

        app = create_app(make_config(database_url, sandbox))
        with app.app_context():
            list(seed_demo(db.session()))
            db.commit()
        self.day = local(db.utcnow()).date()
        with app.extensions["db_engine"].connect() as conn:
            self.rows = {
                table: [dict(row._mapping) for row in conn.execute(select(table).order_by(*table.primary_key.columns))]
                for table in metadata.sorted_tables
                if table.name not in KEPT_TABLES
            }
        _empty_database(app)
        if app.extensions["redis"] is not None:
            app.extensions["redis"].flushdb()
        app.extensions["db_engine"].dispose()

    def load(self, app: Flask) -> None:
        """Put the demo shop into ``app``'s (empty) database."""
        from server import db
        from server.clock import local
        from server.demo import seed_demo

        if local(db.utcnow()).date() != self.day:
            with app.app_context():
                list(seed_demo(db.session()))
                db.commit()
            return
        with app.extensions["db_engine"].begin() as conn:
            mysql = conn.dialect.name == "mysql"
            if mysql:
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
            else:
                conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
            for table, rows in self.rows.items():
                if rows:
                    conn.execute(table.insert(), rows)
            if mysql:
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")


@pytest.fixture(scope="session")
def demo_shop(database_url: str, sandbox: SandboxServer) -> DemoShop:
    """``demo_shop.load(app)`` gives a test the demo shop of ``seed-demo`` without seeding it again."""
    return DemoShop(database_url, sandbox)


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    return app_factory()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def wx_login(client: FlaskClient) -> Callable[..., dict[str, Any]]:
    """``wx_login("alice")`` signs in through the sandbox; returns the response's data with a ``headers`` key."""

    def login(name: str, scene: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"code": f"sandbox:{name}"}
        if scene is not None:
            body["scene"] = scene
        response = client.post("/api/v1/auth/wx-login", json=body)
        assert response.status_code == 200, response.get_json()
        data = response.get_json()["data"]
        data["headers"] = {"Authorization": f"Bearer {data['token']}"}
        return data

    return login


@pytest.fixture
def make_staff(app: Flask) -> Callable[..., Any]:
    """``make_staff("owner")`` creates a staff account with that role."""
    from server import db
    from server.accounts.models import StaffRole
    from server.accounts.services import create_staff

    def make(role: str, username: str | None = None, password: str = "correct-horse") -> Any:
        with app.app_context():
            staff = create_staff(db.session(), username=username or f"{role}-user", password=password, role=StaffRole(role))
            db.commit()
            return staff

    return make


@pytest.fixture
def staff_login(client: FlaskClient, make_staff: Callable[..., Any]) -> Callable[..., dict[str, str]]:
    """``staff_login("finance")`` creates that staff member and returns their Authorization header."""

    def login(role: str) -> dict[str, str]:
        staff = make_staff(role)
        response = client.post("/admin/api/v1/auth/login", json={"username": staff.username, "password": "correct-horse"})
        assert response.status_code == 200, response.get_json()
        return {"Authorization": f"Bearer {response.get_json()['data']['token']}"}

    return login


@pytest.fixture
def redis_url() -> str:
    url = _worker_redis(os.environ.get("TEST_REDIS_URL"))
    if not url:
        pytest.skip("TEST_REDIS_URL not set")
    redis.Redis.from_url(url).ping()
    return url
