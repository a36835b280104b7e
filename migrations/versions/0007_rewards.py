"""Rewards: distributors' own-purchase discount recorded on orders and their items; invite codes at their set price.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 20:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('discount_bp', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('discount_fen', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.create_check_constraint(op.f('ck_orders_discount_range'), 'discount_bp >= 0 AND discount_bp <= 5000')
        batch_op.create_check_constraint(op.f('ck_orders_discount_nonneg'), 'discount_fen >= 0')
    with op.batch_alter_table('order_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('list_price_fen', sa.BigInteger(), nullable=True))
    # Items ordered before discounts were applied were paid at the catalog price.
    op.execute('UPDATE order_items SET list_price_fen = price_fen')
    with op.batch_alter_table('order_items', schema=None) as batch_op:
        batch_op.alter_column('list_price_fen', existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_check_constraint(op.f('ck_order_items_discount_not_markup'), 'list_price_fen >= price_fen')
    # Invite codes now cost exactly the invite_code_points setting, new in this release (default 100 points).
    op.execute("UPDATE redemption_items SET price = 10000 WHERE kind = 'invite_code'")


def downgrade() -> None:
    with op.batch_alter_table('order_items', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_order_items_discount_not_markup'), type_='check')
        batch_op.drop_column('list_price_fen')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_orders_discount_nonneg'), type_='check')
        batch_op.drop_constraint(op.f('ck_orders_discount_range'), type_='check')
        batch_op.drop_column('discount_fen')
        batch_op.drop_column('discount_bp')
