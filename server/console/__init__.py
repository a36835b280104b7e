"""The merchant's web console at ``/console/``: server-rendered pages on the admin API's services.

Jinja2 templates, htmx for in-place filters and Apache ECharts for charts, both vendored under
``static/vendor/`` (``scripts/vendor-assets``). Every console form carries a CSRF token
(Flask-WTF's ``CSRFProtect``, checked only here, so the bearer-token JSON APIs are untouched); htmx
sends it in the ``X-CSRFToken`` header. Pages are sent with their own Content-Security-Policy:
scripts and styles from this origin only, nothing inline.
"""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from server.console import media, routes
    # The page modules add their routes to routes.bp as they load, before it is registered below.
    from server.console import (  # noqa: F401
        contract_pages,
        distributors_pages,
        feedback_pages,
        export_pages,
        lead_pages,
        materials_pages,
        notices_pages,
        notifications_pages,
        orders_pages,
        partner_pages,
        points_pages,
        posters_pages,
        products_pages,
        programme_pages,
        redemption_pages,
        report_pages,
        risk_pages,
        training_pages,
    )

    app.config.update(
        # The cookie session belongs to the console alone: sent only under /console, never readable by
        # scripts, not sent on cross-site subrequests, and over HTTPS only in production.
        SESSION_COOKIE_NAME="console_session",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=app.config.get("APP_ENV") == "production",
        # Checked by the console's before_request, not on every POST of the app.
        WTF_CSRF_CHECK_DEFAULT=False,
        # The token lives as long as the session, which the idle timeout already bounds.
        WTF_CSRF_TIME_LIMIT=None,
    )
    routes.csrf.init_app(app)

    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.entry_bp)
    app.register_blueprint(media.bp)
