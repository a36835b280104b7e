"""The durable job queue: follow-up work written with the change that needs it (server/jobs); the merchant's
ledger accounts stop caching a balance (their entries are their balance), so no posting locks their rows.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02 07:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'jobs',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('ref', sa.String(length=64), nullable=False),
        sa.Column('pending_key', sa.String(length=100), nullable=True),
        sa.Column('state', sa.Enum('queued', 'running', 'failed', name='job_state', native_enum=False, length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('run_after', sa.DateTime(), nullable=False),
        sa.Column('claimed_by', sa.String(length=64), nullable=True),
        sa.Column('last_error', sa.String(length=500), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
        sa.UniqueConstraint('pending_key', name=op.f('uq_jobs_pending_key')),
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_state_run_after', ['state', 'run_after'], unique=False)
    op.execute("UPDATE ledger_accounts SET balance = 0 WHERE member_id IS NULL")


def downgrade() -> None:
    # The cached balance the merchant's accounts had before: the sum of their entries.
    op.execute(
        "UPDATE ledger_accounts SET balance = "
        "(SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e WHERE e.account_id = ledger_accounts.id) "
        "WHERE member_id IS NULL"
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_state_run_after')
    op.drop_table('jobs')
