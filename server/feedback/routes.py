"""Feedback API: members send feedback and reports and read their own (/api/v1/feedback); staff read
the queue and move items (/admin/api/v1/feedback)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, current_app
from pydantic import Field, StringConstraints

from server import db
from server.accounts.auth import current_member, current_staff, member_required, staff_required
from server.accounts.models import StaffRole
from server.api import Body, NonBlank, Page, iso, parse_body, parse_query
from server.errors import envelope
from server.feedback import services
from server.feedback.models import FeedbackCategory, FeedbackItem, FeedbackKind, FeedbackState

bp = Blueprint("feedback", __name__, url_prefix="/api/v1")
admin_bp = Blueprint("feedback_admin", __name__, url_prefix="/admin/api/v1")

#: Fits MySQL's 64 KiB TEXT even if every character takes utf8mb4's four bytes.
Text = Annotated[NonBlank, StringConstraints(max_length=2000)]
Contact = Annotated[str, StringConstraints(max_length=64)]
SceneCode = Annotated[str, StringConstraints(min_length=1, max_length=32)]
RowId = Annotated[int, Field(ge=1)]
Reply = Annotated[str, StringConstraints(max_length=2000)]


class FeedbackBody(Body):
    kind: Literal["feedback", "report"]
    category: Literal["suggestion", "product", "service", "false_advertising", "harassment", "other"]
    body: Text
    contact: Contact = ""
    #: A report's distributor, by member id…
    distributor_member_id: RowId | None = None
    #: …or by a scene code of theirs the member saw (a poster's or link's).
    scene: SceneCode | None = None


class TransitionBody(Body):
    action: Literal["start", "resolve", "dismiss"]
    #: The state the caller saw: the move only happens if the item is still in it.
    expected_state: Literal["new", "in_progress", "resolved", "dismissed"] | None = None
    reply: Reply = ""


class AdminFeedbackQuery(Page):
    state: FeedbackState | None = None
    kind: FeedbackKind | None = None
    reported_member_id: int | None = Field(None, ge=1)


def serialize_item(item: FeedbackItem, *, staff_view: bool) -> dict[str, Any]:
    """An item as its member sees it, or (``staff_view``) as staff do, with who reported and who handles it."""
    data: dict[str, Any] = {
        "id": item.id,
        "kind": item.kind.value,
        "category": item.category.value,
        "body": item.body,
        "contact": item.contact,
        "reported_member_id": item.reported_member_id,
        "scene": item.scene_code,
        "state": item.state.value,
        "reply": item.reply,
        "replied_at": iso(item.replied_at),
        "created_at": iso(item.created_at),
        "closed_at": iso(item.closed_at),
    }
    if staff_view:
        data["member_id"] = item.member_id
        data["assignee_id"] = item.assignee_id
        data["updated_at"] = iso(item.updated_at)
    return data


@bp.post("/feedback")
@member_required
def send_feedback() -> Any:
    """Send feedback, or report a distributor; a few per member and hour."""
    body = parse_body(FeedbackBody)
    member = current_member()
    services.limit_rate(member.id, current_app.config["FEEDBACK_RATE_LIMIT"])
    item = services.submit(
        db.session(), member, kind=FeedbackKind(body.kind), category=FeedbackCategory(body.category), body=body.body, contact=body.contact,
        distributor_member_id=body.distributor_member_id, scene=body.scene,
    )
    return envelope(serialize_item(item, staff_view=False), status=201)


@bp.get("/feedback")
@member_required
def my_feedback() -> Any:
    """The member's own feedback and reports, newest first, with their state and the staff's reply."""
    query = parse_query(Page)
    rows, total = services.member_items(db.session(), current_member().id, offset=query.offset, limit=query.page_size)
    return envelope({"items": [serialize_item(i, staff_view=False) for i in rows], "total": total, "page": query.page})


@admin_bp.get("/feedback")
@staff_required(StaffRole.operations)
def list_feedback() -> Any:
    query = parse_query(AdminFeedbackQuery)
    stmt = services.items_query(state=query.state, kind=query.kind, reported_member_id=query.reported_member_id)
    rows, total = db.paginate(db.session(), stmt, offset=query.offset, limit=query.page_size, order_by=services.ITEM_ORDER)
    return envelope({"items": [serialize_item(i, staff_view=True) for i in rows], "total": total, "page": query.page})


@admin_bp.get("/feedback/<int:item_id>")
@staff_required(StaffRole.operations)
def get_feedback(item_id: int) -> Any:
    sess = db.session()
    data = serialize_item(services.get_item(sess, item_id), staff_view=True)
    data["notes"] = [
        {"id": note.id, "staff": staff.username, "body": note.body, "created_at": iso(note.created_at)}
        for note, staff in services.notes_of(sess, item_id)
    ]
    return envelope(data)


@admin_bp.post("/feedback/<int:item_id>/transitions")
@staff_required(StaffRole.operations)
def transition_feedback(item_id: int) -> Any:
    """Start, resolve or dismiss an item, with an optional reply; 409 if it is no longer in a state that allows it."""
    body = parse_body(TransitionBody)
    item = services.transition(
        db.session(), item_id, body.action, staff=current_staff(), reply=body.reply or None,
        expected=FeedbackState(body.expected_state) if body.expected_state else None,
    )
    return envelope(serialize_item(item, staff_view=True))
