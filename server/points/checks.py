"""The ledger's invariants, checked against the database as it is (``python -m server ledger-check``).

Every check is one aggregate query, so the whole ledger is read a handful of
times however large it grows. The database constraints already refuse most of
these states; the check exists for what they cannot see (sums across rows) and
for rows written around the ORM.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.orders.models import Order
from server.points.models import MERCHANT_KINDS, Account, AccountKind, Entry, LedgerTransaction, OrderReward, TxKind
from server.points.rules import MAX_LEVELS

K = AccountKind


@dataclass
class LedgerReport:
    violations: list[str] = field(default_factory=list)
    #: Rows checked, per table.
    counts: dict[str, int] = field(default_factory=dict)
    #: Hundredths of a point per account kind, summed over all accounts (they sum to zero).
    balances: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


def check_ledger(sess: Session) -> LedgerReport:
    """Every invariant of DESIGN §4 and the reward guards of §5; each broken one is a line in ``violations``."""
    report = LedgerReport()
    for check in (_balanced, _cached_balances, _signs, _orphans, _unique_keys, _reward_postings, _reward_levels):
        report.violations.extend(check(sess))
    for name, model in (("transactions", LedgerTransaction), ("entries", Entry), ("accounts", Account), ("order rewards", OrderReward)):
        report.counts[name] = int(sess.scalar(select(func.count()).select_from(model)) or 0)
    # Members' kinds from their cached balances (proved equal to their entries above), the merchant's from their entries.
    merchant = Account.kind.in_(MERCHANT_KINDS)
    members = select(Account.kind, func.coalesce(func.sum(Account.balance), 0)).where(~merchant).group_by(Account.kind)
    merchants = select(Account.kind, func.coalesce(func.sum(Entry.amount), 0)).join(Entry, Entry.account_id == Account.id).where(merchant).group_by(Account.kind)
    totals = {kind.value: int(total) for query in (members, merchants) for kind, total in sess.execute(query)}
    report.balances = dict(sorted(totals.items()))
    return report


def _balanced(sess: Session) -> list[str]:
    rows = sess.execute(
        select(Entry.transaction_id, func.sum(Entry.amount)).group_by(Entry.transaction_id).having(func.sum(Entry.amount) != 0).order_by(Entry.transaction_id)
    )
    return [f"transaction {tx_id} does not balance: its entries sum to {int(total)}" for tx_id, total in rows]


def _cached_balances(sess: Session) -> list[str]:
    """A member account caches the sum of its entries; the merchant's cache nothing (0: their entries are their balance)."""
    sums = select(Entry.account_id, func.sum(Entry.amount).label("total")).group_by(Entry.account_id).subquery()
    total = func.coalesce(sums.c.total, 0)
    rows = sess.execute(
        select(Account.id, Account.kind, Account.member_id, Account.balance, total)
        .outerjoin(sums, sums.c.account_id == Account.id)
        .where(Account.kind.not_in(MERCHANT_KINDS), Account.balance != total)
        .order_by(Account.id)
    )
    merchant = sess.execute(
        select(Account.id, Account.kind, Account.balance).where(Account.kind.in_(MERCHANT_KINDS), Account.balance != 0).order_by(Account.id)
    )
    return [
        f"account {acct_id} ({_owner(member_id)} {kind.value}) caches balance {balance} but its entries sum to {int(entries)}"
        for acct_id, kind, member_id, balance, entries in rows
    ] + [f"account {acct_id} (merchant {kind.value}) caches balance {balance}; the merchant's accounts cache none" for acct_id, kind, balance in merchant]


def _signs(sess: Session) -> list[str]:
    rows = sess.execute(
        select(Account.id, Account.kind, Account.member_id, Account.balance)
        .where(
            (Account.kind.in_((K.available, K.pending, K.matured)) & (Account.balance < 0)) | ((Account.kind == K.debt) & (Account.balance > 0))
        )
        .order_by(Account.id)
    )
    return [f"account {acct_id} ({_owner(member_id)} {kind.value}) has an impossible balance {balance}" for acct_id, kind, member_id, balance in rows]


def _orphans(sess: Session) -> list[str]:
    no_tx = sess.execute(
        select(Entry.id, Entry.transaction_id)
        .outerjoin(LedgerTransaction, LedgerTransaction.id == Entry.transaction_id)
        .where(LedgerTransaction.id.is_(None))
        .order_by(Entry.id)
    )
    no_account = sess.execute(
        select(Entry.id, Entry.account_id).outerjoin(Account, Account.id == Entry.account_id).where(Account.id.is_(None)).order_by(Entry.id)
    )
    return [f"entry {entry_id} belongs to transaction {tx_id}, which does not exist" for entry_id, tx_id in no_tx] + [
        f"entry {entry_id} posts to account {acct_id}, which does not exist" for entry_id, acct_id in no_account
    ]


def _unique_keys(sess: Session) -> list[str]:
    rows = sess.execute(
        select(LedgerTransaction.idempotency_key, func.count())
        .group_by(LedgerTransaction.idempotency_key)
        .having(func.count() > 1)
        .order_by(LedgerTransaction.idempotency_key)
    )
    return [f"idempotency key {key!r} was posted {int(n)} times" for key, n in rows]


def _reward_postings(sess: Session) -> list[str]:
    """Each order reward's amount and reversed amount equal what its postings took from and returned to issuance.

    The issuance leg is the one leg every reward and reversal has, whichever member
    accounts the other legs touched (a reversal may split across available and debt).
    """
    # Keyed by (order, level); a posting without a level is a problem to report, not to hide.
    moved: dict[tuple[int, int | None], dict[TxKind, int]] = defaultdict(lambda: {TxKind.order_reward: 0, TxKind.reversal: 0})
    members: dict[tuple[int, int | None], set[int | None]] = defaultdict(set)
    rows = sess.execute(
        select(LedgerTransaction.order_id, LedgerTransaction.level, LedgerTransaction.kind, LedgerTransaction.member_id, func.sum(Entry.amount))
        .join(Entry, Entry.transaction_id == LedgerTransaction.id)
        .join(Account, Account.id == Entry.account_id)
        .where(Account.kind == K.issuance, LedgerTransaction.kind.in_((TxKind.order_reward, TxKind.reversal)), LedgerTransaction.order_id.is_not(None))
        .group_by(LedgerTransaction.order_id, LedgerTransaction.level, LedgerTransaction.kind, LedgerTransaction.member_id)
    )
    for order_id, level, kind, member_id, total in rows:
        assert order_id is not None  # the query keeps only postings for an order
        moved[(order_id, level)][kind] += int(total)
        members[(order_id, level)].add(member_id)
    problems = []
    rewards = {(r.order_id, r.level): r for r in sess.scalars(select(OrderReward).order_by(OrderReward.order_id, OrderReward.level))}
    for (order_id, level), row in rewards.items():
        posted = moved.pop((order_id, level), {TxKind.order_reward: 0, TxKind.reversal: 0})
        # Issuance gives out a reward (negative leg) and takes a reversal back (positive leg).
        if -posted[TxKind.order_reward] != row.amount:
            problems.append(f"order reward {row.id} (order {order_id}, level {level}) is {row.amount} but the ledger credited {-posted[TxKind.order_reward]}")
        if posted[TxKind.reversal] != row.reversed_amount:
            problems.append(f"order reward {row.id} (order {order_id}, level {level}) has {row.reversed_amount} reversed but the ledger reversed {posted[TxKind.reversal]}")
        if members[(order_id, level)] - {row.member_id}:
            problems.append(f"order reward {row.id} (order {order_id}, level {level}) belongs to member {row.member_id} but was posted for {sorted(members[(order_id, level)] - {row.member_id}, key=str)}")
    for (order_id, level), posted in sorted(moved.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        problems.append(f"order {order_id} level {level} has reward postings ({-posted[TxKind.order_reward]} credited) but no order reward row")
    return problems


def _reward_levels(sess: Session) -> list[str]:
    """Guards 1 and 4: two levels at most, to the inviter and upline stamped on the order, level 2 never above level 1."""
    problems = []
    by_order: dict[int, dict[int, int]] = defaultdict(dict)
    rows = sess.execute(
        select(OrderReward.id, OrderReward.order_id, OrderReward.level, OrderReward.member_id, OrderReward.amount, Order.inviter_id, Order.upline_id)
        .join(Order, Order.id == OrderReward.order_id)
        .order_by(OrderReward.order_id, OrderReward.level)
    )
    for reward_id, order_id, level, member_id, amount, inviter_id, upline_id in rows:
        if not 1 <= level <= MAX_LEVELS:
            problems.append(f"order reward {reward_id} on order {order_id} is at level {level}; only levels 1 and 2 exist")
            continue
        stamped = inviter_id if level == 1 else upline_id
        if member_id != stamped:
            problems.append(f"order reward {reward_id} on order {order_id} pays member {member_id}, not the level-{level} member stamped on the order ({stamped})")
        by_order[order_id][level] = int(amount)
    for order_id, levels in by_order.items():
        if levels.get(2, 0) > levels.get(1, 0):
            problems.append(f"order {order_id} pays level 2 ({levels[2]}) more than level 1 ({levels.get(1, 0)})")
    stray = sess.execute(
        select(LedgerTransaction.id, LedgerTransaction.order_id, LedgerTransaction.level)
        .where(LedgerTransaction.kind == TxKind.order_reward, (LedgerTransaction.level.is_(None)) | (LedgerTransaction.level.not_in(range(1, MAX_LEVELS + 1))))
        .order_by(LedgerTransaction.id)
    )
    problems += [f"transaction {tx_id} rewards order {order_id} at level {level}; only levels 1 and 2 exist" for tx_id, order_id, level in stray]
    return problems


def _owner(member_id: int | None) -> str:
    return "merchant" if member_id is None else f"member {member_id}"
