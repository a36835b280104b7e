"""Working the lead pool: assigning a lead, following it up with notes, revealing its phone, linking it to a member.

The follow-up state moves along one table (``FOLLOW_UP_TRANSITIONS``), as an order's status does;
every change is a note with its author and time, and every write is audited here, in the service.
A lead's phone number is stored encrypted and shown masked; the full number comes out only through
``reveal_lead_phone``, which audits each reveal and never writes the number anywhere.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server import security
from server.accounts.models import Member, MemberStatus, Staff, StaffRole
from server.accounts.services import record_audit
from server.db import utcnow
from server.errors import NotFoundError, ValidationError
from server.referral.errors import IllegalFollowUpError, LeadAlreadyLinkedError, LeadPhoneMissingError
from server.referral.models import Lead, LeadFollowUp, LeadNote, LeadStatus, TouchEvent, TouchKind

F = LeadFollowUp
#: The follow-up moves a staff member may make: contacted once reached, then converted (a deal) or lost;
#: a lost lead that calls back is contacted again; a converted lead is done.
FOLLOW_UP_TRANSITIONS: dict[LeadFollowUp, frozenset[LeadFollowUp]] = {
    F.new: frozenset({F.contacted, F.lost}),
    F.contacted: frozenset({F.converted, F.lost}),
    F.lost: frozenset({F.contacted}),
    F.converted: frozenset(),
}
#: Who works the lead pool, and so who may be assigned a lead (the admin API's lead routes admit the same roles).
LEAD_ROLES = (StaffRole.owner, StaffRole.operations)
#: The longest note kept, in characters.
NOTE_LIMIT = 1000


def _errors(field: str, error: str, **extra: str) -> dict[str, Any]:
    return {"errors": [{"field": field, "error": error, **extra}]}


def get_lead(sess: Session, lead_id: int, *, lock: bool = False) -> Lead:
    """The lead with this id (locked for the unit of work with ``lock``); NotFoundError if there is none."""
    lead = sess.get(Lead, lead_id, with_for_update=lock)
    if lead is None:
        raise NotFoundError("no such lead")
    return lead


def assign_lead(sess: Session, lead_id: int, assignee_id: int | None, *, staff_id: int) -> Lead:
    """Give the lead to an active owner or operations account to follow up (None: to nobody). Audited as
    ``staff_id``'s ``lead.assign``; assigning it to whoever already has it changes nothing."""
    lead = get_lead(sess, lead_id, lock=True)
    if assignee_id is not None:
        assignee = sess.get(Staff, assignee_id)
        if assignee is None or not assignee.active or assignee.role not in LEAD_ROLES:
            raise ValidationError(data=_errors("assignee_id", "no active owner or operations account has this id"))
    if lead.assignee_id == assignee_id:
        return lead
    previous, lead.assignee_id = lead.assignee_id, assignee_id
    sess.flush()
    record_audit(sess, staff_id, "lead.assign", f"lead:{lead.id}", {"from": previous, "to": assignee_id})
    return lead


def follow_up_lead(sess: Session, lead_id: int, note: str, *, staff_id: int, state: LeadFollowUp | None = None) -> LeadNote:
    """Add a follow-up note, moving the lead to ``state`` if given and different (along ``FOLLOW_UP_TRANSITIONS``).

    An invalid lead can be followed up but not converted. Audited as ``staff_id``'s ``lead.follow_up``.
    """
    body = note.strip()
    if not body or len(body) > NOTE_LIMIT:
        raise ValidationError(data=_errors("note", f"write what happened (1 to {NOTE_LIMIT} characters)"))
    lead = get_lead(sess, lead_id, lock=True)
    current = lead.follow_up
    moved = state is not None and state != current
    if state is not None and moved:
        if state not in FOLLOW_UP_TRANSITIONS[current] or (state == F.converted and lead.status == LeadStatus.invalid):
            raise IllegalFollowUpError(
                f"a {current.value} lead cannot become {state.value}", data={"from": current.value, "to": state.value, "status": lead.status.value}
            )
        lead.follow_up, lead.follow_up_at = state, utcnow()
    row = LeadNote(lead_id=lead.id, staff_id=staff_id, follow_up=state if moved else None, body=body)
    sess.add(row)
    sess.flush()
    record_audit(
        sess, staff_id, "lead.follow_up", f"lead:{lead.id}", {"note_id": row.id, "from": current.value, "to": lead.follow_up.value}
    )
    return row


def lead_notes(sess: Session, lead_id: int) -> list[LeadNote]:
    """The lead's notes, newest first."""
    return list(sess.scalars(select(LeadNote).where(LeadNote.lead_id == lead_id).order_by(LeadNote.created_at.desc(), LeadNote.id.desc())))


def reveal_lead_phone(sess: Session, lead_id: int, *, staff_id: int) -> str:
    """The lead's full phone number, for a staff member allowed to call it; each reveal is audited as
    ``lead.reveal_phone`` (without the number, which is written nowhere)."""
    lead = get_lead(sess, lead_id)
    if not lead.contact_phone_ciphertext:
        raise LeadPhoneMissingError()
    phone = security.decrypt(lead.contact_phone_ciphertext, "phone")
    record_audit(sess, staff_id, "lead.reveal_phone", f"lead:{lead.id}")
    sess.flush()
    return phone


def link_lead_member(sess: Session, lead_id: int, member_id: int, *, staff_id: int) -> Lead:
    """An anonymous lead (left on an H5 page) belongs to a member who signed in later: link it, once.

    The member must exist, be active and not be the lead's own sharer (nobody is their own lead). The
    sharer and partner stay as the lead was attributed. The lead joins the member's timeline; audited
    as ``staff_id``'s ``lead.link_member``.
    """
    lead = get_lead(sess, lead_id, lock=True)
    if lead.member_id is not None:
        raise LeadAlreadyLinkedError(data={"member_id": lead.member_id})
    member = sess.get(Member, member_id)
    if member is None:
        raise ValidationError(data=_errors("member_id", "no such member"))
    if member.status != MemberStatus.active:
        raise ValidationError(data=_errors("member_id", "the member is disabled", reason="disabled"))
    if lead.sharer_id == member.id:
        raise ValidationError(data=_errors("member_id", "the member shared the link that brought this lead", reason="self"))
    lead.member_id = member.id
    sess.add(
        TouchEvent(
            member_id=member.id,
            kind=TouchKind.lead,
            scene=lead.scene_code,
            channel=lead.channel,
            actor=f"staff:{staff_id}",
            content=lead.content,
            detail={"lead_id": lead.id, "source": lead.source.value, "linked": True},
        )
    )
    sess.flush()
    record_audit(sess, staff_id, "lead.link_member", f"lead:{lead.id}", {"member_id": member.id})
    return lead
