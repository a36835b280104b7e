"""Reports for the merchant: channel funnel, distributors, regions, products, repeat business and points
liability, summed from daily rollup tables the scheduler keeps (``rollups``)."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the reports' admin routes and the rollup rebuild command (the scheduler runs ``report_rollups_job``)."""
    from server.reports import cli, routes

    app.cli.add_command(cli.rebuild_command)
    app.register_blueprint(routes.bp)
