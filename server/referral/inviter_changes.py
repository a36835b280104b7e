"""The owner changing or clearing a member's inviter by hand, with a reason.

The same guards as a scan: never oneself, never one's own downline (a cycle), never a disabled
member or a frozen or disabled distributor. Orders keep the inviter and upline stamped on them
when they were placed, so rewards already earned stay where they are; only later orders follow
the new chain. Every change is on the member's timeline and in the audit log.
"""
from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from server.accounts.models import Member
from server.accounts.services import record_audit
from server.db import utcnow
from server.distribution.queries import sharer_refusal
from server.errors import NotFoundError, ValidationError
from server.referral.models import Binding, TouchEvent, TouchKind
from server.referral.queries import inviter_and_upline
from server.referral.services import forget_team_sizes, is_ancestor
from server.settings.services import lock_named

#: Longest reason kept with a change (the audit detail and the timeline show it).
MAX_REASON_LENGTH = 255

#: Why a change is refused, as the console says it.
REFUSALS = {
    "self": "a member cannot be their own inviter",
    "cycle": "the new inviter is in this member's own downline",
    "sharer_disabled": "the new inviter's account or distributorship is disabled",
    "sharer_frozen": "the new inviter is a frozen distributor",
    "unchanged": "this is already the member's inviter",
    "not_bound": "the member has no inviter to clear",
}


def _refuse(reason: str) -> ValidationError:
    message = REFUSALS.get(reason, reason)
    return ValidationError(message, data={"errors": [{"field": "inviter_id", "error": message, "reason": reason}]})


def change_inviter(sess: Session, member_id: int, inviter_id: int | None, *, reason: str, staff_id: int) -> Binding | None:
    """Make ``inviter_id`` the member's inviter (None clears it); returns the binding (None when cleared)."""
    reason = reason.strip()
    if not reason:
        raise ValidationError(data={"errors": [{"field": "reason", "error": "a reason is required"}]})
    if len(reason) > MAX_REASON_LENGTH:
        raise ValidationError(data={"errors": [{"field": "reason", "error": f"at most {MAX_REASON_LENGTH} characters"}]})
    member = sess.get(Member, member_id)
    if member is None:
        raise NotFoundError("no such member")
    inviter = None
    if inviter_id is not None:
        inviter = sess.get(Member, inviter_id)
        if inviter is None:
            raise ValidationError(data={"errors": [{"field": "inviter_id", "error": "no such member"}]})

    # Changes to the chain go one at a time, like binds, or two could close a cycle together.
    lock_named(sess, "referral-chain")
    binding = sess.get(Binding, member.id, populate_existing=True)
    previous_inviter, previous_upline = inviter_and_upline(sess, member.id)
    # The member leaves a team (and joins another, below): with their own invitees at level 2.
    forget_team_sizes([previous_inviter, previous_upline])
    if inviter is None:
        if binding is None:
            raise _refuse("not_bound")
        sess.delete(binding)
        sess.flush()
        # The member's own invitees lose their level 2.
        sess.execute(update(Binding).where(Binding.inviter_id == member.id).values(upline_id=None))
        result = None
    else:
        if inviter.id == member.id:
            raise _refuse("self")
        if previous_inviter == inviter.id:
            raise _refuse("unchanged")
        refusal = sharer_refusal(sess, inviter.id)
        if refusal is not None:
            raise _refuse(refusal)
        if is_ancestor(sess, member.id, inviter.id):
            raise _refuse("cycle")
        upline_id, _ = inviter_and_upline(sess, inviter.id)
        forget_team_sizes([inviter.id, upline_id])
        if binding is None:
            binding = Binding(member_id=member.id, inviter_id=inviter.id, upline_id=upline_id, channel="console")
            sess.add(binding)
        else:
            binding.inviter_id, binding.upline_id = inviter.id, upline_id
            binding.bound_at = utcnow()
            binding.rebind_count += 1
            binding.scene_code, binding.channel = None, "console"
        sess.flush()
        sess.execute(update(Binding).where(Binding.inviter_id == member.id).values(upline_id=inviter.id))
        result = binding
    detail = {"old_inviter_id": previous_inviter, "old_upline_id": previous_upline, "new_inviter_id": inviter_id, "reason": reason}
    sess.add(
        TouchEvent(member_id=member.id, kind=TouchKind.bind, channel="console", actor=f"staff:{staff_id}", detail={**detail, "by_staff": True})
    )
    record_audit(sess, staff_id, "member.inviter_clear" if inviter is None else "member.inviter_change", f"member:{member.id}", detail)
    sess.flush()
    return result
