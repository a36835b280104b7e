"""Schema migrations through Alembic, driven from the app's own engine."""
from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask

from server.config import ROOT


def alembic_config(app: Flask) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", app.config["DATABASE_URL"].replace("%", "%%"))
    return cfg


def upgrade(app: Flask, revision: str = "head") -> None:
    """Bring the database schema to ``revision`` (default: the newest)."""
    cfg = alembic_config(app)
    with app.extensions["db_engine"].begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(app: Flask, revision: str) -> None:
    cfg = alembic_config(app)
    with app.extensions["db_engine"].begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
