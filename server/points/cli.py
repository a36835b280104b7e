"""Points commands: ``settle``, ``ledger-check`` and ``points grant`` (and the ``scheduler`` that runs the jobs)."""
from __future__ import annotations

import uuid
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select
from tqdm import tqdm

from server import db
from server.accounts.models import Member
from server.errors import AppError
from server.points import rules, settlement
from server.points.checks import DEFAULT_WORKERS, check_ledger
from server.points.errors import InsufficientPointsError, SettlementClaimedError
from server.points.incentives import (
    create_stage_rule,
    list_stage_rules,
    update_stage_rule,
)
from server.points.models import RewardOverride
from server.points.queries import member_balances
from server.points.redemption import grant_from_cli
from server.points.rules import list_overrides
from server.settings.services import get_setting

points_cli = AppGroup("points", help="Points: manual grants and adjustments.")


@click.command("settle")
@click.option("--mode", type=click.Choice(settlement.MODES), default=None, help="Default: the merchant's settlement_mode.")
@click.option("--period", default=None, help="The period to claim, e.g. weekly:2026-W47. Default: a new manual period.")
@with_appcontext
def settle_command(mode: str | None, period: str | None) -> None:
    """Settle matured points into available now, with a statement per member."""
    sess = db.session()
    mode = mode or get_setting(sess, "settlement_mode")
    period = period or settlement.manual_period_key()
    if len(period) > 64:
        raise click.BadParameter("at most 64 characters", param_hint="--period")

    bar = tqdm(desc=f"settling {period}", unit="member")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        with bar:
            run = settlement.settle(sess, period=period, mode=mode, actor="cli", progress=progress)
    except SettlementClaimedError:
        raise click.ClickException(f"period {period} has already been settled; nothing was changed") from None
    db.commit()
    click.echo(f"settlement #{run.id} {run.period} ({run.mode}): {run.members} members, {run.total / 100:,.2f} points settled")


@click.command("ledger-check")
@click.option(
    "--workers", type=click.IntRange(1, 16), default=DEFAULT_WORKERS, show_default=True,
    help="MariaDB/MySQL: checks run at once, each on a connection of its own (1: all in one snapshot).",
)
@with_appcontext
def ledger_check_command(workers: int) -> None:
    """Prove the ledger's invariants; prints each violation and exits 1 if there is any."""
    sess = db.session()
    if db.mysql_family(sess.get_bind().dialect):
        # One snapshot for the checks run in this session, so postings committed mid-check cannot look like a broken ledger.
        sess.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    report = check_ledger(sess, workers=workers)
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
        grant = grant_from_cli(sess, member_id, amount, reason=reason.strip(), key=key)
    except InsufficientPointsError:
        available = member_balances(sess, member_id).available
        raise click.ClickException(f"member #{member_id} has only {available / 100:,.2f} points available; nothing was taken") from None
    db.commit()
    balances = member_balances(sess, member_id)
    repaid = f" ({grant.debt_repaid / 100:,.2f} paid towards debt)" if grant.debt_repaid else ""
    click.echo(f"member #{member_id}: {amount / 100:+,.2f} points{repaid}; available now {balances.available / 100:,.2f}, debt {balances.debt / 100:,.2f}")


def _refused(error: Exception) -> click.ClickException:
    """An AppError as the command line shows it: its message and each field's problem."""
    data = getattr(error, "data", None) or {}
    problems = "; ".join(f"{e['field']}: {e['error']}" for e in data.get("errors", []))
    return click.ClickException(f"{getattr(error, 'message', error)}{': ' + problems if problems else ''}; nothing was changed")


override_cli = AppGroup("override", help="Per-product and per-grade level-1 reward rates (audited).")
points_cli.add_command(override_cli)


def _find_override(sess: Any, scope: str, ref_id: int) -> Any:
    return sess.scalar(select(RewardOverride).where(RewardOverride.scope == scope, RewardOverride.ref_id == ref_id))


@override_cli.command("list")
def override_list_command() -> None:
    """Every override, by scope and target."""
    rows = list_overrides(db.session())
    if not rows:
        click.echo("no reward overrides")
    for row in rows:
        rate = lambda bp: "default" if bp is None else f"{bp} bp"  # noqa: E731
        click.echo(f"{row.scope} {row.ref_id}: first {rate(row.level1_first_bp)}, repeat {rate(row.level1_repeat_bp)}")


@override_cli.command("set")
@click.option("--scope", type=click.Choice(["product", "grade"]), required=True)
@click.option("--ref", "ref_id", type=int, required=True, help="The product's or grade's id.")
@click.option("--first-bp", type=int, default=None, help="Level-1 rate on first orders, in basis points.")
@click.option("--repeat-bp", type=int, default=None, help="Level-1 rate on repeat business, in basis points.")
def override_set_command(scope: str, ref_id: int, first_bp: int | None, repeat_bp: int | None) -> None:
    """Create the override of a product or grade, or change the rates given of the existing one."""
    sess = db.session()
    existing = _find_override(sess, scope, ref_id)
    try:
        if existing is None:
            row = rules.create_override(sess, scope=scope, ref_id=ref_id, level1_first_bp=first_bp, level1_repeat_bp=repeat_bp, staff_id=None)
        else:
            changes = {k: v for k, v in (("level1_first_bp", first_bp), ("level1_repeat_bp", repeat_bp)) if v is not None}
            row = rules.update_override(sess, existing.id, changes, staff_id=None)
    except AppError as error:
        raise _refused(error) from None
    db.commit()
    click.echo(f"override #{row.id} {row.scope} {row.ref_id}: first {row.level1_first_bp}, repeat {row.level1_repeat_bp}")


@override_cli.command("remove")
@click.option("--scope", type=click.Choice(["product", "grade"]), required=True)
@click.option("--ref", "ref_id", type=int, required=True)
def override_remove_command(scope: str, ref_id: int) -> None:
    """Switch an override off: the product or grade earns the default rates again."""
    sess = db.session()
    existing = _find_override(sess, scope, ref_id)
    if existing is None:
        raise click.ClickException(f"no override for {scope} {ref_id}")
    rules.delete_override(sess, existing.id, staff_id=None)
    db.commit()
    click.echo(f"override for {scope} {ref_id} removed")


stage_cli = AppGroup("stage-rule", help="Stage and consecutive-month bonus rules on own sales (audited).")
points_cli.add_command(stage_cli)


@stage_cli.command("list")
def stage_list_command() -> None:
    """Every stage rule, on or off."""
    rules_found = list_stage_rules(db.session())
    if not rules_found:
        click.echo("no stage rules")
    for rule in rules_found:
        state = "on" if rule.active else "off"
        click.echo(
            f"#{rule.id} {rule.name}: own sales ≥ {rule.min_monthly_sales_fen} fen a month, {rule.consecutive_months} months running → {rule.bonus / 100:,.2f} points ({state})"
        )


@stage_cli.command("add")
@click.option("--name", required=True)
@click.option("--min-monthly-sales-fen", type=int, required=True, help="Own attributed sales a month, in fen.")
@click.option("--bonus", type=int, required=True, help="Hundredths of a point.")
@click.option("--months", type=int, default=1, show_default=True, help="Consecutive months the threshold must be met.")
@click.option("--inactive", is_flag=True, help="Create it switched off.")
def stage_add_command(name: str, min_monthly_sales_fen: int, bonus: int, months: int, inactive: bool) -> None:
    """Add a stage rule."""
    try:
        rule = create_stage_rule(
            db.session(), name=name, min_monthly_sales_fen=min_monthly_sales_fen, bonus=bonus, consecutive_months=months, active=not inactive, audit=True
        )
    except AppError as error:
        raise _refused(error) from None
    db.commit()
    click.echo(f"stage rule #{rule.id} {rule.name} added")


@stage_cli.command("set")
@click.argument("rule_id", type=int)
@click.option("--name", default=None)
@click.option("--min-monthly-sales-fen", type=int, default=None)
@click.option("--bonus", type=int, default=None)
@click.option("--months", type=int, default=None)
@click.option("--active/--inactive", default=None, help="Switch the rule on or off.")
def stage_set_command(rule_id: int, name: str | None, min_monthly_sales_fen: int | None, bonus: int | None, months: int | None, active: bool | None) -> None:
    """Change a stage rule, or switch it on or off."""
    changes = {"name": name, "min_monthly_sales_fen": min_monthly_sales_fen, "bonus": bonus, "consecutive_months": months, "active": active}
    try:
        rule = update_stage_rule(db.session(), rule_id, {k: v for k, v in changes.items() if v is not None}, staff_id=None)
    except AppError as error:
        raise _refused(error) from None
    db.commit()
    click.echo(f"stage rule #{rule.id} {rule.name} updated ({'on' if rule.active else 'off'})")


def init_app(app: Flask) -> None:
    for command in (settle_command, ledger_check_command, points_cli):
        app.cli.add_command(command)
