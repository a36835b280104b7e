"""The migrations build exactly the schema the models describe, and run down and up again."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from server import create_app, migrate
from server.models import metadata
from tests.conftest import make_config


def test_models_and_migrations_agree(app):
    with app.extensions["db_engine"].connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_downgrade_to_base_and_upgrade_again(tmp_path, sandbox):
    app = create_app(make_config(f"sqlite:///{tmp_path / 'm.db'}", sandbox))
    migrate.upgrade(app)
    migrate.downgrade(app, "base")
    migrate.upgrade(app)
    with app.extensions["db_engine"].connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() is not None
    app.extensions["db_engine"].dispose()


def test_lead_follow_up_migration_up_and_down(tmp_path, sandbox):
    """0010 gives the leads already in the pool a new follow-up and nobody assigned, and comes off again cleanly."""
    app = create_app(make_config(f"sqlite:///{tmp_path / 'm.db'}", sandbox))
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
