"""Orders by status, newest first: the console's order list filtered by status reads 20 rows of an index
instead of walking the table back from the newest order.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 03:00:00
"""
from __future__ import annotations

from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_status_id', ['status', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_status_id')
