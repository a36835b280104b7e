"""Distributors (推广员): applications and approval, the two tiers, sales grades, promotion materials."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Keep distributors' grades in step with their own sales."""
    from server.distribution.services import regrade_inviter
    from server.orders.services import on_status_change

    on_status_change(regrade_inviter)
