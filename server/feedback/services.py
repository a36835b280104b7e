"""Feedback and reports: members send them; staff move them through new → in_progress → resolved /
dismissed, with an assignee, internal notes and a reply the member sees.

Every move is a conditional update on the state the move starts from, so two staff members acting on
the same item at once cannot both move it: one wins, the other is told the item moved on.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from server.accounts.models import Member, Staff
from server.accounts.services import record_audit
from server.cache import enforce_rate_limit
from server.db import paginate, rowcount, utcnow
from server.distribution.models import Distributor
from server.errors import ValidationError
from server.feedback.errors import FeedbackNotFoundError, IllegalFeedbackTransitionError
from server.feedback.models import FeedbackCategory, FeedbackItem, FeedbackKind, FeedbackNote, FeedbackState
from server.referral.models import Scene

Category, Kind, State = FeedbackCategory, FeedbackKind, FeedbackState

#: The categories each kind takes.
CATEGORIES: dict[FeedbackKind, tuple[FeedbackCategory, ...]] = {
    Kind.feedback: (Category.suggestion, Category.product, Category.service, Category.other),
    Kind.report: (Category.false_advertising, Category.harassment, Category.other),
}
#: The staff's moves: action → (the states it starts from, the state it leads to). Nothing leaves resolved or dismissed.
TRANSITIONS: dict[str, tuple[tuple[FeedbackState, ...], FeedbackState]] = {
    "start": ((State.new,), State.in_progress),
    "resolve": ((State.in_progress,), State.resolved),
    "dismiss": ((State.new, State.in_progress), State.dismissed),
}
CLOSED = (State.resolved, State.dismissed)
#: Newest first.
ITEM_ORDER = (FeedbackItem.id.desc(),)


def _invalid(field: str, error: str) -> ValidationError:
    return ValidationError(data={"errors": [{"field": field, "error": error}]})


def _reported_member(sess: Session, distributor_member_id: int | None, scene: str | None) -> tuple[int, str]:
    """The distributor a report names, by their member id or a scene code of theirs the member saw."""
    if distributor_member_id is not None and scene:
        raise _invalid("scene", "name the distributor by member id or by scene code, not both")
    if scene:
        found = sess.get(Scene, scene)
        if found is None or found.sharer_id is None:
            raise _invalid("scene", "no distributor shares with this code")
        member_id, code = found.sharer_id, scene
    elif distributor_member_id is not None:
        member_id, code = distributor_member_id, ""
    else:
        raise _invalid("distributor_member_id", "a report names the distributor (distributor_member_id or scene)")
    if sess.scalar(select(Distributor.id).where(Distributor.member_id == member_id)) is None:
        raise _invalid("scene" if code else "distributor_member_id", "this member is not a distributor")
    return member_id, code


#: The window of the per-member limit on feedback, in seconds.
RATE_WINDOW = 3600


def limit_rate(member_id: int, limit: int) -> None:
    """Count one submission of the member's; RateLimitedError past ``limit`` in RATE_WINDOW (Redis, or this process without it)."""
    enforce_rate_limit(f"feedback:member:{member_id}", limit, RATE_WINDOW)


def submit(
    sess: Session,
    member: Member,
    *,
    kind: FeedbackKind,
    category: FeedbackCategory,
    body: str,
    contact: str = "",
    distributor_member_id: int | None = None,
    scene: str | None = None,
) -> FeedbackItem:
    """A member sends feedback, or reports a distributor (named by member id or scene code)."""
    if category not in CATEGORIES[kind]:
        raise _invalid("category", f"a {kind.value} is one of: " + ", ".join(c.value for c in CATEGORIES[kind]))
    reported_id, code = None, ""
    if kind == Kind.report:
        reported_id, code = _reported_member(sess, distributor_member_id, scene)
        if reported_id == member.id:
            raise _invalid("distributor_member_id", "you cannot report yourself")
    elif distributor_member_id is not None or scene:
        raise _invalid("distributor_member_id" if distributor_member_id is not None else "scene", "only a report names a distributor")
    item = FeedbackItem(
        member_id=member.id, kind=kind, category=category, body=body, contact=contact, reported_member_id=reported_id, scene_code=code
    )
    sess.add(item)
    sess.flush()
    return item


def member_items(sess: Session, member_id: int, *, offset: int, limit: int) -> tuple[list[FeedbackItem], int]:
    """The member's own items, newest first."""
    return paginate(sess, select(FeedbackItem).where(FeedbackItem.member_id == member_id), offset=offset, limit=limit, order_by=ITEM_ORDER)


def items_query(
    *,
    state: FeedbackState | None = None,
    kind: FeedbackKind | None = None,
    reported_member_id: int | None = None,
    assignee_id: int | None = None,
) -> Select[FeedbackItem]:
    """The staff's queue with its filters."""
    stmt = select(FeedbackItem)
    if state is not None:
        stmt = stmt.where(FeedbackItem.state == state)
    if kind is not None:
        stmt = stmt.where(FeedbackItem.kind == kind)
    if reported_member_id is not None:
        stmt = stmt.where(FeedbackItem.reported_member_id == reported_member_id)
    if assignee_id is not None:
        stmt = stmt.where(FeedbackItem.assignee_id == assignee_id)
    return stmt


def get_item(sess: Session, item_id: int) -> FeedbackItem:
    item = sess.get(FeedbackItem, item_id)
    if item is None:
        raise FeedbackNotFoundError()
    return item


def transition(
    sess: Session,
    item_id: int,
    action: str,
    *,
    staff: Staff,
    reply: str | None = None,
    expected: FeedbackState | None = None,
) -> FeedbackItem:
    """Move an item (start, resolve, dismiss), with an optional reply the member sees. Audited.

    ``expected`` is the state the staff member saw; without it, the state read now. The update only
    happens if the item is still in that state, so of two concurrent moves exactly one wins.
    """
    sources, target = TRANSITIONS[action]
    item = get_item(sess, item_id)
    current = expected or item.state
    if current not in sources:
        raise IllegalFeedbackTransitionError(
            f"cannot {action} feedback that is {item.state.value}", data={"state": item.state.value, "action": action}
        )
    now = utcnow()
    values: dict[str, Any] = {"state": target, "updated_at": now}
    if target in CLOSED:
        values["closed_at"] = now
    if action == "start" and item.assignee_id is None:
        values["assignee_id"] = staff.id
    if reply:
        values["reply"], values["replied_at"] = reply, now
    moved = rowcount(sess.execute(
        update(FeedbackItem).where(FeedbackItem.id == item.id, FeedbackItem.state == current).values(**values)
        .execution_options(synchronize_session=False)
    ))
    sess.refresh(item)
    if not moved:
        raise IllegalFeedbackTransitionError(
            f"the feedback is {item.state.value} now, someone moved it first", data={"state": item.state.value, "action": action}
        )
    record_audit(sess, staff.id, f"feedback.{action}", f"feedback:{item.id}", {"from": current.value, "to": target.value, "reply": bool(reply)})
    return item


def assign(sess: Session, item_id: int, assignee_id: int | None, *, staff: Staff) -> FeedbackItem:
    """Give an open item to an active staff member (or to nobody). Audited."""
    item = get_item(sess, item_id)
    if item.state in CLOSED:
        raise IllegalFeedbackTransitionError("a closed item keeps its assignee", data={"state": item.state.value, "action": "assign"})
    if assignee_id is not None:
        assignee = sess.get(Staff, assignee_id)
        if assignee is None or not assignee.active:
            raise _invalid("assignee_id", "no such active staff member")
    previous = item.assignee_id
    item.assignee_id = assignee_id
    sess.flush()
    record_audit(sess, staff.id, "feedback.assign", f"feedback:{item.id}", {"from": previous, "to": assignee_id})
    return item


def add_note(sess: Session, item_id: int, body: str, *, staff: Staff) -> FeedbackNote:
    """An internal note on an item, for staff only. Audited."""
    item = get_item(sess, item_id)
    note = FeedbackNote(item_id=item.id, staff_id=staff.id, body=body)
    sess.add(note)
    sess.flush()
    record_audit(sess, staff.id, "feedback.note", f"feedback:{item.id}", {"note_id": note.id})
    return note


def notes_of(sess: Session, item_id: int) -> list[tuple[FeedbackNote, Staff]]:
    rows = sess.execute(
        select(FeedbackNote, Staff).join(Staff, Staff.id == FeedbackNote.staff_id).where(FeedbackNote.item_id == item_id).order_by(FeedbackNote.id)
    )
    return [(note, staff) for note, staff in rows]


def reports_against(sess: Session, member_id: int, *, limit: int = 10) -> tuple[int, list[FeedbackItem]]:
    """How many reports name this distributor (by member id), and the newest of them."""
    total = sess.scalar(select(func.count()).select_from(FeedbackItem).where(FeedbackItem.reported_member_id == member_id)) or 0
    rows = sess.scalars(items_query(reported_member_id=member_id).order_by(*ITEM_ORDER).limit(limit)).all()
    return total, list(rows)
