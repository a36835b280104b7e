"""``python -m server settings``: list, read and change merchant settings from the command line."""
from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from server import db
from server.errors import AppError
from server.settings.services import all_settings, change_setting, get_setting, specs

settings_cli = AppGroup("settings", help="Merchant settings (list, get KEY, set KEY VALUE).")


@settings_cli.command("list")
def list_command() -> None:
    """Every setting with its value and default."""
    values = all_settings(db.session())
    for spec in specs():
        marker = "" if values[spec.key] == spec.default else "  (changed)"
        click.echo(f"{spec.key} = {json.dumps(values[spec.key], ensure_ascii=False)}{marker}")
        click.echo(f"    {spec.description}")


@settings_cli.command("get")
@click.argument("key")
def get_command(key: str) -> None:
    """Print one setting's value as JSON."""
    try:
        click.echo(json.dumps(get_setting(db.session(), key), ensure_ascii=False))
    except AppError as error:
        raise click.ClickException(error.message) from None


@settings_cli.command("set")
@click.argument("key")
@click.argument("value")
def set_command(key: str, value: str) -> None:
    """Change a setting; VALUE is text (true/false, a number, or a choice)."""
    try:
        new = change_setting(db.session(), key, value, staff_id=None)
    except AppError as error:
        raise click.ClickException(error.message) from None
    db.commit()
    click.echo(f"{key} = {json.dumps(new, ensure_ascii=False)}")
