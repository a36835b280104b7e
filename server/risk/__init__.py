"""Risk controls: fraud signals scored when events happen, holds on risky rewards, and the review queue.

The package sits above points, orders and referral and reacts to them only through domain events
(``server.events``); the one thing points must consult, the hold on an order's or a lead's rewards,
is ``points.models.RewardHold``, which points owns and reads when rewards mature, so no layer
imports upward.
"""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Connect the scored events and register the review routes."""
    from server import events
    from server.risk import handlers, routes

    events.member_signed_in.connect(handlers.on_member_signed_in)
    events.member_bound.connect(handlers.on_member_bound)
    events.order_status_changed.connect(handlers.on_order_status_changed)
    events.refund_ended.connect(handlers.on_refund_ended)
    events.lead_opened.connect(handlers.on_lead_opened)
    events.redemption_placed.connect(handlers.on_redemption_placed)
    events.scene_issued.connect(handlers.on_scene_issued)
    app.register_blueprint(routes.admin_bp)
