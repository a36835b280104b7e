"""Read-side figures about points that other packages show: a member's balances.

Depends only on the models, so any package may read it without importing the points services.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.points.models import Account, AccountKind


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
