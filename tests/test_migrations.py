"""The migrations build exactly the schema the models describe, and run down and up again."""
from __future__ import annotations

import os
from typing import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, make_url, text

from server import create_app, migrate
from server.models import metadata
from tests.conftest import make_config


def test_models_and_migrations_agree(app):
    with app.extensions["db_engine"].connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []


@pytest.fixture
def scratch_url(tmp_path) -> Iterator[str]:
    """An empty database of the backend under test: SQLite in tmp_path, or on MySQL a database of its own
    (the test database's name + ``_mig``, dropped afterwards), so running migrations down never touches
    the tests' schema."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url or make_url(url).get_backend_name() != "mysql":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    parsed = make_url(url)
    parsed = parsed.set(database=f"{parsed.database}_{worker}_mig" if worker else f"{parsed.database}_mig")
    server = create_engine(parsed.set(database=""))
    with server.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{parsed.database}`")
        conn.exec_driver_sql(f"CREATE DATABASE `{parsed.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        yield parsed.render_as_string(hide_password=False)
    finally:
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{parsed.database}`")
        server.dispose()


def test_downgrade_to_base_and_upgrade_again(scratch_url, sandbox):
    """Every migration runs down and up again on the backend under test (MariaDB refuses some orders SQLite takes)."""
    app = create_app(make_config(scratch_url, sandbox))
    migrate.upgrade(app)
    migrate.downgrade(app, "base")
    migrate.upgrade(app)
    with app.extensions["db_engine"].connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() is not None
    app.extensions["db_engine"].dispose()


def test_lead_follow_up_migration_up_and_down(scratch_url, sandbox):
    """0010 gives the leads already in the pool a new follow-up and nobody assigned, and comes off again cleanly."""
    app = create_app(make_config(scratch_url, sandbox))
    engine = app.extensions["db_engine"]
    migrate.upgrade(app, "0009")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO leads (source, channel, content, contact_name, note, status, review_note, created_at) "
                          "VALUES ('contact', 'h5_link', '', 'x', 'need', 'new', '', '2026-01-01 00:00:00')"))
    migrate.upgrade(app, "0010")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT follow_up, assignee_id, follow_up_at FROM leads")).one() == ("new", None, None)
        tables = set(inspect(conn).get_table_names())
        assert {"lead_notes", "partner_payouts"} <= tables
    migrate.downgrade(app, "0009")
    with engine.connect() as conn:
        inspector = inspect(conn)
        assert "follow_up" not in {c["name"] for c in inspector.get_columns("leads")}
        assert "payout_id" not in {c["name"] for c in inspector.get_columns("partner_commissions")}
        assert not {"lead_notes", "partner_payouts"} & set(inspector.get_table_names())
        assert conn.execute(text("SELECT count(*) FROM leads")).scalar() == 1
    migrate.upgrade(app)
    engine.dispose()
