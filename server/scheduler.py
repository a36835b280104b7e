"""The one scheduler process (``python -m server scheduler``) and the jobs it runs.

Each job is a plain function of ``(app, now)`` so tests and operators can run it
directly. A job first claims its period with a ``JobClaim`` row (unique on job and
period) inside the same unit of work as the work itself: a second scheduler, or a
manual run, finds the period taken and does nothing, and a job that fails rolls
its claim back with everything else, so the period is tried again.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import click
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import delete, exists, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from server import db, logs, metrics
from server.accounts import export_jobs
from server.clock import CHINA, local
from server.db import unit_of_work, utcnow
from server.distribution.services import regrade_all
from server.jobs import queue as jobs
from server.notifications import delivery
from server.orders import payments
from server.orders import services as orders
from server.orders.errors import IllegalTransitionError
from server.orders.models import Order, OrderKind, OrderStatus
from server.points import incentives, settlement
from server.points.errors import SettlementClaimedError
from server.points.models import JobClaim, OrderReward, RewardState
from server.points.services import process_order
from server.reports import rollups
from server.settings.services import get_setting
from server.wechat import wechat_pay

#: Orders changed this recently get their points brought in line on every tick; the overlap
#: with the previous ticks covers a tick that was skipped.
RECENT_MINUTES = 10
#: How far back the tick looks for paid orders whose reward was never credited.
REWARD_SWEEP_DAYS = 30
#: The per-minute job's claims are only needed while a tick could still race; older ones are pruned.
TICK_CLAIMS_KEPT = timedelta(days=2)

Job = Callable[[Flask, datetime], Any]


def _claimant() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def claim(sess: Session, job: str, period: str) -> JobClaim | None:
    """Claim ``job`` for ``period`` in this unit of work; None if another process has (or is running) it."""
    if sess.scalar(select(JobClaim.id).where(JobClaim.job == job, JobClaim.period == period)) is not None:
        return None
    row = JobClaim(job=job, period=period, claimed_by=_claimant())
    try:
        with sess.begin_nested():
            sess.add(row)
    except IntegrityError:
        return None  # another process claimed it and committed while we waited on the unique key
    except OperationalError:
        # The other claimant is still running and we waited past the lock timeout: it is theirs.
        current_app.logger.warning("job %s %s is held by another process", job, period)
        return None
    return row


def _finish(row: JobClaim) -> None:
    row.finished_at = utcnow()
    db.commit()


# -- stage-bonus -------------------------------------------------------------------------------


def stage_bonus_job(app: Flask, now: datetime) -> dict[str, Any] | None:
    """Monthly: judge last month's stage bonuses once, on the first run from the 1st (China time).

    Claims the month like the other jobs, so a second scheduler or a rerun does
    nothing, and a failed run rolls its claim back to be tried again. Safe to
    schedule daily: after the first run of a month it returns None.
    """
    month = incentives.previous_month(now)
    with unit_of_work(app) as sess:
        row = claim(sess, "stage-bonus", month)
        if row is None:
            return None
        awards = incentives.award_stage_bonuses(sess, month)
        row.finished_at = utcnow()
        db.commit()
    summary = {"month": month, "awards": len(awards), "total": sum(a.amount for a in awards)}
    app.logger.info("stage bonuses %(month)s: %(awards)s awards, %(total)s hundredths", summary)
    return summary


# -- orders-tick -------------------------------------------------------------------------------


def _each_order(app: Flask, sess: Session, what: str, orders_due: list[Order], step: Callable[[Order], bool]) -> list[int]:
    """Apply ``step`` to each order in its own savepoint: one order that fails never blocks the rest."""
    done = []
    for order in orders_due:
        order_id = order.id
        try:
            with sess.begin_nested():
                if step(order):
                    done.append(order_id)
        except IllegalTransitionError:
            pass  # a buyer or another worker moved it first
        except Exception:
            app.logger.exception("%s failed for order %s", what, order_id)
    return done


def _points_of(app: Flask, order_id: int) -> bool:
    """Bring one order's points in line (``process_order``) and commit; False if it failed (logged: the next tick retries)."""
    try:
        with unit_of_work(app) as sess:
            order = sess.get(Order, order_id)
            if order is None:
                return False
            process_order(sess, order)
            db.commit()
        return True
    except Exception:
        app.logger.exception("points failed for order %s", order_id)
        return False


def _orders_needing_points(sess: Session, now: datetime) -> list[int]:
    """Orders whose points may lag behind them: recently changed, paid but never rewarded, ready but not matured.

    The last two heal a follow-up task that was lost (a crash between the commit and the task).
    """
    recent = select(Order.id).where(Order.paid_at.is_not(None), Order.updated_at >= now - timedelta(minutes=RECENT_MINUTES))
    unrewarded = select(Order.id).where(
        Order.paid_at >= now - timedelta(days=REWARD_SWEEP_DAYS),
        Order.inviter_id.is_not(None),
        ~exists().where(OrderReward.order_id == Order.id),
    )
    # The SQL form of ready_to_mature, so orders still waiting for finance are not reprocessed every minute.
    confirmed = Order.finance_confirmed_at.is_not(None)
    unmatured = select(Order.id).where(
        Order.status == OrderStatus.completed,
        confirmed if get_setting(sess, "require_finance_confirmation") else or_(Order.kind == OrderKind.online, confirmed),
        exists().where(OrderReward.order_id == Order.id, OrderReward.state == RewardState.pending),
    )
    found: set[int] = set()
    for query in (recent, unrewarded, unmatured):
        found.update(sess.scalars(query.limit(500)))
    return sorted(found)


def orders_tick(app: Flask, now: datetime) -> dict[str, int] | None:
    """Every minute: auto-receive, complete, close unpaid orders, then bring their points in line.

    The claim is committed with the local moves before WeChat Pay is asked about unpaid orders, so no
    transaction stays open while WeChat answers (each order is then reconciled in a unit of its own).
    A tick that dies after that commit loses nothing: the next tick finds the same orders due.
    """
    period = f"{local(now):%Y-%m-%dT%H:%M}"
    with unit_of_work(app) as sess:
        row = claim(sess, "orders-tick", period)
        if row is None:
            return None
        received = _each_order(app, sess, "auto-receive", orders.due_for_auto_receive(sess, now), lambda o: bool(orders.receive(sess, o, actor="system")))
        completed = _each_order(
            app,
            sess,
            "completion",
            orders.due_for_completion(sess, now),
            lambda o: orders.transition(sess, o, OrderStatus.completed, actor="system", expected=OrderStatus.received),
        )
        db.commit()
        claim_id = row.id
    with unit_of_work(app):
        closed = payments.reconcile_unpaid(wechat_pay(), now).closed
    with unit_of_work(app) as sess:
        ids = sorted(set(received + completed) | set(_orders_needing_points(sess, now)))
    # Each order's points in a unit of work of its own, so its members' accounts are held for that order alone
    # (a redemption of another member never waits for the whole tick).
    processed = [order_id for order_id in ids if _points_of(app, order_id)]
    with unit_of_work(app) as sess:
        oldest = f"{local(now - TICK_CLAIMS_KEPT):%Y-%m-%dT%H:%M}"
        sess.execute(delete(JobClaim).where(JobClaim.job.in_(("orders-tick", "refund-retry", "export-cleanup")), JobClaim.period < oldest))
        finished = sess.get(JobClaim, claim_id)
        assert finished is not None
        _finish(finished)
    return {"received": len(received), "completed": len(completed), "closed": len(closed), "points": len(processed)}


def refund_retry_job(app: Flask, now: datetime) -> dict[str, int] | None:
    """Every minute: send again the approved refunds WeChat Pay did not take yet (``payments.retry_refunds``).

    The claim is committed first; the WeChat calls run outside any transaction.
    """
    with unit_of_work(app) as sess:
        row = claim(sess, "refund-retry", f"{local(now):%Y-%m-%dT%H:%M}")
        if row is None:
            return None
        db.commit()
        claim_id = row.id
    accepted, waiting = payments.retry_refunds(app, now)
    with unit_of_work(app) as sess:
        finished = sess.get(JobClaim, claim_id)
        assert finished is not None
        _finish(finished)
    return {"accepted": accepted, "waiting": waiting}


def notifications_job(app: Flask, now: datetime) -> dict[str, int] | None:
    """Every minute: send the outbox messages that are due (``delivery.drain``): retries whose wait is
    over, and any a crash left queued or claimed. Each send commits its claim before WeChat is asked."""
    with unit_of_work(app) as sess:
        row = claim(sess, "notifications", f"{local(now):%Y-%m-%dT%H:%M}")
        if row is None:
            return None
        db.commit()
        claim_id = row.id
    counts = delivery.drain(app, now)
    with unit_of_work(app) as sess:
        finished = sess.get(JobClaim, claim_id)
        assert finished is not None
        _finish(finished)
    return counts


# -- settlement and expiry -----------------------------------------------------------------------


def settlement_job(app: Flask, now: datetime) -> dict[str, Any] | None:
    """Every hour: settle the current period of the merchant's mode once it is due."""
    with unit_of_work(app) as sess:
        mode = get_setting(sess, "settlement_mode")
        period = settlement.due_period(mode, now, int(get_setting(sess, "settlement_weekday")))
        if period is None:
            return None
        row = claim(sess, "settlement", period)
        if row is None:
            return None
        try:
            run = settlement.settle(sess, period=period, mode=mode, actor="scheduler")
        except SettlementClaimedError:
            # Settled by hand under this very period key; the claim records that the job saw it.
            _finish(row)
            return None
        summary = {"run_id": run.id, "period": run.period, "members": run.members, "total": run.total}
        _finish(row)
    app.logger.info("settlement %(period)s: %(members)s members, %(total)s hundredths", summary)
    return summary


def expire_points_job(app: Flask, now: datetime) -> dict[str, int] | None:
    """Daily: expire available points older than ``points_expiry_days`` (nothing when it is 0)."""
    with unit_of_work(app) as sess:
        if int(get_setting(sess, "points_expiry_days")) <= 0:
            return None
        row = claim(sess, "expire-points", f"{local(now):%Y-%m-%d}")
        if row is None:
            return None
        expired = settlement.expire_points(sess, now)
        _finish(row)
    return {"members": expired.members, "total": expired.total}


def regrade_job(app: Flask, now: datetime) -> dict[str, int] | None:
    """Daily: grade every approved distributor again (the backstop for a lost background regrade)."""
    with unit_of_work(app) as sess:
        row = claim(sess, "regrade", f"{local(now):%Y-%m-%d}")
        if row is None:
            return None
        seen, changed = regrade_all(sess)
        _finish(row)
    return {"distributors": seen, "changed": changed}


def report_rollups_job(app: Flask, now: datetime) -> dict[str, Any] | None:
    """Every ten minutes: refresh the report rollups of today, yesterday and every day changed since the last run.

    Each refresh replaces the day's rows, so a rerun, an overlap or a manual ``reports-rebuild`` is harmless.
    The latest finished claim is kept however old: it is where the next run looks back from.
    """
    with unit_of_work(app) as sess:
        row = claim(sess, rollups.JOB, f"{local(now):%Y-%m-%dT%H:%M}")
        if row is None:
            return None
        days = rollups.days_to_refresh(sess, now)
        rollups.refresh_days(sess, days)
        latest = rollups.previous_run(sess)
        oldest = f"{local(now - TICK_CLAIMS_KEPT):%Y-%m-%dT%H:%M}"
        sess.execute(
            delete(JobClaim).where(JobClaim.job == rollups.JOB, JobClaim.period < oldest, JobClaim.id != row.id, JobClaim.claimed_at != latest)
        )
        _finish(row)
    return {"days": len(days), "first": days[0].isoformat(), "last": days[-1].isoformat()}


# -- console exports -------------------------------------------------------------------------------


def export_cleanup_job(app: Flask, now: datetime) -> dict[str, int] | None:
    """Every five minutes: fail background exports that died with their process (no progress for ten
    minutes), delete the files of expired exports and, a week after they expired, their rows."""
    with unit_of_work(app) as sess:
        row = claim(sess, "export-cleanup", f"{local(now):%Y-%m-%dT%H:%M}")
        if row is None:
            return None
        export_dir = Path(app.config["EXPORT_DIR"])
        ttl = timedelta(hours=int(app.config["EXPORT_TTL_HOURS"]))
        stale = export_jobs.fail_stale_exports(sess, export_dir, ttl=ttl, now=now)
        files, rows = export_jobs.remove_expired_exports(sess, export_dir, now=now)
        _finish(row)
    return {"stale": stale, "files": files, "rows": rows}


# -- WeChat Pay's platform certificates ------------------------------------------------------------


def pay_certificates_job(app: Flask, now: datetime) -> dict[str, int] | None:
    """Twice a day: download WeChat Pay's platform certificates, so one WeChat rotates to is held before it signs
    (WeChat asks for a refresh within 12 hours). No claim: it writes no row, and a second run only downloads again.
    Nothing for a merchant verifying with the WeChat Pay public key alone, or without v3."""
    v3 = app.extensions["wechat_pay"].v3
    if v3 is None or not v3.keys.uses_certificates:
        return None
    refreshed = v3.refresh_certificates(force=True)
    return {"refreshed": int(refreshed), "certificates": len(v3.keys.certificates())}


# -- the scheduler -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    name: str
    job: Job
    #: Cron fields, China time.
    cron: dict[str, Any]


SCHEDULES = (
    Schedule("orders-tick", orders_tick, {"minute": "*"}),
    Schedule("refund-retry", refund_retry_job, {"minute": "*"}),
    Schedule("notifications", notifications_job, {"minute": "*"}),
    # Hourly, a few minutes past, so the 02:00 weekly and monthly settlement follows the night's ticks.
    Schedule("settlement", settlement_job, {"minute": 5}),
    Schedule("expire-points", expire_points_job, {"hour": 3, "minute": 30}),
    # Daily, but its monthly claim runs it once a month; a missed 1st is caught up the next day.
    Schedule("stage-bonus", stage_bonus_job, {"hour": 2, "minute": 30}),
    # Before the stage bonuses, so a grade change made during the day is applied by the night's end.
    Schedule("regrade", regrade_job, {"hour": 2, "minute": 15}),
    Schedule("report-rollups", report_rollups_job, {"minute": "*/10"}),
    Schedule("export-cleanup", export_cleanup_job, {"minute": "*/5"}),
    Schedule("pay-certificates", pay_certificates_job, {"hour": "*/12", "minute": 20}),
)


def run_job(app: Flask, name: str, job: Job, now: datetime | None = None) -> Any:
    """Run one job now; an exception is logged, never raised into the scheduler.

    Each run is counted (``referral_scheduler_job_runs_total``: done, skipped when the job found its period
    taken or nothing due, failed) and timed, and its log lines carry an id of its own (``<job>-<12 hex>``).
    """
    began = time.perf_counter()
    outcome = "failed"
    # The run's lines share an id, as a request's do.
    token = logs.request_id.set(f"{name}-{logs.new_request_id()[:12]}")
    try:
        result = job(app, now or utcnow())
        outcome = "skipped" if result is None else "done"
        return result
    except Exception:
        app.logger.exception("scheduled job %s failed", name)
        return None
    finally:
        metrics.count_job(name, outcome, time.perf_counter() - began)
        logs.request_id.reset(token)


def build_scheduler(app: Flask) -> BlockingScheduler:
    """The scheduler with every job added, not started."""
    scheduler = BlockingScheduler(timezone=CHINA)
    for schedule in SCHEDULES:
        scheduler.add_job(
            run_job,
            CronTrigger(timezone=CHINA, **schedule.cron),
            args=(app, schedule.name, schedule.job),
            id=schedule.name,
            name=schedule.name,
            # One run at a time, and after a stall one catch-up run rather than a burst.
            max_instances=1,
            coalesce=True,
            misfire_grace_time=300,
        )
    return scheduler


@click.command("scheduler")
@with_appcontext
def scheduler_command() -> None:
    """Run the scheduled jobs (orders tick, notifications, settlement, expiry, stage bonuses, regrading, report rollups, export cleanup, WeChat Pay certificates) and drain the job queue. Run exactly one of these per deployment."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # current_app is typed as the Flask it proxies
    scheduler = build_scheduler(app)
    # The job queue is drained here too, so queued work never waits on a web process being up.
    drainer = jobs.start_drainer(app)
    click.echo("scheduler running: " + ", ".join(s.name for s in SCHEDULES) + f"{', job queue' if drainer else ''} (Ctrl+C to stop)")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if scheduler.running:
            scheduler.shutdown()
        if drainer is not None:
            drainer.stop()
