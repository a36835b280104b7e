"""Read-side figures of messages to members, for the admin API and the console."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

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
