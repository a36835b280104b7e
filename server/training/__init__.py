"""Training (培训) for distributors: courses by audience with ordered lessons (articles and videos),
lesson completion, and an optional short quiz with a pass mark."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the members' and the admin API's training routes."""
    from server.training import routes

    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
