"""Settlement: matured points become available, once per period, with a statement per member.

A period is claimed by inserting its ``SettlementRun`` (the period key is unique),
so a second settle of the same period — another scheduler, a manual run — is
refused before it moves anything. Everything one settle does is one unit of
work: if any member's posting fails, the claim rolls back with it and the
period can simply be run again. The run locks its members' accounts in the ledger's one
lock order (``ledger``'s docstring): step by step in member-id order, each member's
available, debt, then matured account, as every credit and reversal does.

Also here: expiry of old available points, and the operator's manual grant.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Callable
from typing import cast as typed

from flask import current_app
from sqlalchemy import ColumnElement, Select, Table, and_, case, func, insert, literal, select, union_all, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import cache, db, events, tasks
from server.accounts.services import record_audit
from server.clock import local
from server.db import UTCDateTime, utcnow
from server.points import ledger
from server.points.errors import SettlementClaimedError, SettlementRunningError
from server.points.models import (
    Account,
    AccountKind,
    Entry,
    JobClaim,
    LedgerTransaction,
    OrderReward,
    RewardState,
    SettlementRun,
    Statement,
    TxKind,
)
from server.points.queries import manual_claim, run_by_period, settle_key
from server.settings.services import SettingSpec, get_setting, register

K = AccountKind
MODES = ("weekly", "monthly", "threshold")
#: Scheduled weekly and monthly settlements wait until this hour, after the night's order jobs.
SETTLE_HOUR = 2

register(
    SettingSpec("settlement_mode", str, "weekly", "When matured points settle into available: weekly, monthly, or threshold (checked hourly).", choices=MODES),
    SettingSpec(
        "settlement_threshold",
        int,
        200_000,
        "Threshold mode: a member settles once their matured points reach this many hundredths of a point (200000 = 2,000 points).",
        minimum=1,
        maximum=100_000_000,
    ),
    SettingSpec("settlement_weekday", int, 1, "Weekly mode: the day of the week to settle, 1 = Monday … 7 = Sunday (after 02:00 China time).", minimum=1, maximum=7),
    SettingSpec("points_expiry_days", int, 0, "Available points expire this many days after they were credited, oldest first; 0 = never.", minimum=0, maximum=3650),
)


def period_key(mode: str, now: datetime) -> str:
    """The period ``now`` falls in: ``weekly:2026-W47``, ``monthly:2026-11``, ``threshold:2026-11-23T10``."""
    at = local(now)
    if mode == "weekly":
        year, week, _ = at.isocalendar()
        return f"weekly:{year}-W{week:02d}"
    if mode == "monthly":
        return f"monthly:{at:%Y-%m}"
    if mode == "threshold":
        return f"threshold:{at:%Y-%m-%dT%H}"
    raise ValueError(f"unknown settlement mode {mode!r}")


def manual_period_key(now: datetime | None = None) -> str:
    """A period of its own for a run someone asked for, so it never collides with a scheduled one."""
    return f"manual:{local(now or utcnow()):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def due_period(mode: str, now: datetime, weekday: int) -> str | None:
    """The period a scheduled settlement should claim at ``now``, or None while it is not yet due.

    Due from 02:00 on the settlement weekday (weekly) or the 1st (monthly) until the
    period ends, so a scheduler that was down at 02:00 catches up later the same
    week or month; the period's claim keeps it to one run.
    """
    at = local(now)
    if mode == "weekly" and (at.isoweekday(), at.hour) < (weekday, SETTLE_HOUR):
        return None
    if mode == "monthly" and (at.day, at.hour) < (1, SETTLE_HOUR):
        return None
    return period_key(mode, now)


def _claim_period(sess: Session, *, period: str, mode: str, actor: str) -> SettlementRun:
    if sess.scalar(select(SettlementRun.id).where(SettlementRun.period == period)) is not None:
        raise SettlementClaimedError(data={"period": period})
    run = SettlementRun(period=period, mode=mode, actor=actor)
    try:
        with sess.begin_nested():
            sess.add(run)
    except IntegrityError:
        # A concurrent settle inserted it first; its commit made ours a duplicate.
        raise SettlementClaimedError(data={"period": period}) from None
    return run


#: Members settled per step. Each step is the same dozen set-based statements over this many members;
#: every IN list stays under MariaDB's ``in_predicate_conversion_threshold`` (1000), past which it
#: becomes a join whose locks depend on the plan. A run's progress is reported after each step.
CHUNK = 900


@dataclass(frozen=True)
class Settled:
    """One statement a run wrote, as ``events.points_settled`` hands it to its handlers."""

    statement_id: int
    member_id: int
    settled: int
    debt_repaid: int
    credited: int
    available_after: int
    #: Positive: what the member still owes.
    debt_after: int


@dataclass
class _Member:
    """One member of a step: their locked accounts and balances, and what the run does with them."""

    member_id: int
    matured_id: int
    #: The matured balance under the lock: all of it settles.
    amount: int
    #: Paid towards the debt first (``ledger.credit_available``), and what reaches available.
    repaid: int
    credited: int
    available_after: int
    #: Positive: what the member still owes after the run.
    debt_after: int
    tx_id: int = 0


# The steps read and write through SQLAlchemy Core: thousands of plain rows, no ORM objects.
_accounts, _entries, _transactions, _rewards, _statements = (
    typed(Table, model.__table__) for model in (Account, Entry, LedgerTransaction, OrderReward, Statement)
)
#: The debt and available accounts a settlement posting needs; one opened concurrently is skipped.
_OPEN_ACCOUNT = insert(_accounts).prefix_with("OR IGNORE", dialect="sqlite").prefix_with("IGNORE", dialect="mysql")
_KINDS = (K.available, K.debt, K.matured)


def _lock_members(conn: Connection, member_ids: list[int], minimum: int) -> list[_Member]:
    """Lock the members' available, debt and matured accounts, in the ledger's lock order; those at ``minimum`` or more.

    Member by member in member-id order, each member's available, then debt, then matured (``ledger.LOCK_ORDER``):
    the run's steps go up in member id, so the whole run takes its locks in that order too, as every credit,
    reversal, redemption and cancellation does, and none can deadlock it. Locked by the ``member_kind`` index,
    so nothing else is: postings to any other account, the merchant's included, go on while the run holds these.
    Under the lock no maturing, reversal or credit can change an amount before the run posts it, since each of
    them posts to one of these accounts.
    """
    a = _accounts.c
    columns = (a.id, a.member_id, a.kind, a.balance)
    found: dict[tuple[int, AccountKind], int] = {}
    balance: dict[int, int] = {}
    for acct_id, member_id, kind, amount in conn.execute(ledger.locking(*columns, member_ids=member_ids, kinds=_KINDS)):
        found[(member_id, kind)], balance[acct_id] = acct_id, int(amount)
    # Missing debt and available accounts are opened after the existing ones are locked (new rows are the run's
    # alone), then locked too: one another unit of work opened and committed first is skipped by the insert.
    missing = {m for m in member_ids for kind in (K.available, K.debt) if (m, kind) not in found}
    if missing:
        # Both kinds for each such member, made by the database: the insert skips the one that exists.
        kind = _accounts.c.kind.type
        kinds = union_all(select(literal(K.available, kind).label("kind")), select(literal(K.debt, kind).label("kind"))).subquery("kinds")
        conn.execute(
            _OPEN_ACCOUNT.from_select(
                ["member_id", "kind", "balance"],
                select(a.member_id, kinds.c.kind, literal(0)).select_from(_accounts).join(kinds, literal(True)).where(a.member_id.in_(sorted(missing)), a.kind == K.matured),
            )
        )
        opened = ledger.locking(*columns, member_ids=missing, kinds=(K.available, K.debt))
        for acct_id, member_id, kind, amount in conn.execute(opened):
            found[(member_id, kind)], balance[acct_id] = acct_id, int(amount)
    members = []
    for m in member_ids:
        matured = found.get((m, K.matured))
        amount = balance[matured] if matured is not None else 0
        if amount < minimum:
            continue  # a reversal took matured points since the candidates were read
        debt, available = found[(m, K.debt)], found[(m, K.available)]
        repaid = min(-balance[debt], amount)
        assert matured is not None  # the minimum is at least 1
        members.append(_Member(m, matured, amount, repaid, amount - repaid, balance[available] + amount - repaid, -(balance[debt] + repaid)))
    return members


def _repaid(matured: Any, debt: Any) -> ColumnElement[Any]:
    """What a settlement repays of the debt, from the locked balances: all of matured, at most what is owed."""
    owed = -debt.c.balance
    return case((owed < matured.c.balance, owed), else_=matured.c.balance)


def _insert_statements(conn: Connection, run: SettlementRun, members: list[_Member], now: datetime) -> None:
    """The step's statements in one INSERT … SELECT, from the members' locked balances before the run's postings.

    The figures ``_lock_members`` computed, and the same arithmetic: all of matured settles, debt is repaid
    first, the rest reaches available. The lines are not written: they are the ledger's, read back by
    ``queries.statement_lines``.
    """
    st = _statements.c
    matured, debt, available = (_accounts.alias(name) for name in ("matured", "debt", "available"))
    repaid = _repaid(matured, debt)
    rows = (
        select(
            literal(run.id),
            matured.c.member_id,
            matured.c.balance,
            repaid,
            matured.c.balance - repaid,
            available.c.balance + matured.c.balance - repaid,
            # Positive, what the member still owes: the statement is read by people, not the ledger.
            -(debt.c.balance + repaid),
            literal(now, UTCDateTime()),
        )
        .select_from(matured)
        .join(debt, (debt.c.member_id == matured.c.member_id) & (debt.c.kind == K.debt))
        .join(available, (available.c.member_id == matured.c.member_id) & (available.c.kind == K.available))
        .where(matured.c.id.in_([m.matured_id for m in members]))
    )
    columns = ("run_id", "member_id", "settled", "debt_repaid", "credited", "available_after", "debt_after", "created_at")
    conn.execute(insert(_statements).from_select([st[name] for name in columns], rows))


def _settle_legs(tx_ids: list[int], now: datetime) -> Select[Any]:
    """The entries of the step's settle transactions, from their members' locked balances before the postings.

    What ``ledger.credit_available`` posts: all of matured out, debt repaid first, the rest to available;
    no zero leg; each transaction's legs in account-id order, so entry ids follow the accounts as in ``ledger.post``.
    """
    t = _transactions.c
    leg, matured, debt = (_accounts.alias(name) for name in ("leg", "matured", "debt"))
    repaid = _repaid(matured, debt)
    amount = case((leg.c.kind == K.matured, -matured.c.balance), (leg.c.kind == K.debt, repaid), else_=matured.c.balance - repaid)
    return (
        select(t.id, leg.c.id, amount, literal(now, UTCDateTime()))
        .select_from(_transactions)
        .join(leg, (leg.c.member_id == t.member_id) & leg.c.kind.in_(_KINDS))
        .join(matured, (matured.c.member_id == t.member_id) & (matured.c.kind == K.matured))
        .join(debt, (debt.c.member_id == t.member_id) & (debt.c.kind == K.debt))
        .where(t.id.in_(tx_ids), amount != 0)
        .order_by(t.id, leg.c.id)
    )


def _settle_members(conn: Connection, run: SettlementRun, member_ids: list[int], minimum: int, now: datetime) -> list[Settled]:
    """One step of ``settle``: lock, write the statements, post one settle transaction per member, mark the rewards settled.

    Every statement covers the whole step. Each member's posting is the one ``ledger.credit_available``
    makes (key ``settle:<run>:<member>``, matured out, debt repaid first, the rest to available, legs in
    account-id order), and the balances move by exactly the entries written.
    """
    members = _lock_members(conn, member_ids, minimum)
    if not members:
        return []
    _insert_statements(conn, run, members, now)
    keys = {settle_key(run.id, m.member_id): m for m in members}
    conn.execute(
        insert(_transactions),
        [
            {
                "idempotency_key": key,
                "kind": TxKind.settle,
                "member_id": m.member_id,
                "order_id": None,
                "level": None,
                "reverses_id": None,
                "reason": f"Settlement {run.period}: {m.amount / 100:.2f} matured points",
                "detail": {"run_id": run.id, "period": run.period, "debt_repaid": m.repaid},
                "actor": run.actor,
                "created_at": now,
            }
            for key, m in keys.items()
        ],
    )
    t = _transactions.c
    for tx_id, key in conn.execute(select(t.id, t.idempotency_key).where(t.idempotency_key.in_(list(keys)))):
        keys[key].tx_id = tx_id
    conn.execute(insert(_entries).from_select(["transaction_id", "account_id", "amount", "created_at"], _settle_legs([m.tx_id for m in members], now)))
    a, e = _accounts.c, _entries.c
    conn.execute(update(_accounts).where(a.id == e.account_id, e.transaction_id.in_([m.tx_id for m in members])).values(balance=a.balance + e.amount))
    # Every reward still matured, and only those: under the account locks none can have moved since the balances were read.
    r = _rewards.c
    conn.execute(
        update(_rewards).where(r.member_id.in_([m.member_id for m in members]), r.state == RewardState.matured).values(state=RewardState.settled)
    )
    st = _statements.c
    ids = {member_id: statement_id for member_id, statement_id in conn.execute(
        select(st.member_id, st.id).where(st.run_id == run.id, st.member_id.in_([m.member_id for m in members]))
    )}
    return [Settled(ids[m.member_id], m.member_id, m.amount, m.repaid, m.credited, m.available_after, m.debt_after) for m in members]


def _expire_ledger_objects(sess: Session) -> None:
    """Accounts and rewards loaded in the session before the run (which wrote around the ORM) read their new values on next use."""
    for obj in list(sess.identity_map.values()):
        if isinstance(obj, (Account, OrderReward)):
            sess.expire(obj)


def settle(sess: Session, *, period: str, mode: str, actor: str, progress: Callable[[int, int], None] | None = None) -> SettlementRun:
    """Claim ``period`` and settle every member's matured points into available, in member-id order.

    Threshold mode settles only members whose matured balance reaches ``settlement_threshold``.
    Set-based: ``CHUNK`` members at a time, a dozen statements each, all in the caller's unit of
    work. ``progress(done, total)`` is called with the members done after each step (and 0 before
    the first). SettlementClaimedError if the period already ran; nothing moves then. One
    ``events.points_settled`` for the run, with every statement, once they are all written.
    """
    if mode not in MODES:
        raise ValueError(f"unknown settlement mode {mode!r}")
    run = _claim_period(sess, period=period, mode=mode, actor=actor)
    minimum = int(get_setting(sess, "settlement_threshold")) if mode == "threshold" else 1
    candidates = [
        member_id
        for member_id in sess.scalars(
            select(Account.member_id).where(Account.kind == K.matured, Account.balance >= minimum).order_by(Account.member_id)
        )
        if member_id is not None  # a matured account always has its member
    ]
    now = utcnow()
    conn = sess.connection()
    done: list[Settled] = []
    if progress:
        progress(0, len(candidates))
    for start in range(0, len(candidates), CHUNK):
        done += _settle_members(conn, run, candidates[start : start + CHUNK], minimum, now)
        if progress:
            progress(min(start + CHUNK, len(candidates)), len(candidates))
    _expire_ledger_objects(sess)
    run.members = len(done)
    run.total = sum(s.settled for s in done)
    run.finished_at = utcnow()
    sess.flush()
    if done:
        events.points_settled.send(sess, run=run, statements=done)
    return run


# -- a settlement started by hand, in the background ------------------------------------------------

#: The job name of a settlement started by hand (the console's "run now"), claimed in job_claims.
MANUAL_JOB = "manual-settlement"
#: The claim's period while its run is in progress. (job, period) is unique, so while one runs a
#: second start is refused, on every worker and host; when it ends the claim takes the run's period.
RUNNING = "running"
#: A claim still running after this long belongs to a process that died; the next start replaces it.
STALE_RUN = timedelta(minutes=30)
#: How long the progress of a run is kept in the cache (it is only read while the run is shown).
PROGRESS_TTL = 6 * 3600


def running_manual_settlement(sess: Session, now: datetime | None = None) -> JobClaim | None:
    """The claim of the settlement started by hand that is running now, if any (a stale one is not)."""
    row = sess.scalar(select(JobClaim).where(JobClaim.job == MANUAL_JOB, JobClaim.period == RUNNING))
    if row is None or row.claimed_at < (now or utcnow()) - STALE_RUN:
        return None
    return row


def start_manual_settlement(sess: Session, *, staff_id: int) -> JobClaim:
    """Claim the one slot for a settlement run by hand and queue the run to start once this commits.

    The run settles in the merchant's ``settlement_mode`` under a manual period of its own (as
    ``python -m server settle`` does) and ends by giving the claim that period; until then a second
    start is SettlementRunningError and changes nothing. Audited as ``settlement.start``.
    """
    now = utcnow()
    # A plain read: two starts at once both insert below, and the unique key refuses the later one.
    existing = sess.scalar(select(JobClaim).where(JobClaim.job == MANUAL_JOB, JobClaim.period == RUNNING))
    if existing is not None:
        if existing.claimed_at >= now - STALE_RUN:
            raise SettlementRunningError(data={"job_id": existing.id})
        # Its process died mid-run and its unit of work rolled back: nothing of it was settled.
        existing.period, existing.finished_at = f"abandoned:{existing.id}", now
        sess.flush()
    row = JobClaim(job=MANUAL_JOB, period=RUNNING, claimed_by=f"staff:{staff_id}", claimed_at=now)
    try:
        with sess.begin_nested():
            sess.add(row)
    except IntegrityError:
        # Another start inserted it first and committed while we waited on the unique key.
        raise SettlementRunningError() from None
    mode = str(get_setting(sess, "settlement_mode"))
    record_audit(sess, staff_id, "settlement.start", f"job_claim:{row.id}", {"mode": mode})
    tasks.defer(run_manual_settlement, row.id)
    return row


@dataclass(frozen=True)
class ManualSettlement:
    """Where a settlement started by hand stands: running (with progress when known), done (with its run) or failed.

    A run whose process died (still "running" after ``STALE_RUN``, or replaced by the next start) and a
    run that raised are both failed: nothing of them was settled.
    """

    id: int
    state: str
    started_by: str
    started_at: datetime
    finished_at: datetime | None
    progress: dict[str, int] | None
    run: SettlementRun | None


def manual_settlement(sess: Session, claim_id: int, now: datetime | None = None) -> ManualSettlement | None:
    """A settlement started by hand, by the id ``start_manual_settlement`` returned; None for any other id."""
    claim = manual_claim(sess, claim_id, MANUAL_JOB)
    if claim is None:
        return None
    run, progress = None, None
    if claim.period == RUNNING and claim.claimed_at >= (now or utcnow()) - STALE_RUN:
        state, progress = "running", manual_settlement_progress(claim.id)
    elif claim.period.startswith("manual:"):
        state, run = "done", run_by_period(sess, claim.period)
    else:
        state = "failed"
    return ManualSettlement(claim.id, state, claim.claimed_by, claim.claimed_at, claim.finished_at, progress, run)


def progress_key(claim_id: int) -> str:
    return f"settlement-progress:{claim_id}"


def manual_settlement_progress(claim_id: int) -> dict[str, int] | None:
    """``{"done", "total"}`` members of a running manual settlement, as far as this worker can see (None: unknown)."""
    found = cache.get_value(progress_key(claim_id))
    return found if isinstance(found, dict) else None


def _reporter(claim_id: int) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        # Called before the first step and after each (``CHUNK`` members).
        cache.set_value(progress_key(claim_id), {"done": done, "total": total}, PROGRESS_TTL)

    return report


def run_manual_settlement(claim_id: int) -> None:
    """The background task of ``start_manual_settlement``: settle now, then close the claim with the run's period.

    A run that fails moves nothing (its savepoint rolls back) and closes the claim as ``failed:<id>``,
    so the owner may start another.
    """
    sess = db.session()
    row = sess.get(JobClaim, claim_id, with_for_update=True)
    if row is None or row.job != MANUAL_JOB or row.period != RUNNING:
        return
    mode = str(get_setting(sess, "settlement_mode"))
    try:
        with sess.begin_nested():
            run = settle(sess, period=manual_period_key(), mode=mode, actor=row.claimed_by[:64], progress=_reporter(claim_id))
    except Exception:
        current_app.logger.exception("manual settlement %s failed; nothing was settled", claim_id)
        row.period, row.finished_at = f"failed:{row.id}", utcnow()
        sess.flush()
        return
    row.period, row.finished_at = run.period, utcnow()
    sess.flush()


# -- expiry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expired:
    members: int
    total: int


def _unspent_since(cutoff: datetime) -> Any:
    """SQL, over one available account's entries: what is left of its credits up to ``cutoff`` (see ``expiring_amount``)."""
    old_credits = func.coalesce(func.sum(case((and_(Entry.amount > 0, Entry.created_at <= cutoff), Entry.amount), else_=0)), 0)
    debits = func.coalesce(func.sum(case((Entry.amount < 0, -Entry.amount), else_=0)), 0)
    return old_credits - debits


def expiring_amount(sess: Session, available: Account, cutoff: datetime) -> int:
    """Hundredths of ``available`` credited at or before ``cutoff`` and not yet spent, first in first out.

    Every debit of the account (redemptions, reversals, earlier expiries) is taken to
    spend the oldest credits first. Credits up to the cutoff are a prefix in time, so
    debits use them up before any newer credit: what remains of them is
    ``old credits − all debits``, never below zero. A credit is aged from when it
    reached the available account (settlement, grant, a cancelled redemption).
    """
    return max(int(sess.scalar(select(_unspent_since(cutoff)).where(Entry.account_id == available.id)) or 0), 0)


def expire_points(sess: Session, now: datetime) -> Expired:
    """Move available points older than ``points_expiry_days`` into the merchant's expiry account.

    One posting per member per China-time day; nothing happens when the setting is 0. Members are
    taken in member-id order, the ledger's lock order (see ``ledger``).
    """
    days = int(get_setting(sess, "points_expiry_days"))
    if days <= 0:
        return Expired(0, 0)
    cutoff = now - timedelta(days=days)
    day = f"{local(now):%Y-%m-%d}"
    expiry = ledger.account(sess, None, K.expiry)
    due = sess.scalars(
        select(Account.id)
        .join(Entry, Entry.account_id == Account.id)
        .where(Account.kind == K.available, Account.balance > 0)
        .group_by(Account.id)
        .having(_unspent_since(cutoff) > 0)
        .order_by(Account.member_id)
    ).all()
    members = total = 0
    for account_id in due:
        available = sess.get(Account, account_id, with_for_update=True, populate_existing=True)
        assert available is not None
        # Again under the lock: a redemption may have spent some since the query above.
        amount = min(expiring_amount(sess, available, cutoff), available.balance)
        if amount <= 0:
            continue
        posted = ledger.post(
            sess,
            key=f"expire:{available.member_id}:{day}",
            kind=TxKind.expire,
            legs=[(available, -amount), (expiry, amount)],
            reason=f"{amount / 100:.2f} points credited more than {days} days ago expired",
            member_id=available.member_id,
            detail={"cutoff": cutoff.isoformat(), "days": days},
        )
        if posted.new:
            members += 1
            total += amount
    sess.flush()
    return Expired(members, total)


# -- manual grants ----------------------------------------------------------------------------

#: A typo guard for operators: no single grant moves more than a million points.
MAX_GRANT = 100_000_000


def parse_points(text: str) -> int:
    """``"12.5"`` points as 1250 hundredths, exactly; ValueError for anything finer than 0.01 or absurd."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number of points") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a number of points")
    if abs(value) * 100 > MAX_GRANT:
        raise ValueError(f"at most {MAX_GRANT // 100:,} points at a time")
    hundredths = value * 100
    if hundredths != hundredths.to_integral_value():
        raise ValueError("points have at most two decimals (0.01 is the smallest unit)")
    if hundredths == 0:
        raise ValueError("a grant of zero points does nothing")
    return int(hundredths)


@dataclass(frozen=True)
class Grant:
    transaction: LedgerTransaction
    amount: int
    debt_repaid: int
    credited: int


def grant_points(sess: Session, member_id: int, amount: int, *, reason: str, key: str, actor: str) -> Grant:
    """A manual adjustment under ``key``: a credit from issuance (debt first), or, negative, a debit of available back to issuance.

    InsufficientPointsError when a debit is more than the member has available.
    """
    detail = {"granted": amount}
    if amount > 0:
        repaid, credited = ledger.credit_available(sess, member_id, amount, source=K.issuance, key=key, kind=TxKind.adjust, reason=reason, actor=actor, detail=detail)
    else:
        ledger.post(
            sess,
            key=key,
            kind=TxKind.adjust,
            legs=[(ledger.account(sess, member_id, K.available), amount), (ledger.account(sess, None, K.issuance), -amount)],
            reason=reason,
            member_id=member_id,
            actor=actor,
            detail=detail,
        )
        repaid, credited = 0, amount
    tx = ledger.find(sess, key)
    assert tx is not None
    return Grant(tx, amount, repaid, credited)
