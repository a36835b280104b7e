"""``python -m server reports-rebuild``: recompute the report rollups of a range of days."""
from __future__ import annotations

from datetime import date, datetime

import click
from flask.cli import with_appcontext
from tqdm import tqdm

from server import db
from server.clock import local
from server.reports import rollups


@click.command("reports-rebuild")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First China-time day (default: the first day with data).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last China-time day (default: today).")
@with_appcontext
def rebuild_command(start: datetime | None, end: datetime | None) -> None:
    """Recompute the daily report rollups of every day from --from to --to, committing day by day."""
    sess = db.session()
    last: date = end.date() if end else local(db.utcnow()).date()
    first = start.date() if start else rollups.data_start(sess)
    if first is None:
        click.echo("no data yet; nothing to rebuild")
        return
    if first > last:
        raise click.BadParameter("must be on or before --to", param_hint="--from")
    days = rollups.days_between(first, last)
    with tqdm(total=len(days), desc="rebuilding report rollups", unit="day") as bar:

        def done(_day: date) -> None:
            db.commit()
            bar.update(1)

        rollups.refresh_days(sess, days, after_each=done)
        db.commit()  # the months the days fall in
    click.echo(f"report rollups rebuilt for {len(days)} days, {first} to {last}")

