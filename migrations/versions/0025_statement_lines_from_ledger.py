"""A settlement statement no longer stores its lines: they are read from the ledger (the matured entries its
settle posting took, ``points.queries.statement_lines``), so the column goes. Every statement, old or new,
reads its lines the same way.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-03 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('point_statements', schema=None) as batch_op:
        batch_op.drop_column('lines')


def downgrade() -> None:
    # The stored lines are not rebuilt: code of the revision before reads an empty list for each statement.
    with op.batch_alter_table('point_statements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lines', sa.JSON(), nullable=True))
    # "lines" is a reserved word on MariaDB: the table construct quotes it.
    statements = sa.table('point_statements', sa.column('lines', sa.JSON()))
    op.execute(statements.update().values(lines=[]))
    with op.batch_alter_table('point_statements', schema=None) as batch_op:
        batch_op.alter_column('lines', existing_type=sa.JSON(), nullable=False)
