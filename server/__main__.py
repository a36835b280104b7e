"""``python -m server …``: the operator's command line."""
import click
from flask import Flask
from flask.cli import FlaskGroup, ScriptInfo

from server import create_app
from server.config import ConfigError


def _create_app() -> Flask:
    """The app from the environment; a configuration it refuses ends the command with its message and status 1."""
    try:
        return create_app()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


class ServerGroup(FlaskGroup):
    """Flask's group, whose ``--help`` shows a refused configuration as its message rather than a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            ctx.ensure_object(ScriptInfo).load_app()
        except click.ClickException as error:
            click.secho(f"Error: {error.format_message()}\n", err=True, fg="red")
            return []
        return super().list_commands(ctx)


cli = ServerGroup(
    create_app=_create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    set_debug_flag=False,
    help="WeChat referral-and-points backend.",
)

if __name__ == "__main__":
    cli.main(prog_name="python -m server")
