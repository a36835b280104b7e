"""Domain events: lower packages announce, higher ones connect their handlers in init_app."""
from __future__ import annotations

from typing import Any

from flask import Flask

from server import events
from server.distribution import services as distribution
from server.points import services as points


def test_each_package_connects_its_handlers_once(app: Flask, app_factory: Any) -> None:
    app_factory()  # a second app connects nothing twice
    order_handlers = set(events.order_status_changed.receivers_for(None))
    assert {points.on_order_status_changed, distribution.on_order_status_changed} <= order_handlers
    assert points.on_lead_marked_valid in set(events.lead_marked_valid.receivers_for(None))
    assert len(events.order_status_changed.receivers) == 2 and len(events.lead_marked_valid.receivers) == 1
