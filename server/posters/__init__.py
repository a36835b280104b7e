"""Referral posters: templates the merchant designs, each member's poster drawn once and cached."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Redraw posters when what they show changes; register the poster routes."""
    from server import events
    from server.posters import routes, services

    events.member_profile_changed.connect(services.on_member_profile_changed)
    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
