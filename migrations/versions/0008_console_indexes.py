"""Indexes the console's dashboard and queues read by on a large merchant.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:30:00
"""
from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

INDEXES = (
    ('ix_members_created', 'members', ['created_at']),
    ('ix_orders_created', 'orders', ['created_at']),
    ('ix_orders_paid', 'orders', ['paid_at', 'paid_fee']),
    ('ix_orders_kind_status', 'orders', ['kind', 'status']),
    ('ix_leads_created', 'leads', ['created_at']),
    ('ix_touch_events_kind_time', 'touch_events', ['kind', 'created_at']),
    ('ix_ledger_entries_account_time', 'ledger_entries', ['account_id', 'created_at']),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
