"""Referral posters: templates the merchant designs, each member's poster drawn once and cached."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from server.posters import routes

    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
