"""Feedback and reports (反馈与举报): members' suggestions and complaints, reports about a distributor,
and the staff's queue that handles them."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the members' and the admin API's feedback routes."""
    from server.feedback import routes

    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
