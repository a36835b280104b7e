"""Console points pages: the ledger searched by kind and by date, and redemptions listed by status.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 22:40:00
"""
from __future__ import annotations

from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ledger_transactions', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_transactions_kind', ['kind', 'id'], unique=False)
        batch_op.create_index('ix_ledger_transactions_created', ['created_at'], unique=False)
    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.create_index('ix_redemptions_status', ['status', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.drop_index('ix_redemptions_status')
    with op.batch_alter_table('ledger_transactions', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_transactions_created')
        batch_op.drop_index('ix_ledger_transactions_kind')
