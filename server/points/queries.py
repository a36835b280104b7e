"""Read-side figures about points that other packages show: a member's balances, settlement runs and
their statements.

Depends only on the models, so any package may read it without importing the points services.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.accounts.models import Member
from server.points.models import Account, AccountKind, HoldState, JobClaim, RewardHold, SettlementRun, Statement


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

