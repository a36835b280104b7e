"""Distributors (推广员): applications and approval, the two tiers, sales grades, promotion materials."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Keep distributors' grades in step with their own sales, and give them their tier's discount."""
    from server import events
    from server.distribution.cli import regrade_command
    from server.distribution.services import member_discount_bp, on_order_status_changed
    from server.orders.services import set_discount_source

    events.order_status_changed.connect(on_order_status_changed)
    set_discount_source(member_discount_bp)
    app.cli.add_command(regrade_command)
