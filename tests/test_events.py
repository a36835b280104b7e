"""Domain events: lower packages announce, higher ones connect their handlers in init_app."""
from __future__ import annotations

from typing import Any

from flask import Flask

from server import events
from server.distribution import services as distribution
from server.notifications import handlers as notifications
from server.points import incentives, redemption
from server.points import services as points
from server.posters import services as posters
from server.risk import handlers as risk

#: Every event and the handlers the app connects to it, in the order they run.
CONNECTED = {
    events.order_status_changed: [
        distribution.on_order_status_changed, points.on_order_status_changed, notifications.on_order_status_changed, risk.on_order_status_changed,
    ],
    events.lead_marked_valid: [points.on_lead_marked_valid, notifications.on_lead_marked_valid],
    events.member_bound: [redemption.on_member_bound, risk.on_member_bound],
    events.distributor_approved: [incentives.on_distributor_approved],
    events.member_profile_changed: [posters.on_member_profile_changed],
    events.points_credited: [notifications.on_points_credited],
    events.points_settled: [notifications.on_points_settled],
    events.refund_ended: [notifications.on_refund_ended, risk.on_refund_ended],
    events.distributor_decided: [notifications.on_distributor_decided],
    events.redemption_fulfilled: [notifications.on_redemption_fulfilled],
    events.oa_follow_changed: [notifications.on_oa_follow_changed],
    events.member_signed_in: [risk.on_member_signed_in],
    events.lead_opened: [risk.on_lead_opened],
    events.redemption_placed: [risk.on_redemption_placed],
    events.scene_issued: [risk.on_scene_issued],
}


def test_each_package_connects_its_handlers_once(app: Flask, app_factory: Any) -> None:
    app_factory()  # a second app connects nothing twice
    for signal, handlers in CONNECTED.items():
        assert list(signal.receivers_for(None)) == handlers, signal.name


def test_every_event_is_declared_in_one_module() -> None:
    declared = {value for value in vars(events).values() if isinstance(value, type(events.member_bound))}
    assert declared == set(CONNECTED)
