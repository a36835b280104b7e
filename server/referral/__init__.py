"""Referral: scenes, binding who invited whom, sign-in with a scene, leads, partners, the official account."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from server.referral import oa_routes, routes, signin_routes

    app.register_blueprint(signin_routes.bp)
    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.landing_bp)
    app.register_blueprint(routes.admin_bp)
    app.register_blueprint(oa_routes.bp)
