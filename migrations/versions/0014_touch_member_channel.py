"""The touch events' (member, time) index also holds the channel, so the report rollups' first- and
last-touch lookups read the index alone.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 02:30:00
"""
from __future__ import annotations

from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The new index first: the member_id foreign key always has an index to use.
    with op.batch_alter_table('touch_events', schema=None) as batch_op:
        batch_op.create_index('ix_touch_events_member_time_channel', ['member_id', 'created_at', 'channel'], unique=False)
    with op.batch_alter_table('touch_events', schema=None) as batch_op:
        batch_op.drop_index('ix_touch_events_member_time')


def downgrade() -> None:
    with op.batch_alter_table('touch_events', schema=None) as batch_op:
        batch_op.create_index('ix_touch_events_member_time', ['member_id', 'created_at'], unique=False)
    with op.batch_alter_table('touch_events', schema=None) as batch_op:
        batch_op.drop_index('ix_touch_events_member_time_channel')
