"""Points ledger, rewards, settlement, statements, job claims, redemption, invite codes, share opens, stage bonuses.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 21:49:37.323183
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_claims',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('job', sa.String(length=64), nullable=False),
    sa.Column('period', sa.String(length=64), nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=False),
    sa.Column('claimed_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('finished_at', server.db.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_claims')),
    sa.UniqueConstraint('job', 'period', name='job_period')
    )
    op.create_table('redemption_items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.Enum('goods', 'privilege', 'invite_code', name='item_kind', native_enum=False, length=16), nullable=False),
    sa.Column('title', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('image_url', sa.String(length=512), nullable=False),
    sa.Column('price', sa.BigInteger(), nullable=False),
    sa.Column('stock', sa.Integer(), nullable=True),
    sa.Column('per_member_limit', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('sort', sa.Integer(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('price > 0', name=op.f('ck_redemption_items_price_positive')),
    sa.CheckConstraint('stock IS NULL OR stock >= 0', name=op.f('ck_redemption_items_stock_nonneg')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redemption_items'))
    )
    op.create_table('reward_overrides',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('ref_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('level1_first_bp', sa.Integer(), nullable=True),
    sa.Column('level1_repeat_bp', sa.Integer(), nullable=True),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint("scope IN ('product', 'grade')", name=op.f('ck_reward_overrides_scope_known')),
    sa.CheckConstraint('level1_first_bp IS NULL OR (level1_first_bp >= 0 AND level1_first_bp <= 2000)', name=op.f('ck_reward_overrides_first_range')),
    sa.CheckConstraint('level1_repeat_bp IS NULL OR (level1_repeat_bp >= 0 AND level1_repeat_bp <= 2000)', name=op.f('ck_reward_overrides_repeat_range')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reward_overrides')),
    sa.UniqueConstraint('scope', 'ref_id', name='scope_ref')
    )
    op.create_table('settlement_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('period', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('started_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('finished_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('members', sa.Integer(), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_runs')),
    sa.UniqueConstraint('period', name=op.f('uq_settlement_runs_period'))
    )
    op.create_table('stage_bonus_rules',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('min_monthly_sales_fen', sa.BigInteger(), nullable=False),
    sa.Column('consecutive_months', sa.Integer(), nullable=False),
    sa.Column('bonus', sa.BigInteger(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.CheckConstraint('bonus > 0', name=op.f('ck_stage_bonus_rules_bonus_positive')),
    sa.CheckConstraint('consecutive_months >= 1', name=op.f('ck_stage_bonus_rules_months_positive')),
    sa.CheckConstraint('min_monthly_sales_fen > 0', name=op.f('ck_stage_bonus_rules_threshold_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stage_bonus_rules'))
    )
    op.create_table('ledger_accounts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('kind', sa.Enum('pending', 'matured', 'available', 'debt', 'issuance', 'redemption', 'expiry', name='account_kind', native_enum=False, length=16), nullable=False),
    sa.Column('balance', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("(member_id IS NULL) = (kind IN ('issuance', 'redemption', 'expiry'))", name=op.f('ck_ledger_accounts_owner_matches_kind')),
    sa.CheckConstraint("kind <> 'available' OR balance >= 0", name=op.f('ck_ledger_accounts_available_nonneg')),
    sa.CheckConstraint("kind <> 'debt' OR balance <= 0", name=op.f('ck_ledger_accounts_debt_nonpos')),
    sa.CheckConstraint("kind NOT IN ('pending', 'matured') OR balance >= 0", name=op.f('ck_ledger_accounts_held_nonneg')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_ledger_accounts_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_accounts')),
    sa.UniqueConstraint('member_id', 'kind', name='member_kind')
    )
    op.create_table('point_statements',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('settled', sa.BigInteger(), nullable=False),
    sa.Column('debt_repaid', sa.BigInteger(), nullable=False),
    sa.Column('credited', sa.BigInteger(), nullable=False),
    sa.Column('available_after', sa.BigInteger(), nullable=False),
    sa.Column('debt_after', sa.BigInteger(), nullable=False),
    sa.Column('lines', sa.JSON(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_point_statements_member_id_members')),
    sa.ForeignKeyConstraint(['run_id'], ['settlement_runs.id'], name=op.f('fk_point_statements_run_id_settlement_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_point_statements')),
    sa.UniqueConstraint('run_id', 'member_id', name='run_member')
    )
    with op.batch_alter_table('point_statements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_point_statements_member_id'), ['member_id'], unique=False)

    op.create_table('redemptions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Enum('placed', 'fulfilled', 'cancelled', name='redemption_status', native_enum=False, length=16), nullable=False),
    sa.Column('contact', sa.JSON(), nullable=True),
    sa.Column('staff_note', sa.String(length=255), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('decided_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('decided_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.CheckConstraint('quantity > 0', name=op.f('ck_redemptions_quantity_positive')),
    sa.CheckConstraint('total > 0', name=op.f('ck_redemptions_total_positive')),
    sa.ForeignKeyConstraint(['decided_by'], ['staff.id'], name=op.f('fk_redemptions_decided_by_staff')),
    sa.ForeignKeyConstraint(['item_id'], ['redemption_items.id'], name=op.f('fk_redemptions_item_id_redemption_items')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_redemptions_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redemptions')),
    sa.UniqueConstraint('member_id', 'idempotency_key', name='member_key')
    )
    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_redemptions_member_id'), ['member_id'], unique=False)

    op.create_table('share_opens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sharer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('opener_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scene_code', sa.String(length=32), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['opener_id'], ['members.id'], name=op.f('fk_share_opens_opener_id_members')),
    sa.ForeignKeyConstraint(['sharer_id'], ['members.id'], name=op.f('fk_share_opens_sharer_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_share_opens')),
    sa.UniqueConstraint('sharer_id', 'day', name='sharer_day')
    )
    op.create_table('invite_codes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scene_code', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('redemption_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('used_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('used_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['members.id'], name=op.f('fk_invite_codes_owner_id_members')),
    sa.ForeignKeyConstraint(['redemption_id'], ['redemptions.id'], name=op.f('fk_invite_codes_redemption_id_redemptions')),
    sa.ForeignKeyConstraint(['scene_code'], ['scenes.code'], name=op.f('fk_invite_codes_scene_code_scenes')),
    sa.ForeignKeyConstraint(['used_by'], ['members.id'], name=op.f('fk_invite_codes_used_by_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invite_codes')),
    sa.UniqueConstraint('scene_code', name=op.f('uq_invite_codes_scene_code'))
    )
    with op.batch_alter_table('invite_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invite_codes_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_invite_codes_redemption_id'), ['redemption_id'], unique=False)

    op.create_table('ledger_transactions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('idempotency_key', sa.String(length=96), nullable=False),
    sa.Column('kind', sa.Enum('order_reward', 'mature', 'settle', 'reversal', 'lead_reward', 'share_reward', 'stage_bonus', 'starter', 'redeem', 'redeem_cancel', 'adjust', 'expire', name='tx_kind', native_enum=False, length=16), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('order_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('level', sa.Integer(), nullable=True),
    sa.Column('reverses_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_ledger_transactions_member_id_members')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_ledger_transactions_order_id_orders')),
    sa.ForeignKeyConstraint(['reverses_id'], ['ledger_transactions.id'], name=op.f('fk_ledger_transactions_reverses_id_ledger_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_transactions')),
    sa.UniqueConstraint('idempotency_key', name='idempotency_key')
    )
    with op.batch_alter_table('ledger_transactions', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_transactions_member', ['member_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_transactions_order_id'), ['order_id'], unique=False)

    op.create_table('order_rewards',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('order_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('reversed_amount', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.Enum('pending', 'matured', 'settled', 'reversed', name='reward_state', native_enum=False, length=16), nullable=False),
    sa.Column('rule', sa.String(length=128), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('matured_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('settled_at', server.db.UTCDateTime(), nullable=True),
    sa.CheckConstraint('amount >= 0 AND reversed_amount >= 0 AND reversed_amount <= amount', name=op.f('ck_order_rewards_amounts')),
    sa.CheckConstraint('level IN (1, 2)', name=op.f('ck_order_rewards_two_levels_only')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_order_rewards_member_id_members')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_rewards_order_id_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_rewards')),
    sa.UniqueConstraint('order_id', 'level', name='order_level')
    )
    with op.batch_alter_table('order_rewards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_rewards_member_id'), ['member_id'], unique=False)

    op.create_table('ledger_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('amount <> 0', name=op.f('ck_ledger_entries_nonzero')),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_accounts.id'], name=op.f('fk_ledger_entries_account_id_ledger_accounts')),
    sa.ForeignKeyConstraint(['transaction_id'], ['ledger_transactions.id'], name=op.f('fk_ledger_entries_transaction_id_ledger_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entries'))
    )
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_entries_account', ['account_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_entries_transaction_id'), ['transaction_id'], unique=False)



def downgrade() -> None:
    # A dropped table takes its indexes with it; MariaDB refuses to drop an index alone while a foreign key needs it.
    op.drop_table('ledger_entries')
    op.drop_table('order_rewards')
    op.drop_table('ledger_transactions')
    op.drop_table('invite_codes')
    op.drop_table('share_opens')
    op.drop_table('redemptions')
    op.drop_table('point_statements')
    op.drop_table('ledger_accounts')
    op.drop_table('stage_bonus_rules')
    op.drop_table('settlement_runs')
    op.drop_table('reward_overrides')
    op.drop_table('redemption_items')
    op.drop_table('job_claims')
