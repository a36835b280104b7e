"""Members' subscriptions (/api/v1/subscriptions): what they accepted in ``wx.requestSubscribeMessage``,
and the allowances they have left for each notifying event."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import Field, StringConstraints, field_validator

from server import db
from server.accounts.auth import current_member, member_required
from server.api import Body, parse_body
from server.errors import envelope
from server.notifications import services
from server.notifications.fields import TEMPLATE_ID_RE
from server.notifications.models import NotifyEvent

bp = Blueprint("notifications", __name__, url_prefix="/api/v1")

#: The most results one report carries: a few calls' worth (WeChat asks for at most three templates per call).
MAX_RESULTS = 20

TemplateId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=TEMPLATE_ID_RE.pattern)]


class SubscriptionResult(Body):
    template_id: TemplateId
    #: What ``wx.requestSubscribeMessage`` answered for the template.
    result: Literal["accept", "reject", "ban", "filter"]


class SubscriptionReport(Body):
    results: list[SubscriptionResult] = Field(min_length=1, max_length=MAX_RESULTS)

    @field_validator("results")
    @classmethod
    def _once_each(cls, results: list[SubscriptionResult]) -> list[SubscriptionResult]:
        if len({r.template_id for r in results}) != len(results):
            raise ValueError("each template_id at most once")
        return results


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
