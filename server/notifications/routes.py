"""Members' subscriptions (/api/v1/subscriptions): what they accepted in ``wx.requestSubscribeMessage``,
and the allowances they have left for each notifying event; the outbox for staff (/admin/api/v1/notifications)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import Field, StringConstraints

from server import db
from server.accounts.auth import current_member, current_staff, member_required, staff_required
from server.accounts.models import StaffRole
from server.api import Body, Page, iso, parse_body, parse_query
from server.errors import envelope
from server.notifications import queries, services
from server.notifications.fields import TEMPLATE_ID_RE
from server.notifications.models import NotifyEvent, OutboxMessage, OutboxState

bp = Blueprint("notifications", __name__, url_prefix="/api/v1")
admin_bp = Blueprint("notifications_admin", __name__, url_prefix="/admin/api/v1")

#: The most results one report carries: a few calls' worth (WeChat asks about at most three templates per call).
MAX_RESULTS = 20

#: Anchored: pydantic looks for a pattern anywhere in the string, so the bare one passed "Q2*".
TemplateId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=rf"^{TEMPLATE_ID_RE.pattern}$")]


class SubscriptionResult(Body):
    template_id: TemplateId
    #: What ``wx.requestSubscribeMessage`` answered for the template.
    result: Literal["accept", "reject", "ban", "filter"]


class SubscriptionReport(Body):
    #: Several calls' results may come together: a template accepted twice is two allowances.
    results: list[SubscriptionResult] = Field(min_length=1, max_length=MAX_RESULTS)


def _events_view(allowances: dict[str, int]) -> list[dict[str, Any]]:
    sess = db.session()
    items = []
    for event in NotifyEvent:
        mapping = services.mapping_for(sess, event)
        if mapping is not None:
            items.append({"event": event.value, "template_id": mapping.template_id, "remaining": allowances.get(mapping.template_id, 0)})
    return items


@bp.post("/subscriptions")
@member_required
def report_subscriptions() -> Any:
    """Record what the member answered in ``wx.requestSubscribeMessage``: each acceptance is one more message."""
    report = parse_body(SubscriptionReport)
    member_id = current_member().id
    sess = db.session()
    left = services.record_subscriptions(sess, member_id, [(r.template_id, r.result) for r in report.results])
    return envelope({
        "results": [{"template_id": r.template_id, "result": r.result, "remaining": left[r.template_id]} for r in report.results],
        "events": _events_view(services.remaining_allowances(sess, member_id)),
    })


@bp.get("/subscriptions")
@member_required
def list_subscriptions() -> Any:
    """The events the merchant notifies about, each with its template id (what to ask for) and the member's allowances left."""
    allowances = services.remaining_allowances(db.session(), current_member().id)
    return envelope({"events": _events_view(allowances)})


# -- staff: the outbox --------------------------------------------------------------------------


class OutboxQuery(Page):
    state: OutboxState | None = None
    event: NotifyEvent | None = None
    member_id: int | None = Field(None, ge=1)


def serialize_message(row: OutboxMessage) -> dict[str, Any]:
    """An outbox row as staff see it."""
    return {
        "id": row.id,
        "event": row.event.value,
        "member_id": row.member_id,
        "template_id": row.template_id,
        "data": row.data,
        "page": row.page,
        "has_fallback": row.fallback is not None,
        "state": row.state.value,
        "channel": row.channel.value if row.channel else None,
        "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at) if row.state == OutboxState.queued else None,
        "errcode": row.errcode,
        "reason": row.reason,
        "created_at": iso(row.created_at),
        "sent_at": iso(row.sent_at),
    }


@admin_bp.get("/notifications")
@staff_required(StaffRole.operations)
def list_notifications() -> Any:
    """Messages to members, newest first, with their state and, for dropped ones, why."""
    query = parse_query(OutboxQuery)
    stmt = queries.outbox_query(state=query.state, event=query.event, member_id=query.member_id)
    rows, total = db.paginate(db.session(), stmt, offset=query.offset, limit=query.page_size, order_by=(OutboxMessage.id.desc(),))
    return envelope({"items": [serialize_message(r) for r in rows], "total": total, "page": query.page})


@admin_bp.post("/notifications/<int:outbox_id>/resend")
@staff_required(StaffRole.operations)
def resend_notification(outbox_id: int) -> Any:
    """Send a dropped or failed message again (after the commit), as it was written. Audited."""
    row = services.resend(db.session(), outbox_id, staff_id=current_staff().id)
    return envelope(serialize_message(row))
