"""The scheduled jobs: the orders tick, settlement by mode, expiry, period claims, and the scheduler's wiring."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import func, select, update

from server import db, scheduler
from server.db import utcnow
from server.jobs import queue
from server.orders.models import Order, OrderEvent, OrderStatus, Sku
from server.points.models import JobClaim, OrderReward, RewardState, SettlementRun
from server.points.queries import member_balances
from server.settings.services import set_setting
from tests.points import completed_order, make_member, make_sku, pay, place, post_to, ship

#: 02:30 on Monday 23 November 2026, China time.
MONDAY = datetime(2026, 11, 22, 18, 30, tzinfo=timezone.utc)


def configure(app, **values):
    with app.app_context():
        for key, value in values.items():
            set_setting(db.session(), key, value, by="test")
        db.commit()


def test_orders_tick_receives_completes_closes_and_matures_rewards(app, monkeypatch):
    # Without draining the queued jobs, so every point below is the tick's own doing.
    monkeypatch.setattr(queue, "wake", lambda: None)
    configure(app, auto_receive_days=3, after_sales_days=7)
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        bob = make_member(sess, "bob", inviter=alice)
        sku = make_sku(sess, price_fen=100_000, stock=10)
        shipped = ship(sess, pay(sess, place(sess, bob, sku)))
        unpaid = place(sess, bob, sku, quantity=2)
        db.commit()
        ids = (shipped.id, unpaid.id)
        sku_id = sku.id
    start = utcnow()

    # Four days on: the shipped order counts as received, the unpaid one closes; nothing completes yet.
    assert scheduler.orders_tick(app, start + timedelta(days=4)) == {"received": 1, "completed": 0, "closed": 1, "points": 1}
    with app.app_context():
        sess = db.session()
        assert [sess.get(Order, i).status for i in ids] == [OrderStatus.received, OrderStatus.closed]
        assert sess.get(Sku, sku_id).stock == 9  # the unpaid order's two units are back
        assert member_balances(sess, alice.id).pending == 500  # credited by the tick: no hook ever ran
        received_by = sess.scalars(select(OrderEvent.actor).where(OrderEvent.order_id == ids[0], OrderEvent.event == "received")).all()
        assert received_by == ["system"]

    # Seven days after receipt the after-sales window has passed: completed, and the reward matures.
    assert scheduler.orders_tick(app, start + timedelta(days=4, hours=1)) == {"received": 0, "completed": 0, "closed": 0, "points": 0}
    result = scheduler.orders_tick(app, start + timedelta(days=8))
    assert result is not None and result["completed"] == 1
    with app.app_context():
        sess = db.session()
        assert sess.get(Order, ids[0]).status == OrderStatus.completed
        assert sess.scalars(select(OrderReward.state).where(OrderReward.order_id == ids[0])).all() == [RewardState.matured]
        assert (member_balances(sess, alice.id).pending, member_balances(sess, alice.id).matured) == (0, 500)


def test_the_tick_heals_paid_orders_whose_points_were_never_processed(app, monkeypatch):
    # The process dies between the commit and draining its job: the job waits in the queue.
    monkeypatch.setattr(queue, "wake", lambda: None)
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        bob = make_member(sess, "bob", inviter=alice)
        order = pay(sess, place(sess, bob, make_sku(sess)))
        db.commit()
        order_id = order.id
        assert sess.scalars(select(OrderReward).where(OrderReward.order_id == order_id)).all() == []
    # An hour later the order is no longer "recently changed"; the sweep still finds it.
    result = scheduler.orders_tick(app, utcnow() + timedelta(hours=1))
    assert result is not None and result["points"] == 1
    with app.app_context():
        sess = db.session()
        assert sess.scalars(select(OrderReward.amount).where(OrderReward.order_id == order_id)).all() == [500]
    # The job, drained later by another process, finds the work done: nothing is credited twice.
    assert queue.drain(app) == {"done": 1, "failed": 0}
    with app.app_context():
        assert db.session().scalars(select(OrderReward.amount).where(OrderReward.order_id == order_id)).all() == [500]


def test_the_sweep_matures_completed_orders_once_finance_has_confirmed(app, monkeypatch):
    monkeypatch.setattr(queue, "wake", lambda: None)
    configure(app, require_finance_confirmation=True)
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        order = completed_order(sess, make_member(sess, "bob", inviter=alice), make_sku(sess))
        db.commit()
        order_id, alice_id = order.id, alice.id
        assert sess.scalars(select(OrderReward.state).where(OrderReward.order_id == order_id)).all() == [RewardState.pending]
    # Hours later, outside the "recently changed" window: only the sweep can find it, and it waits for finance.
    assert scheduler.orders_tick(app, utcnow() + timedelta(hours=1))["points"] == 0
    with app.app_context():
        sess = db.session()
        sess.execute(update(Order).where(Order.id == order_id).values(finance_confirmed_at=utcnow() - timedelta(hours=3), updated_at=utcnow() - timedelta(hours=3)))
        db.commit()
    assert scheduler.orders_tick(app, utcnow() + timedelta(hours=2))["points"] == 1
    with app.app_context():
        sess = db.session()
        assert sess.scalars(select(OrderReward.state).where(OrderReward.order_id == order_id)).all() == [RewardState.matured]
        assert member_balances(sess, alice_id).matured == 500


def test_a_claimed_period_never_runs_twice(app):
    with app.app_context():
        sess = db.session()
        post_to(sess, make_member(sess, "alice"), scheduler.settlement.K.matured, 1_000)
        db.commit()
    first = scheduler.settlement_job(app, MONDAY)
    assert first is not None and (first["period"], first["members"], first["total"]) == ("weekly:2026-W48", 1, 1_000)
    assert scheduler.settlement_job(app, MONDAY + timedelta(hours=1)) is None  # same week
    assert scheduler.orders_tick(app, MONDAY) is not None
    assert scheduler.orders_tick(app, MONDAY + timedelta(seconds=30)) is None  # same minute
    with app.app_context():
        sess = db.session()
        claims = sess.execute(select(JobClaim.job, JobClaim.period).order_by(JobClaim.job)).all()
        assert claims == [("orders-tick", "2026-11-23T02:30"), ("settlement", "weekly:2026-W48")]
        assert all(sess.scalars(select(JobClaim.finished_at)))
        assert sess.scalar(select(func.count()).select_from(SettlementRun)) == 1


def test_a_period_claimed_elsewhere_is_left_alone(app):
    with app.app_context():
        sess = db.session()
        sess.add(JobClaim(job="settlement", period="weekly:2026-W48", claimed_by="another-host:1"))
        post_to(sess, make_member(sess, "alice"), scheduler.settlement.K.matured, 1_000)
        db.commit()
    assert scheduler.settlement_job(app, MONDAY) is None
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(SettlementRun)) == 0


def test_two_schedulers_at_once_settle_once(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        post_to(sess, alice, scheduler.settlement.K.matured, 1_000)
        db.commit()
    barrier = threading.Barrier(2)
    results = []

    def run() -> None:
        barrier.wait()
        results.append(scheduler.run_job(app, "settlement", scheduler.settlement_job, MONDAY))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(r is None for r in results) == [False, True]
    with app.app_context():
        sess = db.session()
        assert sess.scalar(select(func.count()).select_from(SettlementRun)) == 1
        assert member_balances(sess, alice.id).available == 1_000


def test_settlement_follows_the_merchants_mode(app):
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        post_to(sess, alice, scheduler.settlement.K.matured, 1_000)
        db.commit()
    configure(app, settlement_weekday=3)
    wednesday = MONDAY + timedelta(days=2)
    assert scheduler.settlement_job(app, MONDAY) is None  # the week's Wednesday has not come
    assert scheduler.settlement_job(app, wednesday - timedelta(hours=1)) is None  # Wednesday, but before 02:00
    assert scheduler.settlement_job(app, wednesday)["period"] == "weekly:2026-W48"
    assert scheduler.settlement_job(app, wednesday + timedelta(days=1)) is None  # that week is done

    configure(app, settlement_mode="monthly")
    with app.app_context():
        post_to(db.session(), alice, scheduler.settlement.K.matured, 1_000)
        db.commit()
    assert scheduler.settlement_job(app, MONDAY)["period"] == "monthly:2026-11"

    configure(app, settlement_mode="threshold", settlement_threshold=500)
    with app.app_context():
        post_to(db.session(), alice, scheduler.settlement.K.matured, 400)
        db.commit()
    below = scheduler.settlement_job(app, MONDAY + timedelta(hours=1))
    assert below is not None and (below["period"], below["members"]) == ("threshold:2026-11-23T03", 0)
    with app.app_context():
        post_to(db.session(), alice, scheduler.settlement.K.matured, 100)
        db.commit()
    assert scheduler.settlement_job(app, MONDAY + timedelta(hours=2))["members"] == 1
    with app.app_context():
        assert member_balances(db.session(), alice.id).available == 2_500


def test_expire_points_runs_daily_only_when_enabled(app):
    with app.app_context():
        sess = db.session()
        post_to(sess, make_member(sess, "alice"), scheduler.settlement.K.available, 800)
        db.commit()
    later = utcnow() + timedelta(days=31)
    assert scheduler.expire_points_job(app, later) is None
    configure(app, points_expiry_days=30)
    assert scheduler.expire_points_job(app, later) == {"members": 1, "total": 800}
    assert scheduler.expire_points_job(app, later + timedelta(minutes=1)) is None  # same day


def test_a_failing_job_is_logged_and_never_raised(app, caplog):
    def broken(_app, _now):
        raise RuntimeError("database on fire")

    with caplog.at_level(logging.ERROR):
        assert scheduler.run_job(app, "broken", broken) is None
    assert "scheduled job broken failed" in caplog.text and "database on fire" in caplog.text


def test_a_failing_job_rolls_its_claim_back(app, monkeypatch):
    def fail(*_args, **_kwargs):
        raise RuntimeError("settlement failed")

    monkeypatch.setattr(scheduler.settlement, "settle", fail)
    assert scheduler.run_job(app, "settlement", scheduler.settlement_job, MONDAY) is None
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(JobClaim)) == 0  # the next hour tries again
    monkeypatch.undo()
    assert scheduler.run_job(app, "settlement", scheduler.settlement_job, MONDAY) is not None


def test_build_scheduler_wires_every_job_without_starting(app):
    built = scheduler.build_scheduler(app)
    assert isinstance(built, BlockingScheduler) and not built.running
    assert str(built.timezone) == "Asia/Shanghai"
    jobs = {job.id: job for job in built.get_jobs()}
    assert set(jobs) == {"orders-tick", "refund-retry", "notifications", "settlement", "expire-points", "stage-bonus", "regrade", "report-rollups", "export-cleanup", "pay-certificates"}
    assert "hour='*/12'" in str(jobs["pay-certificates"].trigger) and jobs["pay-certificates"].args[2] is scheduler.pay_certificates_job
    assert "minute='*/5'" in str(jobs["export-cleanup"].trigger) and jobs["export-cleanup"].args[2] is scheduler.export_cleanup_job
    assert "minute='*'" in str(jobs["notifications"].trigger) and jobs["notifications"].args[2] is scheduler.notifications_job
    assert "hour='2'" in str(jobs["regrade"].trigger) and jobs["regrade"].args[2] is scheduler.regrade_job
    assert "minute='*'" in str(jobs["orders-tick"].trigger)
    assert "minute='5'" in str(jobs["settlement"].trigger) and "hour" not in str(jobs["settlement"].trigger)
    assert "hour='3'" in str(jobs["expire-points"].trigger)
    for name, job in jobs.items():
        assert (job.max_instances, job.coalesce) == (1, True)
        assert job.func is scheduler.run_job and job.args[:2] == (app, name)
    assert jobs["settlement"].args[2] is scheduler.settlement_job
    assert "minute='*/10'" in str(jobs["report-rollups"].trigger) and jobs["report-rollups"].args[2] is scheduler.report_rollups_job


def test_scheduler_command_starts_the_built_scheduler(app, monkeypatch):
    started = []

    def start(self):
        started.append(sorted(job.id for job in self.get_jobs()))
        raise KeyboardInterrupt

    monkeypatch.setattr(BlockingScheduler, "start", start)
    result = app.test_cli_runner().invoke(args=["scheduler"])
    assert result.exit_code == 0, result.output
    assert started == [["expire-points", "export-cleanup", "notifications", "orders-tick", "pay-certificates", "refund-retry", "regrade", "report-rollups", "settlement", "stage-bonus"]]
    assert "scheduler running" in result.output


def test_the_scheduler_drains_the_job_queue_while_it_runs(app_factory, monkeypatch):
    app = app_factory(TASKS_EAGER=False, JOB_POLL_SECONDS=60)
    seen = []

    def start(self):
        drainer = app.extensions["job_drainer"]
        seen.append(all(thread.is_alive() for thread in drainer._threads))
        raise KeyboardInterrupt

    monkeypatch.setattr(BlockingScheduler, "start", start)
    result = app.test_cli_runner().invoke(args=["scheduler"])
    assert result.exit_code == 0, result.output
    assert seen == [True] and "job queue" in result.output
    assert not any(thread.is_alive() for thread in app.extensions["job_drainer"]._threads)  # stopped with the scheduler
