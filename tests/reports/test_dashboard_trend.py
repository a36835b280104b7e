"""The console dashboard's trend reads past days from the rollups and today from the raw rows: the same
series as counting every day from the raw rows."""
from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import select

from server import db
from server.accounts.models import Member
from server.clock import local
from server.console import queries
from server.db import utcnow
from server.orders.models import Order
from server.points.models import Account, AccountKind, Entry
from server.referral.models import Lead, TouchEvent, TouchKind
from server.reports import rollups
from tests.reports.generate import generate


def raw_trend(sess, days):  # type: ignore[no-untyped-def]
    last = local(utcnow()).date()
    dates = [last - timedelta(days=days - 1 - i) for i in range(days)]
    issuance = select(Account.id).where(Account.kind == AccountKind.issuance).scalar_subquery()
    return {
        "dates": [d.isoformat() for d in dates],
        "new_members": queries._daily(sess, Member.created_at, dates),
        "bindings": queries._daily(sess, TouchEvent.created_at, dates, TouchEvent.kind == TouchKind.bind),
        "leads": queries._daily(sess, Lead.created_at, dates),
        "orders": queries._daily(sess, Order.created_at, dates),
        "paid_fen": queries._daily(sess, Order.paid_at, dates, value=Order.paid_fee),
        "points_issued": [-v for v in queries._daily(sess, Entry.created_at, dates, Entry.account_id == issuance, Entry.amount < 0, value=Entry.amount)],
    }


def test_the_trend_reads_rollups_for_past_days_and_counts_today_live(app: Flask) -> None:
    with app.app_context():
        sess = db.session()
        data = generate(sess, seed=11)
        db.commit()
        days = 45
        before = queries.trend(sess, days)
        # Nothing rolled up yet: only today is counted.
        assert all(series[:-1] == [0] * (days - 1) for key, series in before.items() if key != "dates")
        rollups.refresh_days(sess, rollups.days_between(local(data.start).date(), local(utcnow()).date() - timedelta(days=1)))
        db.commit()
        expected = raw_trend(sess, days)
        assert queries.trend(sess, days) == expected
        assert sum(expected["orders"]) and sum(expected["points_issued"]) and sum(expected["paid_fen"])
