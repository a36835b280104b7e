"""Posting to the ledger: balanced, idempotent, guarded, append-only.

``post`` is the only way money moves. It inserts the transaction under its
idempotency key (a repeat returns the first posting), then moves each balance
with one conditional UPDATE whose WHERE clause refuses to take a spendable or
held balance below zero or a debt above zero, and writes the entries. It all
happens in one savepoint: a refused leg leaves no trace.

The merchant's accounts (issuance, redemption, expiry) are only written entries:
they have no limit to guard, and updating a cached balance on the issuance row,
a leg of every reward, made every posting wait for the one before it to commit
(bench/hot_account.py measured it). Their balance is the sum of their entries.

One lock order, so that no two units of work deadlock on the ledger: a unit of work
that changes members' points locks all the member accounts it will post to before
its first posting, with ``lock_accounts``: member by member in member-id order, and
each member's in the order available, debt, matured, pending (``LOCK_ORDER``, the
order of the ``member_kind`` index, which one ``SELECT … FOR UPDATE`` walks). Only
then does it post (the merchant's accounts take no row lock). A credit (debt repaid
first), a settlement, a reversal, a maturing, a redemption and its cancellation all
follow it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db import per_transaction, rowcount
from server.points.errors import InsufficientPointsError, LedgerError
from server.points.models import (
    MEMBER_KINDS,
    MERCHANT_KINDS,
    Account,
    AccountKind,
    Entry,
    LedgerTransaction,
    TxKind,
)

#: Accounts that may never go below zero, and the one that may never go above.
_NON_NEGATIVE = (AccountKind.pending, AccountKind.matured, AccountKind.available)
#: The order in which one member's accounts are locked: that of their kinds as strings, as the ``member_kind`` index holds them.
LOCK_ORDER = (AccountKind.available, AccountKind.debt, AccountKind.matured, AccountKind.pending)


def account(sess: Session, member_id: int | None, kind: AccountKind) -> Account:
    """A member's (or, with None, the merchant's) account of ``kind``, opened on first use."""
    if (member_id is None) == (kind in MEMBER_KINDS):
        raise LedgerError(f"{kind.value} is not a {'merchant' if member_id is None else 'member'} account")
    known = _known_accounts(sess)
    held = known.get((member_id, kind))
    if held is not None and inspect(held).persistent:
        return held  # read in this transaction already (not if a savepoint that opened it was rolled back since)
    stmt = select(Account).where(Account.kind == kind, Account.member_id.is_(None) if member_id is None else Account.member_id == member_id)
    found = sess.scalar(stmt)
    if found is None:
        try:
            with sess.begin_nested():
                found = Account(member_id=member_id, kind=kind, balance=0)
                sess.add(found)
        except IntegrityError:
            found = sess.scalars(stmt).one()
    known[(member_id, kind)] = found
    return found


def _known_accounts(sess: Session) -> dict[tuple[int | None, AccountKind], Account]:
    """The accounts this transaction has read, by (member, kind): an account, once opened, is never removed."""
    return per_transaction(sess, "ledger.accounts", dict)


def locking(*columns: Any, member_ids: Iterable[int], kinds: Iterable[AccountKind] = LOCK_ORDER) -> Select[Any]:
    """``SELECT columns … FOR UPDATE`` of the members' accounts of ``kinds``, taken in the lock order (see the module docstring).

    It reads the ``member_kind`` index in order, (member, kind) ascending, and InnoDB locks rows as it reads them.
    """
    return (
        select(*columns)
        .where(Account.member_id.in_(sorted(set(member_ids))), Account.kind.in_(sorted(set(kinds), key=LOCK_ORDER.index)))
        .with_hint(Account.__table__, "FORCE INDEX (member_kind)", "mysql")
        .order_by(Account.member_id, Account.kind)
        .with_for_update()
    )


def lock_accounts(
    sess: Session, member_ids: Iterable[int], kinds: Iterable[AccountKind] = LOCK_ORDER, *, open_missing: bool = True
) -> dict[tuple[int, AccountKind], Account]:
    """Lock the members' accounts of ``kinds`` in the lock order, before any posting; {(member, kind): account}, as locked.

    Missing ones are opened after those that exist are locked (a new row is its opener's alone until it commits,
    so it comes after them), unless ``open_missing`` is False: then only those that exist are returned.
    """
    member_ids, kinds = sorted(set(member_ids)), [kind for kind in LOCK_ORDER if kind in set(kinds)]
    if not member_ids or not kinds:
        return {}
    stmt = locking(Account, member_ids=member_ids, kinds=kinds).execution_options(populate_existing=True)
    locked = {(acct.member_id, acct.kind): acct for acct in sess.scalars(stmt) if acct.member_id is not None}
    _known_accounts(sess).update(locked)
    if open_missing:
        for member_id in member_ids:
            for kind in kinds:
                if (member_id, kind) not in locked:
                    opened = locked[(member_id, kind)] = account(sess, member_id, kind)
                    # Ours since the insert, or, opened by another unit of work that committed first, locked now.
                    sess.refresh(opened, with_for_update=True)
    return locked


@dataclass(frozen=True)
class Posted:
    transaction: LedgerTransaction
    #: False when the idempotency key had been posted before; nothing moved this time.
    new: bool


def find(sess: Session, key: str) -> LedgerTransaction | None:
    return sess.scalar(select(LedgerTransaction).where(LedgerTransaction.idempotency_key == key))


def post(
    sess: Session,
    *,
    key: str,
    kind: TxKind,
    legs: list[tuple[Account, int]],
    reason: str,
    member_id: int | None = None,
    order_id: int | None = None,
    level: int | None = None,
    reverses_id: int | None = None,
    actor: str = "system",
    detail: dict[str, Any] | None = None,
) -> Posted:
    """Post one balanced transaction once per ``key``; InsufficientPointsError if a balance would break."""
    legs = [(acct, amount) for acct, amount in legs if amount != 0]
    if sum(amount for _, amount in legs) != 0:
        raise LedgerError(f"transaction {key} does not balance")
    # No look for the key first: a key is new nearly always, and a repeat is caught by its unique index.
    try:
        with sess.begin_nested():
            tx = LedgerTransaction(
                idempotency_key=key,
                kind=kind,
                member_id=member_id,
                order_id=order_id,
                level=level,
                reverses_id=reverses_id,
                reason=reason,
                actor=actor,
                detail=detail or {},
            )
            sess.add(tx)
            sess.flush()
            ordered = sorted(legs, key=lambda leg: leg[0].id)
            # One lock order for every posting, so two postings never deadlock.
            for acct, amount in ordered:
                _move(sess, acct, amount)
            # The entries in one INSERT, in the same order: their ids follow the accounts.
            sess.execute(insert(Entry), [{"transaction_id": tx.id, "account_id": acct.id, "amount": amount} for acct, amount in ordered])
    except IntegrityError:
        # A concurrent posting of the same key won; it is the posting.
        existing = find(sess, key)
        if existing is None:
            raise
        return Posted(existing, False)
    for acct, _ in legs:
        if acct.kind not in MERCHANT_KINDS:
            sess.expire(acct, ["balance"])  # moved in the database; read again if someone asks
    return Posted(tx, True)


def _move(sess: Session, acct: Account, amount: int) -> None:
    if acct.kind in MERCHANT_KINDS:
        return  # no cached balance, no limit: the entry is the whole posting (and no row lock is taken)
    guard = []
    if acct.kind in _NON_NEGATIVE and amount < 0:
        guard.append(Account.balance + amount >= 0)
    if acct.kind == AccountKind.debt and amount > 0:
        guard.append(Account.balance + amount <= 0)
    result = sess.execute(update(Account).where(Account.id == acct.id, *guard).values(balance=Account.balance + amount))
    if rowcount(result) != 1:
        raise InsufficientPointsError(data={"account": acct.kind.value, "needed": -amount})


def entry_sum(sess: Session, account_id: int) -> int:
    return int(sess.scalar(select(func.coalesce(func.sum(Entry.amount), 0)).where(Entry.account_id == account_id)) or 0)


def balance(sess: Session, acct: Account) -> int:
    """The account's balance: the cached one of a member's account, the sum of the entries of the merchant's."""
    return entry_sum(sess, acct.id) if acct.kind in MERCHANT_KINDS else acct.balance


def credit_available(sess: Session, member_id: int, amount: int, *, source: AccountKind, key: str, kind: TxKind, reason: str, actor: str = "system", detail: dict[str, Any] | None = None) -> tuple[int, int]:
    """Points reaching a member's available balance pay their debt first. Returns (repaid, credited).

    Locks the member's available and debt accounts (and a member account the points come from) in the lock order.
    """
    own_source = source in MEMBER_KINDS
    locked = lock_accounts(sess, [member_id], (AccountKind.available, AccountKind.debt, *((source,) if own_source else ())))
    debt, available = locked[(member_id, AccountKind.debt)], locked[(member_id, AccountKind.available)]
    repay = min(-debt.balance, amount)
    from_account = locked[(member_id, source)] if own_source else account(sess, None, source)
    legs = [(from_account, -amount), (debt, repay), (available, amount - repay)]
    post(sess, key=key, kind=kind, legs=legs, reason=reason, member_id=member_id, actor=actor, detail=(detail or {}) | {"debt_repaid": repay})
    return repay, amount - repay
