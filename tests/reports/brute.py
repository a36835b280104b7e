"""Every report recomputed the slow way, in Python, from the raw rows (for comparison with the rollups)."""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.accounts.models import Member
from server.clock import local
from server.distribution.models import Distributor, Grade
from server.orders.models import Order, OrderItem, Product, Sku
from server.points.models import Account, Entry, LedgerTransaction
from server.referral.models import Channel, Lead, LeadStatus, TouchEvent, TouchKind
from server.reports.queries import Period

STEP_OF = {"visit": "visits", "scan": "visits", "sign_in": "sign_ins", "bind": "bindings", "lead": "leads", "order": "orders", "paid": "paid", "completed": "completed"}
STEPS = ["visits", "sign_ins", "bindings", "leads", "orders", "paid", "completed"]
SCENE = {c.value for c in Channel}


def day(value: datetime) -> date:
    return local(value).date()


def rate(part: int, whole: int) -> int | None:
    return part * 10_000 // whole if whole else None


def funnel(sess: Session, period: Period, view: str, by: str, channel: str | None) -> list[dict[str, Any]]:
    events = list(sess.scalars(select(TouchEvent)))
    scene_touches: dict[int, list[TouchEvent]] = defaultdict(list)
    for e in events:
        if e.member_id is not None and e.channel in SCENE:
            scene_touches[e.member_id].append(e)
    counts: dict[tuple[str, str | None], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in events:
        if e.kind.value not in STEP_OF or day(e.created_at) not in period:
            continue
        if e.member_id is None:
            source = e if e.channel in SCENE else None
        else:
            before = [t for t in scene_touches[e.member_id] if (t.created_at, t.id) <= (e.created_at, e.id)]
            key = lambda t: (t.created_at, t.id)  # noqa: E731
            source = (min(before, key=key) if view == "first" else max(before, key=key)) if before else None
        chan = source.channel if source else "direct"
        if channel is not None and chan != channel:
            continue
        content = (source.content if source else "") if by == "content" else None
        counts[(chan, content)][STEP_OF[e.kind.value]] += 1
    rows = []
    for (chan, content), steps in counts.items():
        row: dict[str, Any] = {"channel": chan, "content": content}
        for i, step in enumerate(STEPS):
            row[step] = steps.get(step, 0)
            if i:
                row[f"{step}_rate_bp"] = rate(row[step], row[STEPS[i - 1]])
        rows.append(row)
    return rows


def _member_figures(sess: Session, period: Period) -> dict[int, dict[str, Any]]:
    figures: dict[int, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(("orders", "sales_fen", "leads", "valid_leads", "points_earned", "points_redeemed"), 0))
    last_sale: dict[int, date] = {}
    for order in sess.scalars(select(Order).where(Order.paid_at.is_not(None), Order.inviter_id.is_not(None))):
        paid = day(order.paid_at)  # type: ignore[arg-type]
        if paid <= period.end:
            last_sale[order.inviter_id] = max(last_sale.get(order.inviter_id, paid), paid)  # type: ignore[index]
        if paid in period:
            figures[order.inviter_id]["orders"] += 1  # type: ignore[index]
            figures[order.inviter_id]["sales_fen"] += order.paid_fee - order.refunded_fee  # type: ignore[index]
    for lead in sess.scalars(select(Lead).where(Lead.sharer_id.is_not(None))):
        if day(lead.created_at) in period:
            figures[lead.sharer_id]["leads"] += 1  # type: ignore[index]
            figures[lead.sharer_id]["valid_leads"] += lead.status == LeadStatus.valid  # type: ignore[index]
    rows = sess.execute(select(LedgerTransaction.member_id, LedgerTransaction.created_at, Account.kind, Entry.amount)
                        .join(Entry, Entry.transaction_id == LedgerTransaction.id).join(Account, Account.id == Entry.account_id))
    for member_id, created, kind, amount in rows:
        if member_id is None or day(created) not in period:
            continue
        if kind.value == "issuance" and amount < 0:
            figures[member_id]["points_earned"] -= amount
        if kind.value == "redemption":
            figures[member_id]["points_redeemed"] += amount
    for member_id, last in last_sale.items():
        figures[member_id]["last_sale_day"] = last
    return figures


def distributors(sess: Session, period: Period) -> dict[int, dict[str, Any]]:
    figures = _member_figures(sess, period)
    grades = dict(sess.execute(select(Grade.id, Grade.name)).all())
    out = {}
    for dist, nickname in sess.execute(select(Distributor, Member.nickname).join(Member, Member.id == Distributor.member_id)):
        f = figures.get(dist.member_id, {})
        row = {key: f.get(key, 0) for key in ("orders", "sales_fen", "leads", "valid_leads", "points_earned", "points_redeemed")}
        last = f.get("last_sale_day")
        out[dist.member_id] = {
            "member_id": dist.member_id, "nickname": nickname, "real_name": dist.real_name, "status": dist.status.value, "tier": dist.tier,
            "grade": grades.get(dist.grade_id), **row, "conversion_bp": rate(row["orders"], row["leads"]),
            "last_sale_day": last, "days_since_last_sale": (period.end - last).days if last else None,
        }
    return out


def trend(sess: Session, member_id: int, period: Period) -> dict[str, dict[str, int]]:
    months: dict[str, dict[str, int]] = {}
    d = period.start
    while d <= period.end:
        sub = Period(d, min(period.end, (d.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)))
        f = _member_figures(sess, sub).get(member_id, {})
        months[f"{d:%Y-%m}"] = {key: f.get(key, 0) for key in ("orders", "sales_fen", "leads", "valid_leads", "points_earned", "points_redeemed")}
        d = sub.end + timedelta(days=1)
    return months


def cohorts(sess: Session, period: Period, today: date) -> dict[str, dict[str, Any]]:
    sold: dict[int, set[date]] = defaultdict(set)
    for order in sess.scalars(select(Order).where(Order.paid_at.is_not(None), Order.inviter_id.is_not(None))):
        sold[order.inviter_id].add(day(order.paid_at))  # type: ignore[arg-type,index]
    out: dict[str, dict[str, Any]] = {}
    for dist in sess.scalars(select(Distributor)):
        joined = day(dist.applied_at)
        if joined not in period:
            continue
        row = out.setdefault(f"{joined:%Y-%m}", defaultdict(int))
        row["distributors"] += 1
        for n in (30, 60, 90):
            end = joined + timedelta(days=n)
            if end < today:
                row[f"eligible_{n}"] += 1
                row[f"active_{n}"] += any(end - timedelta(days=29) <= s <= end for s in sold[dist.member_id])
    return out


def regions(sess: Session, period: Period) -> dict[tuple[str, str], dict[str, int]]:
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for order in sess.scalars(select(Order).where(Order.paid_at.is_not(None))):
        if day(order.paid_at) not in period:  # type: ignore[arg-type]
            continue
        address = order.address or {}
        row = out[(address.get("province") or "", address.get("city") or "")]
        row["orders"] += 1
        row["paid_fen"] += order.paid_fee
        row["refunded_fen"] += order.refunded_fee
        row["sales_fen"] += order.paid_fee - order.refunded_fee
    return out


def products(sess: Session, period: Period, by: str) -> dict[tuple[int, int | None], dict[str, Any]]:
    out: dict[tuple[int, int | None], dict[str, Any]] = {}
    orders = {o.id: o for o in sess.scalars(select(Order).where(Order.paid_at.is_not(None)))}
    titles = dict(sess.execute(select(Product.id, Product.title)).all())
    names = dict(sess.execute(select(Sku.id, Sku.name)).all())
    sku_orders: dict[int, set[int]] = defaultdict(set)
    for item in sess.scalars(select(OrderItem)):
        order = orders.get(item.order_id)
        if order is None or day(order.paid_at) not in period:  # type: ignore[arg-type]
            continue
        key = (item.product_id, item.sku_id if by == "sku" else None)
        row = out.setdefault(key, {"product_id": item.product_id, "title": titles[item.product_id], "sku_id": key[1],
                                   "sku_name": names[item.sku_id] if by == "sku" else None, "orders": 0, "units": 0, "gross_fen": 0,
                                   "refunded_fen": 0, "referral_sales_fen": 0})
        gross = item.price_fen * item.quantity
        refunded = order.refunded_fee * gross // order.total_fee
        if order.id not in sku_orders[item.sku_id]:
            sku_orders[item.sku_id].add(order.id)
            row["orders"] += 1
        row["units"] += item.quantity
        row["gross_fen"] += gross
        row["refunded_fen"] += refunded
        if order.inviter_id is not None:
            row["referral_sales_fen"] += gross - refunded
    for row in out.values():
        row["sales_fen"] = row["gross_fen"] - row["refunded_fen"]
        row["referral_share_bp"] = rate(row["referral_sales_fen"], row["sales_fen"]) if row["sales_fen"] > 0 else None
    return out


def repeat_business(sess: Session, period: Period) -> dict[str, dict[str, Any]]:
    out = {kind: {"kind": kind, "orders": 0, "repeat_orders": 0, "sales_fen": 0, "repeat_sales_fen": 0} for kind in ("online", "contract", "all")}
    for order in sess.scalars(select(Order).where(Order.paid_at.is_not(None))):
        if day(order.paid_at) not in period:  # type: ignore[arg-type]
            continue
        for row in (out[order.kind.value], out["all"]):
            row["orders"] += 1
            row["sales_fen"] += order.paid_fee - order.refunded_fee
            if order.repeat_business:
                row["repeat_orders"] += 1
                row["repeat_sales_fen"] += order.paid_fee - order.refunded_fee
    for row in out.values():
        row["repeat_orders_bp"] = rate(row["repeat_orders"], row["orders"])
        row["repeat_sales_bp"] = rate(row["repeat_sales_fen"], row["sales_fen"]) if row["sales_fen"] > 0 else None
    return out


def points_liability(sess: Session, period: Period) -> dict[str, Any]:
    entries = sess.execute(select(LedgerTransaction.created_at, Account.kind, Entry.amount)
                           .join(Entry, Entry.transaction_id == LedgerTransaction.id).join(Account, Account.id == Entry.account_id)).all()
    rows = []
    d = period.start
    while d <= period.end:
        upto = defaultdict(int)
        today = defaultdict(int)
        for created, kind, amount in entries:
            if day(created) <= d:
                upto[kind.value] += amount
            if day(created) == d:
                today[(kind.value, amount > 0)] += amount
        held = {"pending": upto["pending"], "matured": upto["matured"], "available": upto["available"], "debt": -upto["debt"]}
        rows.append({"day": d.isoformat(), "issued": -today[("issuance", False)], "reversed": today[("issuance", True)],
                     "redeemed": today[("redemption", True)] + today[("redemption", False)],
                     "expired": today[("expiry", True)] + today[("expiry", False)], **held,
                     "liability": held["pending"] + held["matured"] + held["available"] - held["debt"]})
        d += timedelta(days=1)
    now = defaultdict(int)
    for created, kind, amount in entries:
        now[kind.value] += amount
    outstanding = {"pending": now["pending"], "matured": now["matured"], "available": now["available"], "debt": -now["debt"]}
    outstanding["liability"] = outstanding["pending"] + outstanding["matured"] + outstanding["available"] - outstanding["debt"]
    return {"rows": rows, "outstanding": outstanding}
