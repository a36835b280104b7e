"""Merchant settings: declared in code by each package, stored when changed, audited."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from server.settings import cli, routes

    app.register_blueprint(routes.bp)
    app.cli.add_command(cli.settings_cli)
