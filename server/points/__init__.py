"""Points: the double-entry ledger, reward rules, settlement, redemption and compliance guards."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Hook the points lifecycle onto leads and orders, and register the points routes and commands."""
    from server.orders.services import on_status_change
    from server.points import cli, compliance, routes, services, share_routes
    from server.referral.services import on_lead_valid

    on_lead_valid(services.reward_valid_lead)
    on_status_change(services.follow_order)
    cli.init_app(app)
    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
    app.register_blueprint(share_routes.bp)
    app.register_blueprint(share_routes.admin_bp)
    compliance.register_cli(app)
