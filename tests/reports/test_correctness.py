"""Every report agrees with a brute-force recomputation from the raw rows, on random data with partial and full
refunds, ledger postings through the real ledger, and payments, refunds and lead reviews that arrive late."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from server import db, scheduler, tasks
from server.clock import CHINA, local
from server.db import utcnow
from server.orders import services as orders
from server.orders.models import Order
from server.points.models import JobClaim
from server.referral.models import Channel, Lead, LeadStatus
from server.reports import queries, rollups
from server.reports.models import MemberDaily
from server.reports.queries import Period
from tests.points import make_member, make_sku, pay, place
from tests.reports import brute
from tests.reports.generate import Generated, generate


def _no_dates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v.isoformat() if isinstance(v, date) else v for k, v in row.items()} for row in rows]


def check_every_report(sess: Any, period: Period, today: date) -> None:
    for view in ("first", "last"):
        for by in ("channel", "content"):
            for channel in (None, Channel.moments_poster.value):
                got = queries.funnel(sess, period, view=view, by=by, channel=channel)  # type: ignore[arg-type]
                want = brute.funnel(sess, period, view, by, channel)
                key = lambda r: (r["channel"], r["content"] or "")  # noqa: E731
                assert sorted(got, key=key) == sorted(want, key=key), (view, by, channel)

    want_distributors = brute.distributors(sess, period)
    rows, total = queries.distributors(sess, period)
    assert total == len(want_distributors)
    assert {row["member_id"]: row for row in rows} == want_distributors
    assert [row["sales_fen"] for row in rows] == sorted((row["sales_fen"] for row in rows), reverse=True)
    for sort in ("orders", "conversion_bp", "days_since_last_sale", "points_earned"):
        for descending in (True, False):
            page, _ = queries.distributors(sess, period, sort=sort, descending=descending, offset=2, limit=5)  # type: ignore[arg-type]
            everything, _ = queries.distributors(sess, period, sort=sort, descending=descending)  # type: ignore[arg-type]
            assert page == everything[2:7]
            known = [row[sort] for row in everything if row[sort] is not None]
            assert known == sorted(known, reverse=descending)
            assert all(row[sort] is None for row in everything[len(known):])
    member_id = max(want_distributors.values(), key=lambda r: r["sales_fen"])["member_id"]
    trend = {row.pop("month"): row for row in queries.distributor_trend(sess, member_id, period)}
    assert trend == brute.trend(sess, member_id, period)

    got_cohorts = {row["month"]: row for row in queries.distributor_cohorts(sess, period, today=today)}
    for month, want in brute.cohorts(sess, period, today).items():
        for key, value in want.items():
            assert got_cohorts[month][key] == value, (month, key)
        for n in (30, 60, 90):
            assert got_cohorts[month][f"active_{n}_bp"] == brute.rate(want[f"active_{n}"], want[f"eligible_{n}"])

    found = queries.regions(sess, period)
    want_regions = brute.regions(sess, period)
    assert {(r["province"], r["city"]): {k: r[k] for k in ("orders", "paid_fen", "refunded_fen", "sales_fen")} for r in found["rows"]} == want_regions
    assert sum(p["sales_fen"] for p in found["provinces"]) == sum(r["sales_fen"] for r in want_regions.values())

    for by in ("sku", "product"):
        got = {(r["product_id"], r["sku_id"]): r for r in queries.products(sess, period, by=by)}  # type: ignore[arg-type]
        want = brute.products(sess, period, by)
        if by == "product":  # per product, orders are summed over its SKUs
            for row in want.values():
                row.pop("orders")
            for row in got.values():
                row.pop("orders")
        assert got == want, by

    assert {r["kind"]: r for r in queries.repeat_business(sess, period)} == brute.repeat_business(sess, period)

    liability = queries.points_liability(sess, period)
    want_liability = brute.points_liability(sess, period)
    assert _no_dates(liability["rows"]) == want_liability["rows"]
    outstanding = dict(liability["outstanding"])
    assert outstanding.pop("liability_yuan") == f"{outstanding['liability'] // 100}.{outstanding['liability'] % 100:02d}"
    assert outstanding == want_liability["outstanding"]


def _periods(data: Generated) -> list[Period]:
    first, today = local(data.start).date(), local(utcnow()).date()
    return [Period(first - timedelta(days=1), today), Period(first + timedelta(days=10), first + timedelta(days=24)), Period(today, today)]


@pytest.fixture
def data(app: Flask) -> Generated:
    with app.app_context():
        generated = generate(db.session())
        db.commit()
    return generated


def test_reports_match_the_raw_rows_after_a_rebuild_and_after_late_changes(app: Flask, data: Generated) -> None:
    result = app.test_cli_runner().invoke(args=["reports-rebuild"])
    assert result.exit_code == 0, result.output
    assert "report rollups rebuilt for" in result.output
    today = local(utcnow()).date()
    with app.app_context():
        for period in _periods(data):
            check_every_report(db.session(), period, today)

    # The scheduler's run: then a payment made days ago is notified, two refunds arrive and a lead is
    # reviewed, each changing a past day, and the next run finds those days.
    first_run = utcnow()
    assert scheduler.report_rollups_job(app, first_run) is not None
    assert scheduler.report_rollups_job(app, first_run) is None  # the same period is claimed once
    late_day = today - timedelta(days=6)
    with app.app_context():
        sess = db.session()
        late = sess.get(Order, data.unpaid[0])
        assert late is not None
        late.paid_at = local(utcnow()).replace(year=late_day.year, month=late_day.month, day=late_day.day, hour=12)
        late.paid_fee = late.total_fee
        refunded = [sess.get(Order, order_id) for order_id in data.paid[:2]]
        for order in refunded:
            assert order is not None
            order.refunded_fee = order.paid_fee if order is refunded[0] else order.paid_fee // 2
        lead = sess.scalars(select(Lead).where(Lead.status == LeadStatus.new, Lead.sharer_id.is_not(None))).first()
        assert lead is not None
        lead.status, lead.reviewed_at = LeadStatus.valid, utcnow()
        changed = {local(o.paid_at).date() for o in refunded if o and o.paid_at} | {late_day, local(lead.created_at).date()}
        db.commit()
        assert changed <= set(rollups.days_to_refresh(sess, utcnow()))
        period = Period(local(data.start).date(), today)
        with pytest.raises(AssertionError):  # the rollups do not know yet
            check_every_report(sess, period, today)
    summary = scheduler.report_rollups_job(app, first_run + timedelta(minutes=10))
    assert summary is not None and summary["days"] >= len(changed)
    with app.app_context():
        for period in _periods(data):
            check_every_report(db.session(), period, today)
        sess = db.session()
        # Each claim is the mark the next run looks back from; the two runs left theirs.
        assert sess.scalar(select(func.count()).select_from(JobClaim).where(JobClaim.job == rollups.JOB)) == 2


def test_refreshing_a_day_again_changes_nothing(app: Flask, data: Generated) -> None:
    with app.app_context():
        sess = db.session()
        days = rollups.days_between(local(data.start).date(), local(utcnow()).date())
        rollups.refresh_days(sess, days)
        db.commit()
        before = sess.execute(select(MemberDaily).order_by(MemberDaily.day, MemberDaily.member_id)).scalars().all()
        snapshot = [(r.day, r.member_id, r.orders, r.sales_fen, r.points_earned) for r in before]
        rollups.refresh_days(sess, days[5:15])
        db.commit()
        sess.expire_all()
        after = [(r.day, r.member_id, r.orders, r.sales_fen, r.points_earned) for r in sess.scalars(select(MemberDaily).order_by(MemberDaily.day, MemberDaily.member_id))]
        assert after == snapshot and snapshot


def test_rebuild_takes_a_range_and_refuses_a_backward_one(app: Flask, data: Generated) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["reports-rebuild", "--from", "2026-01-01", "--to", "2026-01-03"])
    assert result.exit_code == 0 and "3 days" in result.output
    result = runner.invoke(args=["reports-rebuild", "--from", "2026-01-03", "--to", "2026-01-01"])
    assert result.exit_code != 0 and "--from" in result.output


def test_a_refund_through_the_order_services_reaches_the_day_the_order_was_paid(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "defer", lambda fn, *args: None)  # points follow-ups are not what is tested here
    paid_day = local(utcnow()).date() - timedelta(days=5)
    with app.app_context():
        sess = db.session()
        alice = make_member(sess, "alice")
        bob = make_member(sess, "bob", inviter=alice)
        order = pay(sess, place(sess, bob, make_sku(sess, price_fen=10_000)))
        # Paid days ago: the payment's day is in the past when the refund comes.
        sess.execute(update(Order).where(Order.id == order.id).values(paid_at=datetime.combine(paid_day, time(12), tzinfo=CHINA)))
        db.commit()
        order_id = order.id
    first_run = utcnow()
    assert scheduler.report_rollups_job(app, first_run) is not None
    period = Period(paid_day, paid_day)

    def sales() -> tuple[int, int]:
        with app.app_context():
            sess = db.session()
            everything = {row["kind"]: row for row in queries.repeat_business(sess, period)}["all"]
            return everything["sales_fen"], queries.regions(sess, period)["rows"][0]["refunded_fen"]

    assert sales() == (10_000, 0)
    with app.app_context():
        sess = db.session()
        order = sess.get(Order, order_id)
        assert order is not None
        refund = orders.request_refund(sess, order, 4_000, "damaged", actor="staff:1", approved=True)
        orders.finish_refund(sess, order, refund, succeeded=True, actor="wechat", refund_id="wx-refund-1")
        db.commit()
    assert sales() == (10_000, 0)  # until the next run
    assert scheduler.report_rollups_job(app, first_run + timedelta(minutes=10)) is not None
    assert sales() == (6_000, 4_000)
