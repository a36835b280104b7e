"""Export jobs: console lists too long to stream at once, written in the background to EXPORT_DIR.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 01:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('export_jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('staff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('list_name', sa.String(length=32), nullable=False),
    sa.Column('filters', sa.JSON(), nullable=False),
    sa.Column('format', sa.String(length=8), nullable=False),
    sa.Column('state', sa.Enum('queued', 'running', 'done', 'failed', name='export_state', native_enum=False, length=16), nullable=False),
    sa.Column('rows_done', sa.Integer(), nullable=False),
    sa.Column('rows_total', sa.Integer(), nullable=False),
    sa.Column('file_name', sa.String(length=128), nullable=True),
    sa.Column('error', sa.String(length=255), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('finished_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('expires_at', server.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_export_jobs_staff_id_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_export_jobs'))
    )
    with op.batch_alter_table('export_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_export_jobs_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index('ix_export_jobs_staff', ['staff_id', 'id'], unique=False)
        batch_op.create_index('ix_export_jobs_state', ['state', 'updated_at'], unique=False)


def downgrade() -> None:
    # A dropped table takes its indexes with it; MariaDB refuses to drop an index alone while a foreign key needs it.
    op.drop_table('export_jobs')
