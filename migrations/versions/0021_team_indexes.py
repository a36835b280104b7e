"""A member's team, newest binding first: (inviter, bound_at, member) and (upline, bound_at, member) replace
the single-column indexes, so a page of either level reads 20 index entries in order instead of sorting
every invitee.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02 04:10:00
"""
from __future__ import annotations

from alembic import op


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The new indexes first: on MariaDB the foreign keys of inviter_id and upline_id need an index that
    # starts with their column at every moment, so the old ones go only once the new ones serve them.
    with op.batch_alter_table('referral_bindings', schema=None) as batch_op:
        batch_op.create_index('ix_referral_bindings_inviter_team', ['inviter_id', 'bound_at', 'member_id'], unique=False)
        batch_op.create_index('ix_referral_bindings_upline_team', ['upline_id', 'bound_at', 'member_id'], unique=False)
    with op.batch_alter_table('referral_bindings', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_bindings_inviter_id')
        batch_op.drop_index('ix_referral_bindings_upline_id')


def downgrade() -> None:
    with op.batch_alter_table('referral_bindings', schema=None) as batch_op:
        batch_op.create_index('ix_referral_bindings_inviter_id', ['inviter_id'], unique=False)
        batch_op.create_index('ix_referral_bindings_upline_id', ['upline_id'], unique=False)
    with op.batch_alter_table('referral_bindings', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_bindings_inviter_team')
        batch_op.drop_index('ix_referral_bindings_upline_team')
