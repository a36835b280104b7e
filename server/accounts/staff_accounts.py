"""Staff members managing their own password, and the owner managing roles.

Services take a session and plain arguments, ``flush()`` and never commit.
"""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from server.accounts.errors import BadCredentialsError, RoleRequiredError
from server.accounts.models import Staff, StaffRole, SubjectType
from server.accounts.services import MIN_PASSWORD_LENGTH, record_audit, revoke_all_tokens
from server.errors import ValidationError


def change_password(sess: Session, staff: Staff, *, old_password: str, new_password: str) -> int:
    """Replace the staff member's password after checking the old one; every token they hold is revoked
    (the caller signs the current session in again). Returns how many tokens were revoked."""
    if not check_password_hash(staff.password_hash, old_password):
        raise BadCredentialsError("the current password is wrong")
    errors = []
    if len(new_password) < MIN_PASSWORD_LENGTH:
        errors.append({"field": "new_password", "error": f"at least {MIN_PASSWORD_LENGTH} characters"})
    elif len(new_password) > 256:
        errors.append({"field": "new_password", "error": "at most 256 characters"})
    elif new_password == old_password:
        errors.append({"field": "new_password", "error": "must differ from the current password"})
    if errors:
        raise ValidationError(data={"errors": errors})
    staff.password_hash = generate_password_hash(new_password)
    revoked = revoke_all_tokens(sess, SubjectType.staff, staff.id)
    record_audit(sess, staff.id, "staff.password_change", f"staff:{staff.id}")
    sess.flush()
    return revoked


def set_staff_role(sess: Session, staff: Staff, role: StaffRole, *, by: Staff) -> Staff:
    """Give a staff account another role; the last active owner keeps theirs, so the shop always has one."""
    if staff.role == role:
        return staff
    if staff.role == StaffRole.owner:
        owners = sess.scalar(select(func.count()).select_from(Staff).where(Staff.role == StaffRole.owner, Staff.active.is_(True)))
        if staff.id == by.id or (owners or 0) <= 1:
            raise RoleRequiredError("the shop needs an active owner: another owner must change this role")
    previous = staff.role
    staff.role = role
    # Tokens carry no role, so the new role applies to the next request; nothing to revoke.
    record_audit(sess, by.id, "staff.role", f"staff:{staff.id}", {"old": previous.value, "new": role.value})
    sess.flush()
    return staff
