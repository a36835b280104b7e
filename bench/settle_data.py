"""A merchant on settlement day: members whose matured points wait for the run, for ``settle_bench.py``.

Every member has order rewards that matured since the last run (``--rewards`` in all, on orders
whose inviter and upline are the members rewarded, level 2 a tenth of level 1), posted as the
services post them: the reward into pending, its maturing into matured. Around them, the cases a
run has to get right: rewards partly reversed while matured (``--reversed``), other matured
postings without an order (a stage bonus, ``--bonuses``), debts a refund left (``--debts``, paid
first by the run), and members who settled before (an earlier run's posting and statement, so only
what matured since is itemised). Balances are the sums of the entries, so ``ledger-check`` passes.
Rows go in with the multi-row INSERTs of ``bulk_insert.py``, with explicit ids, tables in
foreign-key order.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from bulk_insert import Sink
from sqlalchemy.engine import Connection

from server.accounts.models import Member
from server.orders.models import Order, OrderStatus
from server.points.models import Account, AccountKind, Entry, LedgerTransaction, OrderReward, RewardState, SettlementRun, Statement, TxKind

K = AccountKind
BATCH = 20_000


@dataclass
class Book:
    """Accounts and postings in memory, as ``server.points.ledger.post`` writes them: legs in account-id order."""

    accounts: dict[tuple[int | None, AccountKind], list[int]] = field(default_factory=dict)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def account(self, member_id: int | None, kind: AccountKind) -> list[int]:
        found = self.accounts.get((member_id, kind))
        if found is None:
            found = self.accounts[(member_id, kind)] = [len(self.accounts) + 1, 0]
        return found

    def post(self, at: datetime, key: str, kind: TxKind, legs: list[tuple[int | None, AccountKind, int]], reason: str, member_id: int, **extra: Any) -> int:
        moves = sorted((self.account(owner, acct_kind), amount) for owner, acct_kind, amount in legs if amount)
        assert sum(amount for _, amount in moves) == 0, key
        tx_id = len(self.transactions) + 1
        self.transactions.append(
            {"id": tx_id, "idempotency_key": key, "kind": kind, "member_id": member_id, "order_id": extra.get("order_id"), "level": extra.get("level"),
             "reverses_id": None, "reason": reason, "detail": extra.get("detail", {}), "actor": extra.get("actor", "system"), "created_at": at}
        )
        for acct, amount in moves:
            acct[1] += amount
            self.entries.append({"id": len(self.entries) + 1, "transaction_id": tx_id, "account_id": acct[0], "amount": amount, "created_at": at})
        return tx_id


def generate(conn: Connection, *, members: int, rewards: int, reversed_share: float, bonus_share: float, debt_share: float, settled_before: float, seed: int) -> dict[str, int]:
    """Write the merchant into the (migrated, empty) database on ``conn``; returns rows per table."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = now - timedelta(days=40)
    book = Book()
    book.account(None, K.issuance)
    member_rows = [{"id": m, "openid": f"settle-bench-{m:08d}", "nickname": f"member {m}", "created_at": start} for m in range(1, members + 1)]
    orders: list[dict[str, Any]] = []
    reward_rows: list[dict[str, Any]] = []
    statements: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []

    # An earlier run: some members' stage bonus matured and settled a month ago.
    early = sorted(rng.sample(range(1, members + 1), int(members * settled_before)))
    if early:
        at = start + timedelta(days=5)
        runs.append({"id": 1, "period": "monthly:earlier", "mode": "monthly", "started_at": at, "finished_at": at, "members": len(early), "total": 0, "actor": "scheduler"})
        for m in early:
            bonus = rng.choice((5_000, 10_000))
            book.post(at, f"bench:bonus:{m}:early", TxKind.stage_bonus, [(None, K.issuance, -bonus), (m, K.matured, bonus)], "Stage bonus", m)
            book.post(at, f"settle:1:{m}", TxKind.settle, [(m, K.matured, -bonus), (m, K.available, bonus)], f"Settlement monthly:earlier: {bonus / 100:.2f} matured points", m,
                      detail={"run_id": 1, "period": "monthly:earlier", "debt_repaid": 0}, actor="scheduler")
            statements.append({"id": len(statements) + 1, "run_id": 1, "member_id": m, "settled": bonus, "debt_repaid": 0, "credited": bonus, "available_after": bonus, "debt_after": 0,
                               "created_at": at})
            runs[0]["total"] += bonus

    # Debts a refund left after the points were spent: paid first by the next run.
    for m in rng.sample(range(1, members + 1), int(members * debt_share)):
        owed = rng.choice((300, 2_000, 50_000))
        book.post(start + timedelta(days=6), f"bench:debt:{m}", TxKind.reversal, [(m, K.debt, -owed), (None, K.issuance, owed)], "Refund after the points were spent", m)

    # Orders with two levels of rewards, each reward for a member whose rewards are spread evenly.
    for n in range(rewards // 2):
        order_id = n + 1
        inviter = n % members + 1
        upline = (inviter + rng.randrange(1, members)) % members + 1 if members > 1 else None
        paid = start + timedelta(days=7, seconds=n)
        fee = rng.randrange(10_000, 500_000)
        level1 = fee // 200
        levels = [(1, inviter, level1, "level 1, first order 50bp")] + ([(2, upline, level1 // 10, "level 2, 10% of level 1")] if upline else [])
        buyer = (inviter + 7) % members + 1
        orders.append({"id": order_id, "out_trade_no": f"SB{order_id:014d}", "member_id": buyer, "status": OrderStatus.completed, "total_fee": fee, "paid_fee": fee,
                       "inviter_id": inviter, "upline_id": upline, "title": "有机茶叶礼盒", "created_at": paid, "paid_at": paid, "updated_at": paid})
        for level, member_id, amount, rule in levels:
            if amount <= 0 or member_id is None:
                continue
            book.post(paid, f"order:{order_id}:L{level}:reward", TxKind.order_reward, [(None, K.issuance, -amount), (member_id, K.pending, amount)],
                      f"Order SB{order_id:014d}: {rule}", member_id, order_id=order_id, level=level)
            matured_at = paid + timedelta(days=17)
            book.post(matured_at, f"order:{order_id}:L{level}:mature", TxKind.mature, [(member_id, K.pending, -amount), (member_id, K.matured, amount)],
                      f"Order SB{order_id:014d} finished: level {level} reward matured", member_id, order_id=order_id, level=level)
            taken = 0
            if rng.random() < reversed_share and amount > 1:
                taken = rng.randrange(1, amount)
                book.post(matured_at + timedelta(days=1), f"order:{order_id}:L{level}:reverse:1", TxKind.reversal, [(None, K.issuance, taken), (member_id, K.matured, -taken)],
                          f"Order SB{order_id:014d} refunded in part: level {level} reward reduced", member_id, order_id=order_id, level=level, detail={"refunded_fee": 1})
            reward_rows.append({"id": len(reward_rows) + 1, "order_id": order_id, "member_id": member_id, "level": level, "amount": amount, "reversed_amount": taken,
                                "state": RewardState.matured, "rule": rule, "created_at": paid, "matured_at": matured_at})

    # Other matured postings since the last run: a stage bonus straight into matured.
    for m in rng.sample(range(1, members + 1), int(members * bonus_share)):
        bonus = rng.choice((1_000, 20_000))
        book.post(now - timedelta(days=2), f"bench:bonus:{m}:now", TxKind.stage_bonus, [(None, K.issuance, -bonus), (m, K.matured, bonus)], "Stage bonus", m)

    sink = Sink(conn)
    counts: dict[str, int] = {}
    # The merchant's accounts (no owner) cache no balance: their entries are their balance.
    account_rows = [
        {"id": acct_id, "member_id": owner, "kind": kind, "balance": balance if owner is not None else 0}
        for (owner, kind), (acct_id, balance) in book.accounts.items()
    ]
    for table, rows in (
        (Member.__table__, member_rows),
        (Order.__table__, orders),
        (OrderReward.__table__, reward_rows),
        (Account.__table__, account_rows),
        (LedgerTransaction.__table__, book.transactions),
        (Entry.__table__, book.entries),
        (SettlementRun.__table__, runs),
        (Statement.__table__, statements),
    ):
        for offset in range(0, len(rows), BATCH):
            sink.insert(table, rows[offset : offset + BATCH])
        sink.commit()
        counts[table.name] = len(rows)
    sink.close()
    return counts
