"""The referral-and-points backend: ``create_app()`` builds the Flask application."""
from __future__ import annotations

import logging

from flask import Flask

from server.config import Config


def create_app(config: Config | None = None) -> Flask:
    """Build the app from ``config`` (default: the environment); nothing happens at import."""
    config = config or Config()
    config.check()
    app = Flask(__name__)
    app.config.from_object(config)
    app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if not app.testing:
        logging.basicConfig(level=app.config["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from server import cache, cli, db, errors, health, settings, wechat
    from server.accounts import routes as accounts_routes

    errors.init_app(app)
    db.init_app(app)
    cache.init_app(app)
    wechat.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(accounts_routes.bp)
    app.register_blueprint(accounts_routes.admin_bp)
    settings.init_app(app)
    cli.init_app(app)
    return app
