"""Distributors, their two tiers (seeded), sales grades and promotion materials.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 21:34:34.736072
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('grades',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('min_sales_fen', sa.BigInteger(), nullable=False),
    sa.Column('perks', sa.Text(), nullable=False),
    sa.Column('sort', sa.Integer(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('min_sales_fen >= 0', name=op.f('ck_grades_min_sales_nonneg')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_grades')),
    sa.UniqueConstraint('min_sales_fen', name=op.f('uq_grades_min_sales_fen')),
    sa.UniqueConstraint('name', name=op.f('uq_grades_name'))
    )
    tiers = op.create_table('distributor_tiers',
    sa.Column('tier', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('discount_bp', sa.Integer(), nullable=False),
    sa.Column('can_recruit', sa.Boolean(), nullable=False),
    sa.Column('max_recruits', sa.Integer(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('updated_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.CheckConstraint('discount_bp >= 0 AND discount_bp <= 5000', name=op.f('ck_distributor_tiers_discount_range')),
    sa.CheckConstraint('max_recruits >= 0', name=op.f('ck_distributor_tiers_max_recruits_nonneg')),
    sa.CheckConstraint('tier = 1 OR can_recruit = 0', name=op.f('ck_distributor_tiers_only_tier1_recruits')),
    sa.CheckConstraint('tier IN (1, 2)', name=op.f('ck_distributor_tiers_tier_range')),
    sa.ForeignKeyConstraint(['updated_by'], ['staff.id'], name=op.f('fk_distributor_tiers_updated_by_staff')),
    sa.PrimaryKeyConstraint('tier', name=op.f('pk_distributor_tiers'))
    )
    # The two tiers exist from the start; the owner edits them, nobody adds or removes one.
    op.bulk_insert(tiers, [
        {'tier': 1, 'discount_bp': 500, 'can_recruit': True, 'max_recruits': 50},
        {'tier': 2, 'discount_bp': 200, 'can_recruit': False, 'max_recruits': 0},
    ])
    op.create_table('distributors',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tier', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'approved', 'rejected', 'frozen', 'disabled', name='distributor_status', native_enum=False, length=16), nullable=False),
    sa.Column('real_name', sa.String(length=32), nullable=False),
    sa.Column('phone_ciphertext', sa.String(length=255), nullable=False),
    sa.Column('phone_digest', sa.String(length=64), nullable=False),
    sa.Column('phone_masked', sa.String(length=32), nullable=False),
    sa.Column('wechat_id', sa.String(length=64), nullable=False),
    sa.Column('intro', sa.String(length=500), nullable=False),
    sa.Column('recruited_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('grade_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('applied_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('decided_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('decided_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('status_reason', sa.String(length=255), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('recruited_by_id IS NULL OR recruited_by_id <> member_id', name=op.f('ck_distributors_not_own_recruit')),
    sa.CheckConstraint('recruited_by_id IS NULL OR tier = 2', name=op.f('ck_distributors_recruiter_only_tier2')),
    sa.CheckConstraint('tier IN (1, 2)', name=op.f('ck_distributors_tier_range')),
    sa.ForeignKeyConstraint(['decided_by'], ['staff.id'], name=op.f('fk_distributors_decided_by_staff')),
    sa.ForeignKeyConstraint(['grade_id'], ['grades.id'], name=op.f('fk_distributors_grade_id_grades')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_distributors_member_id_members')),
    sa.ForeignKeyConstraint(['recruited_by_id'], ['members.id'], name=op.f('fk_distributors_recruited_by_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_distributors')),
    sa.UniqueConstraint('member_id', name=op.f('uq_distributors_member_id'))
    )
    with op.batch_alter_table('distributors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_distributors_phone_digest'), ['phone_digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_distributors_recruited_by_id'), ['recruited_by_id'], unique=False)
        batch_op.create_index('ix_distributors_status_tier', ['status', 'tier'], unique=False)

    op.create_table('materials',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.Enum('image_text', 'video', 'poster', name='material_kind', native_enum=False, length=16), nullable=False),
    sa.Column('title', sa.String(length=64), nullable=False),
    sa.Column('summary', sa.String(length=255), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('url', sa.String(length=512), nullable=False),
    sa.Column('cover_url', sa.String(length=512), nullable=False),
    sa.Column('poster_template_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('audience', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('sort', sa.Integer(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint("(kind = 'poster' AND poster_template_id IS NOT NULL) OR (kind <> 'poster' AND poster_template_id IS NULL)", name=op.f('ck_materials_poster_has_template')),
    sa.CheckConstraint('audience IN (1, 2, 3)', name=op.f('ck_materials_audience_range')),
    sa.ForeignKeyConstraint(['poster_template_id'], ['poster_templates.id'], name=op.f('fk_materials_poster_template_id_poster_templates')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_materials'))
    )
    with op.batch_alter_table('materials', schema=None) as batch_op:
        batch_op.create_index('ix_materials_listing', ['active', 'audience', 'sort'], unique=False)


def downgrade() -> None:
    # A dropped table takes its indexes with it; MariaDB refuses to drop an index alone while a foreign key needs it.
    op.drop_table('materials')
    op.drop_table('distributors')
    op.drop_table('distributor_tiers')
    op.drop_table('grades')