"""``python -m server …``: the operator's command line."""
from flask.cli import FlaskGroup

from server import create_app

cli = FlaskGroup(
    create_app=lambda: create_app(),
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    set_debug_flag=False,
    help="WeChat referral-and-points backend.",
)

if __name__ == "__main__":
    cli.main(prog_name="python -m server")
