"""Notices (公告): announcements staff write for all members, for distributors or for one distributor
tier, with a read receipt per member and notice."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the members' and the console's notice routes."""
    from server.notices import routes

    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
