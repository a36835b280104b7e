"""The referral-and-points backend: ``create_app()`` builds the Flask application."""
from __future__ import annotations

from flask import Flask, Response

from werkzeug.routing import IntegerConverter

from server import db, logs
from server.config import Config


class BigIntConverter(IntegerConverter):
    """``<int:…>`` whose out-of-range values become 0, an id no row has, so the lookup answers 404.

    Refusing them in the converter instead would make Werkzeug answer 405 on paths served
    for several methods.
    """

    def to_python(self, value: str) -> int:
        number = int(value)
        return number if number <= 2**63 - 1 else 0


class App(Flask):
    """Flask whose requests commit once, in one place (the way indico's ``RH.process`` does).

    The view's answer is made a response here, before Flask finalizes it, and ``db.finish_request``
    commits it if it succeeded (status below 400) or rolls back if not. A commit that fails raises
    inside the dispatch, so the error handlers answer it, and the queued side effects never run.
    A view that raises never reaches the commit: teardown rolls its work back.
    """

    def dispatch_request(self) -> Response:
        response = self.make_response(super().dispatch_request())
        db.finish_request(response)
        return response


def create_app(config: Config | None = None) -> Flask:
    """Build the app from ``config`` (default: the environment); nothing happens at import."""
    config = config or Config()
    config.check()
    from server.api import JSONProvider

    app = App(__name__)
    app.config.from_object(config)
    app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024
    app.json = JSONProvider(app)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    if not app.testing:
        logs.configure(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])

    from server import accounts, cache, cli, console, distribution, errors, feedback, health, html, jobs, memberzone, metrics, notices, notifications, orders, points, posters, referral, reports, risk, settings, tasks, training, wechat

    # An id in a URL must fit a BIGINT; a larger one matches no route (404) instead of failing in the database.
    app.url_map.converters["int"] = BigIntConverter
    errors.init_app(app)
    html.init_app(app)
    db.init_app(app)
    metrics.init_app(app)  # request ids, request metrics, the access line and GET /metrics
    cache.init_app(app)
    tasks.init_app(app)
    jobs.init_app(app)
    wechat.init_app(app)
    app.register_blueprint(health.bp)
    # The domain packages, lowest layer first; each registers its routes and connects its event handlers.
    for package in (accounts, settings, referral, distribution, orders, points, posters, notices, training, feedback, notifications, risk):
        package.init_app(app)
    reports.init_app(app)  # reads every domain package
    console.init_app(app)  # the merchant console, on top of every package
    memberzone.init_app(app)  # the members' zone in the official account, on top of every package
    cli.init_app(app)
    return app
