"""Distributor commands: ``regrade`` (every approved distributor's grade, again, from their own sales)."""
from __future__ import annotations

import click
from flask.cli import with_appcontext
from tqdm import tqdm

from server import db
from server.distribution import services


@click.command("regrade")
@with_appcontext
def regrade_command() -> None:
    """Grade every approved distributor again by their own attributed sales, with a progress bar."""
    sess = db.session()
    with tqdm(total=services.approved_count(sess), desc="regrading", unit="distributor") as bar:
        seen, changed = services.regrade_all(sess, progress=bar.update)
    db.commit()
    click.echo(f"{seen} distributors graded, {changed} changed grade")
