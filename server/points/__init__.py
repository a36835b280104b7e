"""Points: the double-entry ledger, reward rules, settlement, redemption and compliance guards."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Hook the points lifecycle onto the domain events, and register the points routes and commands."""
    from server import events
    from server.jobs import queue as jobs
    from server.points import (
        cli,
        compliance,
        incentives,
        redemption,
        routes,
        services,
        share_routes,
    )

    events.lead_marked_valid.connect(services.on_lead_marked_valid)
    events.order_status_changed.connect(services.on_order_status_changed)
    jobs.register(services.ORDER_POINTS_JOB, services.process_order_job)
    events.member_bound.connect(redemption.on_member_bound)
    events.distributor_approved.connect(incentives.on_distributor_approved)
    cli.init_app(app)
    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
    app.register_blueprint(share_routes.bp)
    app.register_blueprint(share_routes.admin_bp)
    compliance.register_cli(app)
