"""Report rollups: daily tables per China-time day and dimension (and monthly sums of the largest) that the reports sum, kept by the scheduler
and rebuilt with ``reports-rebuild``; indexes that find the days late payments, refunds and lead reviews change.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 01:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('report_daily',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('new_members', sa.Integer(), nullable=False),
    sa.Column('bindings', sa.Integer(), nullable=False),
    sa.Column('leads', sa.Integer(), nullable=False),
    sa.Column('valid_leads', sa.Integer(), nullable=False),
    sa.Column('orders_created', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', name=op.f('pk_report_daily'))
    )
    op.create_table('report_funnel_channel_daily',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('view', sa.String(length=8), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('visits', sa.Integer(), nullable=False),
    sa.Column('sign_ins', sa.Integer(), nullable=False),
    sa.Column('bindings', sa.Integer(), nullable=False),
    sa.Column('leads', sa.Integer(), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('paid', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'view', 'channel', name=op.f('pk_report_funnel_channel_daily'))
    )
    op.create_table('report_funnel_daily',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('view', sa.String(length=8), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('content', sa.String(length=96), nullable=False),
    sa.Column('visits', sa.Integer(), nullable=False),
    sa.Column('sign_ins', sa.Integer(), nullable=False),
    sa.Column('bindings', sa.Integer(), nullable=False),
    sa.Column('leads', sa.Integer(), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('paid', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'view', 'channel', 'content', name=op.f('pk_report_funnel_daily'))
    )
    op.create_table('report_funnel_monthly',
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('view', sa.String(length=8), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('content', sa.String(length=96), nullable=False),
    sa.Column('visits', sa.Integer(), nullable=False),
    sa.Column('sign_ins', sa.Integer(), nullable=False),
    sa.Column('bindings', sa.Integer(), nullable=False),
    sa.Column('leads', sa.Integer(), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('paid', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('month', 'view', 'channel', 'content', name=op.f('pk_report_funnel_monthly'))
    )
    op.create_table('report_ledger_daily',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('account_kind', sa.String(length=16), nullable=False),
    sa.Column('tx_kind', sa.String(length=16), nullable=False),
    sa.Column('credits', sa.BigInteger(), nullable=False),
    sa.Column('debits', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'account_kind', 'tx_kind', name=op.f('pk_report_ledger_daily'))
    )
    op.create_table('report_member_daily',
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('sales_fen', sa.BigInteger(), nullable=False),
    sa.Column('leads', sa.Integer(), nullable=False),
    sa.Column('valid_leads', sa.Integer(), nullable=False),
    sa.Column('points_earned', sa.BigInteger(), nullable=False),
    sa.Column('points_redeemed', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('member_id', 'day', name=op.f('pk_report_member_daily'))
    )
    with op.batch_alter_table('report_member_daily', schema=None) as batch_op:
        batch_op.create_index('ix_report_member_daily_day', ['day'], unique=False)

    op.create_table('report_member_monthly',
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('sales_fen', sa.BigInteger(), nullable=False),
    sa.Column('leads', sa.Integer(), nullable=False),
    sa.Column('valid_leads', sa.Integer(), nullable=False),
    sa.Column('points_earned', sa.BigInteger(), nullable=False),
    sa.Column('points_redeemed', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('member_id', 'month', name=op.f('pk_report_member_monthly'))
    )
    with op.batch_alter_table('report_member_monthly', schema=None) as batch_op:
        batch_op.create_index('ix_report_member_monthly_month', ['month'], unique=False)

    op.create_table('report_orders_daily',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('repeat_business', sa.Boolean(), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('paid_fen', sa.BigInteger(), nullable=False),
    sa.Column('refunded_fen', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'kind', 'repeat_business', name=op.f('pk_report_orders_daily'))
    )
    op.create_table('report_product_daily',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('sku_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('product_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('units', sa.BigInteger(), nullable=False),
    sa.Column('gross_fen', sa.BigInteger(), nullable=False),
    sa.Column('refunded_fen', sa.BigInteger(), nullable=False),
    sa.Column('referral_gross_fen', sa.BigInteger(), nullable=False),
    sa.Column('referral_refunded_fen', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'sku_id', name=op.f('pk_report_product_daily'))
    )
    op.create_table('report_region_daily',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('province', sa.String(length=64), nullable=False),
    sa.Column('city', sa.String(length=64), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('paid_fen', sa.BigInteger(), nullable=False),
    sa.Column('refunded_fen', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'province', 'city', name=op.f('pk_report_region_daily'))
    )
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.create_index('ix_leads_reviewed', ['reviewed_at'], unique=False)

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_updated', ['updated_at'], unique=False)



def downgrade() -> None:
    # A dropped table takes its indexes with it; MariaDB refuses to drop an index alone while a foreign key needs it.
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_updated')

    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_index('ix_leads_reviewed')

    op.drop_table('report_region_daily')
    op.drop_table('report_product_daily')
    op.drop_table('report_orders_daily')
    op.drop_table('report_member_monthly')
    op.drop_table('report_member_daily')
    op.drop_table('report_ledger_daily')
    op.drop_table('report_funnel_monthly')
    op.drop_table('report_funnel_daily')
    op.drop_table('report_funnel_channel_daily')
    op.drop_table('report_daily')
