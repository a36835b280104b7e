"""Messages to members: WeChat subscribe messages within their allowances, sent through an outbox,
with the official account's template messages as the merchant's fallback."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Connect the notifying events and register the members' subscription routes."""
    from server import events
    from server.notifications import handlers, routes

    events.points_credited.connect(handlers.on_points_credited)
    events.points_settled.connect(handlers.on_points_settled)
    events.order_status_changed.connect(handlers.on_order_status_changed)
    events.refund_ended.connect(handlers.on_refund_ended)
    events.distributor_decided.connect(handlers.on_distributor_decided)
    events.lead_marked_valid.connect(handlers.on_lead_marked_valid)
    events.redemption_fulfilled.connect(handlers.on_redemption_fulfilled)
    events.oa_follow_changed.connect(handlers.on_oa_follow_changed)
    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
