"""Read-side figures about points that other packages show: a member's balances, settlement runs and
their statements, the statements' lines as the ledger holds them.

Depends only on the models, so any package may read it without importing the points services.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from server.accounts.models import Member
from server.orders.models import Order
from server.points.models import Account, AccountKind, Entry, HoldState, JobClaim, LedgerTransaction, OrderReward, RewardHold, SettlementRun, Statement, TxKind


@dataclass(frozen=True)
class Balances:
    """A member's balances in hundredths of a point; ``debt`` is what they owe, as a positive number."""

    available: int
    pending: int
    matured: int
    debt: int


def member_balances(sess: Session, member_id: int) -> Balances:
    """The member's four balances (0 for an account never opened)."""
    rows = sess.execute(select(Account.kind, Account.balance).where(Account.member_id == member_id)).all()
    found = {kind: int(balance) for kind, balance in rows}
    return Balances(
        available=found.get(AccountKind.available, 0),
        pending=found.get(AccountKind.pending, 0),
        matured=found.get(AccountKind.matured, 0),
        debt=-found.get(AccountKind.debt, 0),
    )


def runs_query() -> Any:
    """Settlement runs (scheduled, by hand, from the command line), to be listed newest first."""
    return select(SettlementRun)


def statements_query(run_id: int) -> Any:
    """One run's statements with their members (``point_statements.run_member`` leads with the run)."""
    return select(Statement, Member).join(Member, Member.id == Statement.member_id).where(Statement.run_id == run_id)


def settle_key(run_id: int, member_id: int) -> str:
    """The idempotency key of a member's settle posting in a run: one posting and one statement per (run, member)."""
    return f"settle:{run_id}:{member_id}"


#: The last line of a statement whose matured postings are not all itemised.
REST_REASON = "matured postings not itemised above"


def statement_lines(sess: Session, statements: Iterable[Statement]) -> dict[int, list[dict[str, Any]]]:
    """Each statement's lines by statement id, read from the ledger: what its settle posting took from matured.

    A settle posting empties the member's matured account under its lock, so a statement covers the matured
    entries after the member's previous settle posting and before its own (entry ids follow the account lock).
    Those of an order are one line per reward, (order, level), net of what was reversed while matured, in
    reward order; a reward reversed whole while matured nets to nothing and is left out. The others follow one
    line each in entry order. Whatever the lines do not add up to is a last line of its own. The ledger is
    append-only, so a statement reads the same however late a refund comes.

    Four queries for any number of statements.
    """
    rows = list(statements)
    if not rows:
        return {}
    # Each statement's run and member, and the run of the member's statement before it (none for the first).
    st, prev, older = Statement, aliased(Statement), aliased(Statement)
    before = select(func.max(older.id)).where(older.member_id == st.member_id, older.id < st.id).correlate(st).scalar_subquery()
    earlier = {
        statement_id: settle_key(run_id, member_id)
        for statement_id, member_id, run_id in sess.execute(
            select(st.id, st.member_id, prev.run_id).join(prev, prev.id == before).where(st.id.in_([row.id for row in rows]))
        )
    }
    keys = {row.id: settle_key(row.run_id, row.member_id) for row in rows}
    # Each settle posting's matured leg: (account, entry) by key.
    legs = {
        key: (account_id, entry_id)
        for key, account_id, entry_id in sess.execute(
            select(LedgerTransaction.idempotency_key, Entry.account_id, Entry.id)
            .join(Entry, Entry.transaction_id == LedgerTransaction.id)
            .join(Account, (Account.id == Entry.account_id) & (Account.kind == AccountKind.matured))
            .where(LedgerTransaction.idempotency_key.in_(set(keys.values()) | set(earlier.values())))
        )
    }
    windows = {}
    for row in rows:
        if keys[row.id] in legs:
            account_id, last = legs[keys[row.id]]
            if row.id not in earlier:
                start = 0  # the member's first statement: the account's whole history
            elif earlier[row.id] in legs:
                start = legs[earlier[row.id]][1]
            else:
                # The statement before has no settle leg (data repaired by hand, say): the window starts after the
                # last settle posting on the account before this one, whichever it was, never at the beginning.
                start = _last_settle_entry(sess, account_id, last)
            windows[row.id] = (account_id, start, last)
    entries: dict[int, list[tuple[int, int, LedgerTransaction]]] = {account_id: [] for account_id, _, _ in windows.values()}
    if windows:
        for entry_id, account_id, amount, tx in sess.execute(
            select(Entry.id, Entry.account_id, Entry.amount, LedgerTransaction)
            .join(LedgerTransaction, LedgerTransaction.id == Entry.transaction_id)
            .where(or_(*(and_(Entry.account_id == a, Entry.id > start, Entry.id < last) for a, start, last in windows.values())))
            .order_by(Entry.id)
        ):
            entries[account_id].append((entry_id, int(amount), tx))
    order_ids = {tx.order_id for found in entries.values() for _, _, tx in found if tx.order_id is not None}
    rewards = {
        (reward.order_id, reward.level, reward.member_id): (reward, out_trade_no)
        for reward, out_trade_no in sess.execute(
            select(OrderReward, Order.out_trade_no).join(Order, Order.id == OrderReward.order_id).where(OrderReward.order_id.in_(order_ids))
        )
    } if order_ids else {}
    lines: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        window = windows.get(row.id)
        items = _window_lines(row.member_id, window[1:], entries[window[0]], rewards) if window is not None else []
        rest = row.settled - sum(line["amount"] for line in items)
        if rest:
            items.append({"kind": "other", "amount": rest, "reason": REST_REASON})
        lines[row.id] = items
    return lines


def _window_lines(
    member_id: int,
    window: tuple[int, int],
    entries: list[tuple[int, int, LedgerTransaction]],
    rewards: dict[tuple[int, int, int], tuple[OrderReward, str]],
) -> list[dict[str, Any]]:
    """The lines of the account's ``entries`` strictly inside ``window`` (entry ids): one per reward, net, in
    reward order, then one per other posting, in entry order."""
    start, last = window
    by_reward: dict[tuple[int, int, int], int] = {}
    others: list[dict[str, Any]] = []
    for entry_id, amount, tx in entries:
        if not start < entry_id < last:
            continue  # another statement's window on the same account
        reward_key = (tx.order_id, tx.level, member_id)
        if tx.order_id is None:
            others.append({"kind": tx.kind.value, "transaction_id": tx.id, "reason": tx.reason, "amount": amount})
        elif reward_key in rewards:
            by_reward[reward_key] = by_reward.get(reward_key, 0) + amount
    items = []
    for reward_key in sorted(by_reward, key=lambda k: rewards[k][0].id):
        if by_reward[reward_key]:
            reward, out_trade_no = rewards[reward_key]
            items.append({"kind": "order_reward", "order_id": reward.order_id, "out_trade_no": out_trade_no, "level": reward.level, "amount": by_reward[reward_key], "rule": reward.rule})
    return items + others


def _last_settle_entry(sess: Session, account_id: int, below: int) -> int:
    """The id of the account's last settle entry before entry ``below``, 0 if there is none."""
    found = sess.scalar(
        select(func.max(Entry.id))
        .join(LedgerTransaction, LedgerTransaction.id == Entry.transaction_id)
        .where(Entry.account_id == account_id, Entry.id < below, LedgerTransaction.kind == TxKind.settle)
    )
    return int(found or 0)


def manual_claim(sess: Session, claim_id: int, job: str) -> JobClaim | None:
    """A settlement claim by id, only if it is of ``job``."""
    row = sess.get(JobClaim, claim_id)
    return row if row is not None and row.job == job else None


def run_by_period(sess: Session, period: str) -> SettlementRun | None:
    return sess.scalar(select(SettlementRun).where(SettlementRun.period == period))


def lead_reward_key(lead_id: int) -> str:
    """The idempotency key of a lead's valid-lead points (the same whether they were held or not)."""
    return f"lead:{lead_id}:reward"


def hold_state(sess: Session, subject: str, ref_id: int, *, lock: bool = False) -> HoldState | None:
    """Where the hold on an order's (``subject`` "order") or a lead's rewards stands, None if never held.

    With ``lock`` the hold row stays locked until the commit: the maturing step reads it so, and a
    reversal or reopening waits for it (or it for them)."""
    stmt = select(RewardHold.state).where(RewardHold.subject == subject, RewardHold.ref_id == ref_id)
    return sess.scalar(stmt.with_for_update() if lock else stmt)

