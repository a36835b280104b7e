"""Distributors (推广员): applications and approval, the two tiers, sales grades, promotion materials."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Keep distributors' grades in step with their own sales; register the routes and commands."""
    from server import events
    from server.distribution import cli, routes, services
    from server.jobs import queue as jobs

    events.order_status_changed.connect(services.on_order_status_changed)
    jobs.register(services.REGRADE_JOB, services.regrade_job)
    app.cli.add_command(cli.regrade_command)
    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
