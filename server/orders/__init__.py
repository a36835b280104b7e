"""Catalog, orders, WeChat Pay, refunds, reconciliation and offline contracts."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from server.orders import contract_routes, pay_routes, routes

    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.admin_bp)
    app.register_blueprint(contract_routes.admin_bp)
    app.register_blueprint(pay_routes.bp)  # WeChat Pay notify URLs and `reconcile`
