"""Fill a database with a large merchant, for the console and report benchmarks.

Members in a two-level referral tree (a few hubs with thousands of direct invitees), products with
SKUs, orders in every status spread over the last year with one line each, the order timeline's
events, and staff audit entries. Rows are written with multi-row INSERTs in batches, with explicit
ids, so 1,000,000 orders take a few minutes on MariaDB.

    .venv/bin/python bench/large_merchant.py --database-url 'mysql+pymysql://referral:referral@127.0.0.1:3306/referral_bench?charset=utf8mb4' --reset
    .venv/bin/python bench/large_merchant.py --members 2000 --orders 20000 --database-url sqlite:////tmp/bench.db --reset

The database is migrated first (``--reset`` drops every table of the app before). A staff owner
``bench-owner`` with password ``bench-owner-pass`` is created for the benchmarks to sign in with.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from flask import Flask
from sqlalchemy import Table, create_engine, insert, text
from sqlalchemy.engine import Connection
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import create_app, models  # noqa: E402
from server.config import TestingConfig  # noqa: E402
from server.migrate import upgrade  # noqa: E402
from server.accounts.models import AuditEntry, Member, MemberStatus, Staff, StaffRole  # noqa: E402
from server.orders.models import Order, OrderEvent, OrderItem, OrderKind, OrderStatus, Product, ProductStatus, Sku  # noqa: E402
from server.referral.models import Binding  # noqa: E402

OWNER = ("bench-owner", "bench-owner-pass")
BATCH = 10_000
#: How often each status occurs among the generated orders (the rest of a shop's life in one year).
STATUS_WEIGHTS = {
    OrderStatus.created: 3,
    OrderStatus.closed: 10,
    OrderStatus.paid: 12,
    OrderStatus.shipped: 10,
    OrderStatus.received: 8,
    OrderStatus.completed: 52,
    OrderStatus.refunded: 5,
}
NICKNAMES = ["小明", "阿花", "Lily", "王二", "晴天", "大海", "老李", "Coco", "米粒", "阿杰", "微信用户"]


def batches(rows: Iterator[dict[str, Any]], size: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load(conn: Connection, table: Table, rows: Iterator[dict[str, Any]], total: int, what: str) -> None:
    with tqdm(total=total, desc=what, unit="rows", mininterval=1.0) as bar:
        for chunk in batches(rows):
            conn.execute(insert(table), chunk)
            conn.commit()
            bar.update(len(chunk))


def bench_app(url: str) -> Flask:
    """The app on ``url``, with the sandbox's credentials and no rate limits in the way of a benchmark."""
    config = TestingConfig()
    config.DATABASE_URL = url
    config.TASKS_EAGER = True
    return create_app(config)


def migrate(url: str, reset: bool) -> None:
    if reset:
        engine = create_engine(url)
        models.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()
    app = bench_app(url)
    with app.app_context():
        upgrade(app)


def generate(url: str, members: int, orders: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    year_ago = now - timedelta(days=365)
    engine = create_engine(url)
    timings: dict[str, float] = {}

    def timed(what: str, step: Callable[[Connection], None]) -> None:
        started = time.perf_counter()
        with engine.connect() as conn:
            step(conn)
        timings[what] = time.perf_counter() - started

    joined = {i: year_ago + timedelta(seconds=int(365 * 86400 * (i - 1) / max(members, 1))) for i in range(1, members + 1)}
    inviter: dict[int, int] = {}
    hubs = list(range(1, min(members, 20) + 1))
    for i in range(2, members + 1):
        roll = rng.random()
        if roll < 0.25:
            inviter[i] = rng.choice([h for h in hubs if h < i] or [1])  # hubs collect thousands of direct invitees
        elif roll < 0.75:
            inviter[i] = rng.randint(max(1, i - 5_000), i - 1)

    def member_rows() -> Iterator[dict[str, Any]]:
        for i in range(1, members + 1):
            yield {
                "id": i,
                "openid": f"oBench{i:012d}",
                "unionid": f"uBench{i:012d}" if i % 3 == 0 else None,
                "nickname": f"{rng.choice(NICKNAMES)}{i}",
                "phone_masked": f"138****{i % 10_000:04d}" if i % 2 == 0 else None,
                "phone_digest": f"{i:064x}" if i % 2 == 0 else None,
                "status": MemberStatus.active if i % 500 else MemberStatus.disabled,
                "created_at": joined[i],
                "updated_at": joined[i],
                "last_login_at": joined[i] + timedelta(days=rng.randint(0, 30)),
            }

    def binding_rows() -> Iterator[dict[str, Any]]:
        for member_id, inviter_id in inviter.items():
            yield {
                "member_id": member_id,
                "inviter_id": inviter_id,
                "upline_id": inviter.get(inviter_id),
                "channel": rng.choice(["miniprogram", "moments_poster", "h5_link", "official_account"]),
                "bound_at": joined[member_id],
            }

    products = [{"id": p, "title": f"演示商品 {p}", "status": ProductStatus.on_sale, "created_at": year_ago, "updated_at": year_ago} for p in range(1, 41)]
    skus = [
        {"id": (p - 1) * 2 + k, "product_id": p, "name": ["标准", "礼盒"][k - 1], "price_fen": 1_000 * p + 9_900 * (k - 1), "stock": 100_000}
        for p in range(1, 41)
        for k in (1, 2)
    ]
    statuses = list(STATUS_WEIGHTS)
    weights = list(STATUS_WEIGHTS.values())

    def order_and_item_rows() -> Iterator[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]]:
        for i in range(1, orders + 1):
            member_id = rng.randint(1, members)
            created = joined[member_id] + (now - joined[member_id]) * rng.random()
            status = rng.choices(statuses, weights)[0]
            sku = skus[rng.randrange(len(skus))]
            quantity = rng.choice((1, 1, 1, 2, 3))
            total = sku["price_fen"] * quantity
            paid = status not in (OrderStatus.created, OrderStatus.closed)
            inviter_id = inviter.get(member_id)
            order = {
                "id": i,
                "out_trade_no": f"B{i:015d}",
                "kind": OrderKind.online,
                "member_id": member_id,
                "status": status,
                "total_fee": total,
                "paid_fee": total if paid else 0,
                "refunded_fee": total if status == OrderStatus.refunded else 0,
                "inviter_id": inviter_id,
                "upline_id": inviter.get(inviter_id) if inviter_id else None,
                "title": f"演示商品 {sku['product_id']}",
                "created_at": created,
                "updated_at": created,
                "expires_at": created + timedelta(minutes=30),
                "paid_at": created + timedelta(minutes=2) if paid else None,
                "transaction_id": f"42000{i:015d}" if paid else None,
                "pay_api": "v3" if paid else None,
                "shipped_at": created + timedelta(days=1) if status in (OrderStatus.shipped, OrderStatus.received, OrderStatus.completed) else None,
                "completed_at": created + timedelta(days=15) if status == OrderStatus.completed else None,
                "closed_at": created + timedelta(minutes=30) if status == OrderStatus.closed else None,
            }
            item = {
                "id": i,
                "order_id": i,
                "product_id": sku["product_id"],
                "sku_id": sku["id"],
                "title": order["title"],
                "sku_name": sku["name"],
                "price_fen": sku["price_fen"],
                "list_price_fen": sku["price_fen"],
                "quantity": quantity,
            }
            events = [{"order_id": i, "event": "created", "actor": f"member:{member_id}", "to_status": "created", "detail": {}, "created_at": created}]
            if status != OrderStatus.created:
                events.append({"order_id": i, "event": status.value, "actor": "wechat" if paid else "system", "from_status": "created", "to_status": status.value, "detail": {}, "created_at": created + timedelta(minutes=2)})
            yield order, item, events

    def load_orders(conn: Connection) -> None:
        with tqdm(total=orders, desc="orders", unit="rows", mininterval=1.0) as bar:
            chunk_orders: list[dict[str, Any]] = []
            chunk_items: list[dict[str, Any]] = []
            chunk_events: list[dict[str, Any]] = []
            for order, item, events in order_and_item_rows():
                chunk_orders.append(order)
                chunk_items.append(item)
                chunk_events.extend(events)
                if len(chunk_orders) == BATCH:
                    _flush(conn, chunk_orders, chunk_items, chunk_events)
                    bar.update(BATCH)
                    chunk_orders, chunk_items, chunk_events = [], [], []
            if chunk_orders:
                _flush(conn, chunk_orders, chunk_items, chunk_events)
                bar.update(len(chunk_orders))

    def audit_rows() -> Iterator[dict[str, Any]]:
        actions = ["member.disabled", "lead.valid", "refund.approve", "distributor.approve", "setting.change", "points.adjust"]
        for i in range(1, orders // 10 + 1):
            yield {"staff_id": 1, "action": rng.choice(actions), "target": f"member:{rng.randint(1, members)}", "detail": {}, "created_at": year_ago + (now - year_ago) * rng.random()}

    timed("members", lambda conn: load(conn, Member.__table__, member_rows(), members, "members"))  # type: ignore[arg-type]
    timed("bindings", lambda conn: load(conn, Binding.__table__, binding_rows(), len(inviter), "bindings"))  # type: ignore[arg-type]
    def load_catalog(conn: Connection) -> None:
        load(conn, Product.__table__, iter(products), len(products), "products")  # type: ignore[arg-type]
        load(conn, Sku.__table__, iter(skus), len(skus), "skus")  # type: ignore[arg-type]

    timed("catalog", load_catalog)
    timed("orders", load_orders)
    timed("audit", lambda conn: load(conn, AuditEntry.__table__, audit_rows(), orders // 10, "audit entries"))  # type: ignore[arg-type]
    engine.dispose()
    return timings


def _flush(conn: Connection, orders: list[dict[str, Any]], items: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    conn.execute(insert(Order.__table__), orders)  # type: ignore[arg-type]
    conn.execute(insert(OrderItem.__table__), items)  # type: ignore[arg-type]
    conn.execute(insert(OrderEvent.__table__), events)  # type: ignore[arg-type]
    conn.commit()


def create_owner(url: str) -> None:
    from werkzeug.security import generate_password_hash

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(Staff.__table__), [{"id": 1, "username": OWNER[0], "password_hash": generate_password_hash(OWNER[1]), "role": StaffRole.owner, "active": True}])  # type: ignore[arg-type]
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--reset", action="store_true", help="drop the app's tables first")
    args = parser.parse_args()
    started = time.perf_counter()
    migrate(args.database_url, args.reset)
    create_owner(args.database_url)
    timings = generate(args.database_url, args.members, args.orders, args.seed)
    for what, seconds in timings.items():
        print(f"{what:>10}: {seconds:7.1f} s")
    print(f"{'total':>10}: {time.perf_counter() - started:7.1f} s  ({args.members:,} members, {args.orders:,} orders)")


if __name__ == "__main__":
    main()
