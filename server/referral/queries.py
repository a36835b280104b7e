"""Read-side answers about the referral chain that other packages show: who invited a member; the lead pool.

Depends only on the models, so any package may read it without importing the referral services.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from server.accounts.models import Member
from server.referral.models import Binding, Lead, LeadFollowUp, LeadSource, LeadStatus


def inviter_and_upline(sess: Session, member_id: int) -> tuple[int | None, int | None]:
    """The member's level-1 and level-2 inviters: one primary-key read."""
    binding = sess.get(Binding, member_id)
    return (binding.inviter_id, binding.upline_id) if binding else (None, None)


#: Built once: /me runs it on every call.
_INVITER_SHOWN = select(Member.id, Member.nickname).join(Binding, Binding.inviter_id == Member.id).where(Binding.member_id == bindparam("member_id"))


def inviter_shown(sess: Session, member_id: int) -> tuple[int, str] | None:
    """The id and nickname of the member's inviter, in one statement; None for a member nobody invited."""
    row = sess.execute(_INVITER_SHOWN, {"member_id": member_id}).first()
    return (row.id, row.nickname) if row else None


@dataclass(frozen=True)
class LeadFilters:
    """What the lead pool can be narrowed to; None leaves a filter out. ``start``/``end`` bound ``created_at`` [start, end)."""

    status: LeadStatus | None = None
    follow_up: LeadFollowUp | None = None
    source: LeadSource | None = None
    #: An assignee's staff id; 0 for leads nobody is assigned.
    assignee_id: int | None = None
    channel: str | None = None
    sharer_id: int | None = None
    partner_id: int | None = None
    start: datetime | None = None
    end: datetime | None = None


def lead_pool(filters: LeadFilters) -> Select[Lead]:
    """The lead pool's selection, for the admin API and the console alike; each filter has an index behind it."""
    stmt = select(Lead)
    for column, value in (
        (Lead.status, filters.status),
        (Lead.follow_up, filters.follow_up),
        (Lead.source, filters.source),
        (Lead.channel, filters.channel),
        (Lead.sharer_id, filters.sharer_id),
        (Lead.partner_id, filters.partner_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if filters.assignee_id is not None:
        stmt = stmt.where(Lead.assignee_id.is_(None) if filters.assignee_id == 0 else Lead.assignee_id == filters.assignee_id)
    if filters.start is not None:
        stmt = stmt.where(Lead.created_at >= filters.start)
    if filters.end is not None:
        stmt = stmt.where(Lead.created_at < filters.end)
    return stmt
