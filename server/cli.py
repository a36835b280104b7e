"""Commands of ``python -m server``; each package adds its own in its ``init_app``."""
from __future__ import annotations

import time

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from werkzeug.serving import run_simple

from server import db, migrate
from server.accounts.models import StaffRole
from server.accounts.services import create_staff
from server.backup import backup_command, restore_command
from server.demo import run_demo, seed_demo
from server.errors import AppError
from server.scheduler import scheduler_command

db_cli = AppGroup("db", help="Database schema (Alembic migrations).")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the schema up to REVISION (default: head)."""
    migrate.upgrade(current_app, revision)
    click.echo(f"database at {revision}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the schema down to REVISION."""
    migrate.downgrade(current_app, revision)
    click.echo(f"database at {revision}")


@db_cli.command("revision")
@click.option("-m", "--message", required=True, help="What the migration does.")
def db_revision(message: str) -> None:
    """Write a new migration from the difference between the models and the database."""
    from alembic import command

    command.revision(migrate.alembic_config(current_app), message=message, autogenerate=True)


def _start_sandbox(app: Flask, port: int) -> str:
    """Serve the WeChat sandbox on ``port``; refused unless the app is in sandbox mode."""
    if not app.config["WECHAT_SANDBOX"]:
        raise click.ClickException("the WeChat sandbox only runs in sandbox mode (WECHAT_SANDBOX)")
    # Development only, and so imported here: production code never loads the sandbox (tests/test_layers.py).
    from wechat_sandbox import (
        create_sandbox_app,
        message_push_from_config,
        sandbox_apps_from_config,
        serve_in_thread,
    )

    # The sandbox pushes the official account's messages to PUBLIC_BASE_URL/wechat/oa, as WeChat would.
    sandbox = create_sandbox_app(
        sandbox_apps_from_config(app.config), seed="sandbox", message_push=message_push_from_config(app.config)
    )
    return serve_in_thread(sandbox, port=port).base_url


def _refuse_in_production(app: Flask, what: str) -> None:
    if app.config.get("APP_ENV") != "development":
        raise click.ClickException(f"{what} is for development: APP_ENV=production never runs the sandbox or demo data")


def served_base_url(host: str, port: int) -> str:
    """The URL at which ``run`` is reached: an all-interfaces address is reached on the loopback."""
    if host in {"", "0.0.0.0", "::"}:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


@click.command("run", help="Migrate the database and serve the API (and, in sandbox mode, the WeChat sandbox).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@with_appcontext
def run_command(host: str, port: int) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # current_app is typed as the Flask it proxies
    migrate.upgrade(app)
    if not app.config.get("PUBLIC_BASE_URL_SET"):
        # Notify URLs, poster links and the sandbox's message push must reach this very server.
        app.config["PUBLIC_BASE_URL"] = served_base_url(host, port)
    if app.config["WECHAT_SANDBOX"]:
        _refuse_in_production(app, "the WeChat sandbox")  # check() already refused it; never start it anyway
        base = _start_sandbox(app, app.config["WECHAT_SANDBOX_PORT"])
        click.echo(f"WeChat sandbox at {base}")
    click.echo(f"API at http://{host}:{port}/ (public URL {app.config['PUBLIC_BASE_URL']}; database: {app.extensions['db_engine'].url.render_as_string()})")
    # Flask's app.run() refuses to start under its own CLI, so serve with Werkzeug directly.
    run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=False)


@click.command("sandbox", help="Serve only the WeChat sandbox (for gunicorn-served development setups).")
@click.option("--port", default=None, type=int, help="Default: WECHAT_SANDBOX_PORT.")
@with_appcontext
def sandbox_command(port: int | None) -> None:
    _refuse_in_production(current_app, "the WeChat sandbox")
    base = _start_sandbox(current_app, port or current_app.config["WECHAT_SANDBOX_PORT"])
    click.echo(f"WeChat sandbox at {base} (Ctrl+C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


@click.command("create-staff")
@click.argument("username")
@click.option("--role", type=click.Choice(["owner", "operations", "finance"]), required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@with_appcontext
def create_staff_command(username: str, role: str, password: str) -> None:
    """Create a console account for merchant staff."""
    try:
        staff = create_staff(db.session(), username=username, password=password, role=StaffRole(role))
        db.commit()
    except AppError as error:
        raise click.ClickException(f"{error.message} {error.data or ''}".strip()) from None
    click.echo(f"staff #{staff.id} {staff.username} ({staff.role.value}) created")


@click.command("seed-demo")
@with_appcontext
def seed_demo_command() -> None:
    """Load demo staff (and, as features land, demo catalog); safe to run twice. Sandbox only."""
    _refuse_in_production(current_app, "seed-demo")
    if not current_app.config["WECHAT_SANDBOX"]:
        raise click.ClickException("seed-demo only runs against the WeChat sandbox")
    migrate.upgrade(current_app)
    for line in seed_demo(db.session()):
        click.echo(line)
    db.commit()


@click.command("demo")
@click.option("--base-url", default="http://127.0.0.1:5000", show_default=True, help="A running server in sandbox mode.")
@click.option("--sandbox-url", default=None, help="Its WeChat sandbox (default: the one its /healthz reports).")
@with_appcontext
def demo_command(base_url: str, sandbox_url: str | None) -> None:
    """Drive a scripted story over HTTP against a running server, printing each step. Development only."""
    _refuse_in_production(current_app, "demo")
    ok = run_demo(base_url.rstrip("/"), click.echo, sandbox_url)
    if not ok:
        raise SystemExit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(db_cli)
    for command in (run_command, sandbox_command, create_staff_command, seed_demo_command, demo_command, scheduler_command, backup_command, restore_command):
        app.cli.add_command(command)
