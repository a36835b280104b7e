"""An order's postings are read from indexes alone: ledger_transactions (order_id, level, kind, member_id)
replaces (order_id), and ledger_entries (transaction_id, account_id, amount) replaces
(transaction_id, amount), so ledger-check sums each order's issuance postings per level without
reading a transaction row.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02 10:30:00
"""
from __future__ import annotations

from alembic import op


revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The new indexes first: on MariaDB the foreign keys of order_id and transaction_id need an index that
    # starts with their column at every moment, so the old ones go only once the new ones serve them.
    with op.batch_alter_table('ledger_transactions', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_transactions_order_level', ['order_id', 'level', 'kind', 'member_id'], unique=False)
    with op.batch_alter_table('ledger_transactions', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_transactions_order_id')
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_entries_transaction_account', ['transaction_id', 'account_id', 'amount'], unique=False)
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_entries_transaction_amount')


def downgrade() -> None:
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_entries_transaction_amount', ['transaction_id', 'amount'], unique=False)
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_entries_transaction_account')
    with op.batch_alter_table('ledger_transactions', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_transactions_order_id', ['order_id'], unique=False)
    with op.batch_alter_table('ledger_transactions', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_transactions_order_level')
