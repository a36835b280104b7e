"""Read-side figures of messages to members, for the admin API and the console."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from server.notifications.models import NotifyEvent, OutboxMessage, OutboxState


def outbox_query(*, state: OutboxState | None = None, event: NotifyEvent | None = None, member_id: int | None = None) -> Select[Any]:
    """Outbox rows, filtered; the caller orders and pages them."""
    stmt = select(OutboxMessage)
    if state is not None:
        stmt = stmt.where(OutboxMessage.state == state)
    if event is not None:
        stmt = stmt.where(OutboxMessage.event == event)
    if member_id is not None:
        stmt = stmt.where(OutboxMessage.member_id == member_id)
    return stmt


#: States of a message that is still to go out: waiting (or waiting again), or claimed by a sender.
BACKLOG_STATES = (OutboxState.queued, OutboxState.sending)


def backlog(sess: Session) -> int:
    """Messages still to be sent: one count over the (state, next_attempt_at) index."""
    return int(sess.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state.in_(BACKLOG_STATES))) or 0)
