"""Read-side answers about the referral chain that other packages show: who invited a member.

Depends only on the models, so any package may read it without importing the referral services.
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from server.referral.models import Binding


def inviter_and_upline(sess: Session, member_id: int) -> tuple[int | None, int | None]:
    """The member's level-1 and level-2 inviters: one primary-key read."""
    binding = sess.get(Binding, member_id)
    return (binding.inviter_id, binding.upline_id) if binding else (None, None)
