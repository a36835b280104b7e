"""Large cases for ``run.py``, written straight into the database with ``bulk_insert.Sink``.

- ``team``: a member's team of ``direct`` invitees and ``indirect`` ones (invited by the first
  tenth of the direct ones), bound over the last year, some at the same second, as the team pages
  and their cursors read them.
- ``matured_rewards``: ``members`` earners with ``rewards`` matured order rewards between them (an
  order pays level 1 to one earner and level 2, a tenth, to another), with the ledger the points
  services would have posted (reward to pending, then pending to matured) and the accounts' cached
  balances, so ``python -m server settle`` has them to settle and ``ledger-check`` passes.

Ids are given explicitly, after the largest one each table holds, so the rows can refer to each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

from bulk_insert import Sink
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from server.accounts.models import Member
from server.db import utcnow
from server.orders.models import Order, OrderStatus
from server.points.models import Account, AccountKind, Entry, LedgerTransaction, OrderReward, RewardState, TxKind
from server.referral.models import Binding

K = AccountKind
BATCH = 5_000
#: The tables the rows go to (``Sink.insert`` takes Core tables).
ENTRIES: Any = Entry.__table__
TRANSACTIONS: Any = LedgerTransaction.__table__


def _next_id(conn: Connection, table: Any) -> int:
    return int(conn.scalar(select(func.coalesce(func.max(table.c.id), 0))) or 0) + 1


def _batches(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _load(sink: Sink, table: Any, rows: Iterator[dict[str, Any]]) -> None:
    for batch in _batches(rows):
        sink.insert(table, batch)
        sink.commit()


@dataclass(frozen=True)
class Team:
    lead_id: int
    direct: int
    indirect: int


def team(engine: Engine, lead_id: int, *, direct: int, indirect: int) -> Team:
    """``direct`` members bound to ``lead_id`` and ``indirect`` members bound to the first tenth of them."""
    now = utcnow().replace(microsecond=0)
    with engine.connect() as conn:
        first = _next_id(conn, Member.__table__)
        upline = conn.scalar(select(Binding.inviter_id).where(Binding.member_id == lead_id))
        sink = Sink(conn)
        total = direct + indirect
        # Every fourth binding shares its second with the one before, so a cursor must break ties by id.
        seconds = [(i - i % 4 // 3) * 1_200 for i in range(total)]

        def members() -> Iterator[dict[str, Any]]:
            for i in range(total):
                at = now - timedelta(days=365) + timedelta(seconds=seconds[i])
                yield {"id": first + i, "openid": f"bench-team-{lead_id}-{i}", "nickname": f"队员{i}", "created_at": at, "updated_at": at}

        def bindings() -> Iterator[dict[str, Any]]:
            inviters = max(1, direct // 10)
            for i in range(total):
                at = now - timedelta(days=365) + timedelta(seconds=seconds[i])
                if i < direct:
                    yield {"member_id": first + i, "inviter_id": lead_id, "upline_id": upline, "channel": "miniprogram_code", "bound_at": at}
                else:
                    yield {"member_id": first + i, "inviter_id": first + i % inviters, "upline_id": lead_id, "channel": "miniprogram_code", "bound_at": at}

        _load(sink, Member.__table__, members())
        _load(sink, Binding.__table__, bindings())
        sink.close()
    return Team(lead_id, direct, indirect)


@dataclass(frozen=True)
class MaturedRewards:
    members: int
    rewards: int
    entries: int
    points: int


def matured_rewards(engine: Engine, buyer_id: int, *, members: int, rewards: int) -> MaturedRewards:
    """``members`` new earners sharing ``rewards`` matured order rewards on orders ``buyer_id`` paid."""
    orders = max(1, rewards // 2)
    level1, level2 = 100, 10
    now = utcnow().replace(microsecond=0)
    paid_at = now - timedelta(days=20)
    matured_at = now - timedelta(days=3)
    with engine.connect() as conn:
        member0 = _next_id(conn, Member.__table__)
        order0 = _next_id(conn, Order.__table__)
        reward0 = _next_id(conn, OrderReward.__table__)
        tx0 = _next_id(conn, LedgerTransaction.__table__)
        entry0 = _next_id(conn, Entry.__table__)
        account0 = _next_id(conn, Account.__table__)
        issuance = conn.scalar(select(Account.id).where(Account.kind == K.issuance, Account.member_id.is_(None)))

        def earners(i: int) -> tuple[int, int]:
            inviter = i % members
            upline = (inviter + 1 + (i // members) % max(1, members - 1)) % members
            return member0 + inviter, member0 + upline

        # Each earner has a pending account (balance 0 after maturing) and a matured one.
        def pending(m: int) -> int:
            return account0 + 2 * (m - member0)

        def matured(m: int) -> int:
            return pending(m) + 1

        matured_sum = [0] * members
        for i in range(orders):
            inviter, upline = earners(i)
            matured_sum[inviter - member0] += level1
            matured_sum[upline - member0] += level2
        if issuance is None:
            issuance = account0 + 2 * members

        sink = Sink(conn)
        _load(sink, Member.__table__, ({"id": member0 + m, "openid": f"bench-earner-{member0 + m}", "nickname": f"会员{m}", "created_at": paid_at, "updated_at": paid_at} for m in range(members)))

        def accounts() -> Iterator[dict[str, Any]]:
            for m in range(members):
                yield {"id": pending(member0 + m), "member_id": member0 + m, "kind": K.pending, "balance": 0}
                yield {"id": matured(member0 + m), "member_id": member0 + m, "kind": K.matured, "balance": matured_sum[m]}
            if issuance == account0 + 2 * members:
                # The merchant's accounts cache no balance: their entries are their balance.
                yield {"id": issuance, "member_id": None, "kind": K.issuance, "balance": 0}

        _load(sink, Account.__table__, accounts())

        def order_rows() -> Iterator[dict[str, Any]]:
            for i in range(orders):
                inviter, upline = earners(i)
                yield {
                    "id": order0 + i, "out_trade_no": f"BENCH{order0 + i:020d}", "member_id": buyer_id, "status": OrderStatus.completed,
                    "total_fee": 10_000, "paid_fee": 10_000, "inviter_id": inviter, "upline_id": upline, "repeat_business": True,
                    "pay_api": "v3", "transaction_id": f"BT{order0 + i:020d}", "title": "bench", "paid_at": paid_at,
                    "created_at": paid_at, "updated_at": matured_at,
                }

        _load(sink, Order.__table__, order_rows())

        def reward_rows() -> Iterator[dict[str, Any]]:
            for i in range(orders):
                inviter, upline = earners(i)
                for level, member, amount in ((1, inviter, level1), (2, upline, level2)):
                    yield {
                        "id": reward0 + 2 * i + level - 1, "order_id": order0 + i, "member_id": member, "level": level, "amount": amount,
                        "reversed_amount": 0, "state": RewardState.matured, "rule": "bench", "created_at": paid_at, "matured_at": matured_at,
                    }

        _load(sink, OrderReward.__table__, reward_rows())

        def postings() -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
            tx = tx0
            entry = entry0
            for i in range(orders):
                inviter, upline = earners(i)
                for level, member, amount in ((1, inviter, level1), (2, upline, level2)):
                    for kind, at, legs in (
                        (TxKind.order_reward, paid_at, ((issuance, -amount), (pending(member), amount))),
                        (TxKind.mature, matured_at, ((pending(member), -amount), (matured(member), amount))),
                    ):
                        step = "reward" if kind == TxKind.order_reward else "mature"
                        row = {
                            "id": tx, "idempotency_key": f"order:{order0 + i}:L{level}:{step}", "kind": kind, "member_id": member,
                            "order_id": order0 + i, "level": level, "reason": f"bench {step}", "detail": {}, "actor": "system", "created_at": at,
                        }
                        entries = [{"id": entry + n, "transaction_id": tx, "account_id": account, "amount": leg, "created_at": at} for n, (account, leg) in enumerate(legs)]
                        yield row, entries
                        tx += 1
                        entry += len(legs)

        transactions: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        written = 0
        for row, legs in postings():
            transactions.append(row)
            entries.extend(legs)
            if len(transactions) >= BATCH:
                sink.insert(TRANSACTIONS, transactions)
                sink.insert(ENTRIES, entries)
                sink.commit()
                written += len(entries)
                transactions, entries = [], []
        sink.insert(TRANSACTIONS, transactions)
        sink.insert(ENTRIES, entries)
        written += len(entries)
        sink.close()
    return MaturedRewards(members=members, rewards=2 * orders, entries=written, points=sum(matured_sum))
