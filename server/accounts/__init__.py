"""Members, bearer tokens, profiles, staff accounts and the audit trail: the bottom of the domain."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from server.accounts import routes

    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
