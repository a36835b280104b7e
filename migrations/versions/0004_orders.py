"""Catalog, orders, order events, refunds, payment notices and installments.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 21:45:24.146937
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('payment_notices',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('reference', sa.String(length=64), nullable=False),
    sa.Column('out_trade_no', sa.String(length=32), nullable=False),
    sa.Column('out_refund_no', sa.String(length=64), nullable=True),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('api', sa.String(length=4), nullable=False),
    sa.Column('applied', sa.Boolean(), nullable=False),
    sa.Column('received_at', server.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_notices')),
    sa.UniqueConstraint('kind', 'reference', name='kind_reference')
    )
    with op.batch_alter_table('payment_notices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payment_notices_out_trade_no'), ['out_trade_no'], unique=False)

    op.create_table('products',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('title', sa.String(length=128), nullable=False),
    sa.Column('subtitle', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('cover_url', sa.String(length=512), nullable=False),
    sa.Column('status', sa.Enum('on_sale', 'off_sale', name='product_status', native_enum=False, length=16), nullable=False),
    sa.Column('presale', sa.Boolean(), nullable=False),
    sa.Column('ship_date', server.db.UTCDateTime(), nullable=True),
    sa.Column('sort', sa.Integer(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_products'))
    )
    op.create_table('skus',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('product_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('price_fen', sa.BigInteger(), nullable=False),
    sa.Column('stock', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.CheckConstraint('price_fen > 0', name=op.f('ck_skus_price_positive')),
    sa.CheckConstraint('stock >= 0', name=op.f('ck_skus_stock_nonneg')),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_skus_product_id_products')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_skus'))
    )
    with op.batch_alter_table('skus', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_skus_product_id'), ['product_id'], unique=False)

    op.create_table('orders',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('out_trade_no', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.Enum('online', 'contract', name='order_kind', native_enum=False, length=16), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.Enum('created', 'paid', 'shipped', 'received', 'completed', 'closed', 'refunding', 'refunded', name='order_status', native_enum=False, length=16), nullable=False),
    sa.Column('status_before_refund', sa.Enum('created', 'paid', 'shipped', 'received', 'completed', 'closed', 'refunding', 'refunded', name='order_status', native_enum=False, length=16), nullable=True),
    sa.Column('total_fee', sa.BigInteger(), nullable=False),
    sa.Column('paid_fee', sa.BigInteger(), nullable=False),
    sa.Column('refunded_fee', sa.BigInteger(), nullable=False),
    sa.Column('inviter_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('upline_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('scene_code', sa.String(length=32), nullable=True),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('repeat_business', sa.Boolean(), nullable=False),
    sa.Column('parent_order_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('lead_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('title', sa.String(length=128), nullable=False),
    sa.Column('address', sa.JSON(), nullable=True),
    sa.Column('remark', sa.String(length=255), nullable=False),
    sa.Column('pay_api', sa.String(length=4), nullable=True),
    sa.Column('prepay_id', sa.String(length=64), nullable=True),
    sa.Column('transaction_id', sa.String(length=64), nullable=True),
    sa.Column('carrier', sa.String(length=32), nullable=False),
    sa.Column('tracking_no', sa.String(length=64), nullable=False),
    sa.Column('finance_confirmed_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('finance_confirmed_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('paid_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('shipped_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('received_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('completed_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('closed_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('paid_fee >= 0 AND paid_fee <= total_fee', name=op.f('ck_orders_paid_range')),
    sa.CheckConstraint('refunded_fee >= 0 AND refunded_fee <= paid_fee', name=op.f('ck_orders_refunded_range')),
    sa.CheckConstraint('total_fee > 0', name=op.f('ck_orders_total_positive')),
    sa.CheckConstraint('upline_id IS NULL OR inviter_id IS NOT NULL', name=op.f('ck_orders_upline_needs_inviter')),
    sa.ForeignKeyConstraint(['finance_confirmed_by'], ['staff.id'], name=op.f('fk_orders_finance_confirmed_by_staff')),
    sa.ForeignKeyConstraint(['inviter_id'], ['members.id'], name=op.f('fk_orders_inviter_id_members')),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_orders_lead_id_leads')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_orders_member_id_members')),
    sa.ForeignKeyConstraint(['parent_order_id'], ['orders.id'], name=op.f('fk_orders_parent_order_id_orders')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_orders_partner_id_partners')),
    sa.ForeignKeyConstraint(['upline_id'], ['members.id'], name=op.f('fk_orders_upline_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('out_trade_no', name=op.f('uq_orders_out_trade_no')),
    sa.UniqueConstraint('transaction_id', name=op.f('uq_orders_transaction_id'))
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_orders_inviter_id'), ['inviter_id'], unique=False)
        batch_op.create_index('ix_orders_member_created', ['member_id', 'created_at'], unique=False)
        batch_op.create_index('ix_orders_status_expires', ['status', 'expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_orders_upline_id'), ['upline_id'], unique=False)

    op.create_table('installments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('order_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('due_date', server.db.UTCDateTime(), nullable=True),
    sa.Column('received_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('recorded_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('note', sa.String(length=255), nullable=False),
    sa.CheckConstraint('amount_fen > 0', name=op.f('ck_installments_amount_positive')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_installments_order_id_orders')),
    sa.ForeignKeyConstraint(['recorded_by'], ['staff.id'], name=op.f('fk_installments_recorded_by_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_installments')),
    sa.UniqueConstraint('order_id', 'seq', name='order_seq')
    )
    op.create_table('order_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('order_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_events_order_id_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_events'))
    )
    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.create_index('ix_order_events_order', ['order_id', 'id'], unique=False)

    op.create_table('order_items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('order_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('product_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sku_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('title', sa.String(length=128), nullable=False),
    sa.Column('sku_name', sa.String(length=64), nullable=False),
    sa.Column('price_fen', sa.BigInteger(), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.CheckConstraint('price_fen > 0', name=op.f('ck_order_items_price_positive')),
    sa.CheckConstraint('quantity > 0', name=op.f('ck_order_items_quantity_positive')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_items_order_id_orders')),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_order_items_product_id_products')),
    sa.ForeignKeyConstraint(['sku_id'], ['skus.id'], name=op.f('fk_order_items_sku_id_skus')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_items'))
    )
    with op.batch_alter_table('order_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_items_order_id'), ['order_id'], unique=False)

    op.create_table('refunds',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('order_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('out_refund_no', sa.String(length=64), nullable=False),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('status', sa.Enum('requested', 'approved', 'processing', 'succeeded', 'rejected', 'failed', name='refund_status', native_enum=False, length=16), nullable=False),
    sa.Column('refund_id', sa.String(length=64), nullable=True),
    sa.Column('requested_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('finished_at', server.db.UTCDateTime(), nullable=True),
    sa.CheckConstraint('amount_fen > 0', name=op.f('ck_refunds_amount_positive')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_refunds_order_id_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refunds')),
    sa.UniqueConstraint('out_refund_no', name=op.f('uq_refunds_out_refund_no'))
    )
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refunds_order_id'), ['order_id'], unique=False)



def downgrade() -> None:
    # A dropped table takes its indexes with it; MariaDB refuses to drop an index alone while a foreign key needs it.
    op.drop_table('refunds')
    op.drop_table('order_items')
    op.drop_table('order_events')
    op.drop_table('installments')
    op.drop_table('orders')
    op.drop_table('skus')
    op.drop_table('products')
    op.drop_table('payment_notices')
