"""The ledger entries' account and transaction indexes carry the amount: (account_id, id, amount) and
(transaction_id, amount) replace (account_id, id) and (transaction_id), so ledger-check's sums per
account and per transaction, and settlement's statement lines, read the index alone.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02 07:40:00
"""
from __future__ import annotations

from alembic import op


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The new indexes first: on MariaDB the foreign key of transaction_id needs an index that starts
    # with its column at every moment, so the old one goes only once the new one serves it.
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_entries_account_amount', ['account_id', 'id', 'amount'], unique=False)
        batch_op.create_index('ix_ledger_entries_transaction_amount', ['transaction_id', 'amount'], unique=False)
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_entries_account')
        batch_op.drop_index('ix_ledger_entries_transaction_id')


def downgrade() -> None:
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_entries_account', ['account_id', 'id'], unique=False)
        batch_op.create_index('ix_ledger_entries_transaction_id', ['transaction_id'], unique=False)
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_entries_account_amount')
        batch_op.drop_index('ix_ledger_entries_transaction_amount')
