"""The migrations build exactly the schema the models describe, and run down and up again."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

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
