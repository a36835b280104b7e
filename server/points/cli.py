"""Points commands: ``settle``, ``ledger-check`` and ``points grant`` (and the ``scheduler`` that runs the jobs)."""
from __future__ import annotations

import uuid
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from tqdm import tqdm

from server import db
from server.points import settlement
from server.points.errors import InsufficientPointsError, SettlementClaimedError
from server.points.services import member_balances

points_cli = AppGroup("points", help="Points: manual grants and adjustments.")


@click.command("settle")
@click.option("--mode", type=click.Choice(settlement.MODES), default=None, help="Default: the merchant's settlement_mode.")
@click.option("--period", default=None, help="The period to claim, e.g. weekly:2026-W47. Default: a new manual period.")
@with_appcontext
def settle_command(mode: str | None, period: str | None) -> None:
    """Settle matured points into available now, with a statement per member."""
    from server.settings.services import get_setting

    sess = db.session()
    mode = mode or get_setting(sess, "settlement_mode")
    period = period or settlement.manual_period_key()
    if len(period) > 64:
        raise click.BadParameter("at most 64 characters", param_hint="--period")

    def progress(members: list[Any]) -> Any:
        return tqdm(members, desc=f"settling {period}", unit="member")

    try:
        run = settlement.settle(sess, period=period, mode=mode, actor="cli", progress=progress)
    except SettlementClaimedError:
        raise click.ClickException(f"period {period} has already been settled; nothing was changed") from None
    db.commit()
    click.echo(f"settlement #{run.id} {run.period} ({run.mode}): {run.members} members, {run.total / 100:,.2f} points settled")


@click.command("ledger-check")
@with_appcontext
def ledger_check_command() -> None:
    """Prove the ledger's invariants; prints each violation and exits 1 if there is any."""
    from server.points.checks import check_ledger

    sess = db.session()
    if sess.get_bind().dialect.name == "mysql":
        # One snapshot for every query, so postings committed mid-check cannot look like a broken ledger.
        sess.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    report = check_ledger(sess)
    for violation in report.violations:
        click.echo(f"VIOLATION: {violation}")
    if not report.ok:
        click.echo(f"ledger-check failed: {len(report.violations)} violations")
        raise SystemExit(1)
    click.echo("ledger-check passed: " + ", ".join(f"{n} {name}" for name, n in report.counts.items()))
    click.echo("points by account kind: " + ", ".join(f"{kind} {total / 100:,.2f}" for kind, total in report.balances.items()))


@points_cli.command("grant")
@click.option("--member", "member_id", type=int, required=True, help="The member's id.")
@click.option("--points", "points_text", required=True, help="Points, up to two decimals; negative takes points back.")
@click.option("--reason", required=True, help="Why, for the member's history and the audit log.")
def grant_command(member_id: int, points_text: str, reason: str) -> None:
    """Grant (or with a negative amount, take back) a member's available points, as the owner would."""
    from server.accounts.models import Member
    from server.accounts.services import record_audit

    try:
        amount = settlement.parse_points(points_text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--points") from None
    if not reason.strip():
        raise click.BadParameter("give a reason", param_hint="--reason")
    sess = db.session()
    if sess.get(Member, member_id) is None:
        raise click.ClickException(f"no member #{member_id}")
    key = f"grant:cli:{uuid.uuid4()}"
    try:
        grant = settlement.grant_points(sess, member_id, amount, reason=reason.strip(), key=key, actor="cli")
    except InsufficientPointsError:
        available = member_balances(sess, member_id).available
        raise click.ClickException(f"member #{member_id} has only {available / 100:,.2f} points available; nothing was taken") from None
    record_audit(
        sess,
        None,
        "points.grant",
        f"member:{member_id}",
        {"amount": amount, "debt_repaid": grant.debt_repaid, "reason": reason.strip(), "key": key, "transaction_id": grant.transaction.id},
    )
    db.commit()
    balances = member_balances(sess, member_id)
    repaid = f" ({grant.debt_repaid / 100:,.2f} paid towards debt)" if grant.debt_repaid else ""
    click.echo(f"member #{member_id}: {amount / 100:+,.2f} points{repaid}; available now {balances.available / 100:,.2f}, debt {balances.debt / 100:,.2f}")


def init_app(app: Flask) -> None:
    from server.scheduler import scheduler_command

    for command in (settle_command, ledger_check_command, points_cli, scheduler_command):
        app.cli.add_command(command)
