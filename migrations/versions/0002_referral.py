"""Scenes, bindings, leads, partner channels, poster templates and the poster cache.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 21:28:13.047103
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import server.db


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('partners',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('contact', sa.String(length=128), nullable=False),
    sa.Column('commission_mode', sa.Enum('per_lead', 'per_deal', name='commission_mode', native_enum=False, length=16), nullable=False),
    sa.Column('per_lead_fen', sa.BigInteger(), nullable=False),
    sa.Column('deal_rate_bp', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('deal_rate_bp >= 0 AND deal_rate_bp <= 10000', name=op.f('ck_partners_deal_rate_range')),
    sa.CheckConstraint('per_lead_fen >= 0', name=op.f('ck_partners_per_lead_nonneg')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partners')),
    sa.UniqueConstraint('name', name=op.f('uq_partners_name'))
    )
    op.create_table('poster_templates',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('background_color', sa.String(length=9), nullable=False),
    sa.Column('background_image', sa.LargeBinary().with_variant(mysql.LONGBLOB(), 'mysql', 'mariadb'), nullable=True),
    sa.Column('headline', sa.String(length=64), nullable=False),
    sa.Column('body_text', sa.String(length=255), nullable=False),
    sa.Column('layout', sa.JSON(), nullable=False),
    sa.Column('audience', sa.Integer(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_poster_templates'))
    )
    op.create_table('leads',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('source', sa.Enum('arrival', 'contact', name='lead_source', native_enum=False, length=16), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('arrival_member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('sharer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('scene_code', sa.String(length=32), nullable=True),
    sa.Column('channel', sa.String(length=24), nullable=False),
    sa.Column('content', sa.String(length=96), nullable=False),
    sa.Column('contact_name', sa.String(length=64), nullable=False),
    sa.Column('contact_phone_ciphertext', sa.String(length=255), nullable=True),
    sa.Column('contact_phone_masked', sa.String(length=32), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('status', sa.Enum('new', 'valid', 'invalid', name='lead_status', native_enum=False, length=16), nullable=False),
    sa.Column('reviewed_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('reviewed_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('review_note', sa.String(length=255), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_leads_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_leads_partner_id_partners')),
    sa.ForeignKeyConstraint(['reviewed_by'], ['staff.id'], name=op.f('fk_leads_reviewed_by_staff')),
    sa.ForeignKeyConstraint(['sharer_id'], ['members.id'], name=op.f('fk_leads_sharer_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leads')),
    sa.UniqueConstraint('arrival_member_id', name=op.f('uq_leads_arrival_member_id'))
    )
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_leads_member_id'), ['member_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_leads_partner_id'), ['partner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_leads_sharer_id'), ['sharer_id'], unique=False)
        batch_op.create_index('ix_leads_status_created', ['status', 'created_at'], unique=False)

    op.create_table('scenes',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('sharer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('channel', sa.Enum('miniprogram_code', 'official_account_qr', 'h5_link', 'moments_poster', 'partner', 'invite_code', name='scene_channel', native_enum=False, length=24), nullable=False),
    sa.Column('content_type', sa.String(length=16), nullable=False),
    sa.Column('content_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('revoked_at', server.db.UTCDateTime(), nullable=True),
    sa.CheckConstraint('(sharer_id IS NULL) <> (partner_id IS NULL)', name=op.f('ck_scenes_one_owner')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_scenes_partner_id_partners')),
    sa.ForeignKeyConstraint(['sharer_id'], ['members.id'], name=op.f('fk_scenes_sharer_id_members')),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_scenes'))
    )
    with op.batch_alter_table('scenes', schema=None) as batch_op:
        batch_op.create_index('ix_scenes_sharer_channel_content', ['sharer_id', 'channel', 'content_type', 'content_id'], unique=False)

    op.create_table('partner_commissions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('lead_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('base_fen', sa.BigInteger(), nullable=False),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('amount_fen >= 0', name=op.f('ck_partner_commissions_amount_nonneg')),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_partner_commissions_lead_id_leads')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_partner_commissions_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partner_commissions')),
    sa.UniqueConstraint('idempotency_key', name='idempotency_key')
    )
    with op.batch_alter_table('partner_commissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_partner_commissions_partner_id'), ['partner_id'], unique=False)

    op.create_table('poster_images',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('template_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('template_version', sa.Integer(), nullable=False),
    sa.Column('content_key', sa.String(length=96), nullable=False),
    sa.Column('variant', sa.String(length=16), nullable=False),
    sa.Column('scene_code', sa.String(length=32), nullable=False),
    sa.Column('token', sa.String(length=32), nullable=False),
    sa.Column('content_type', sa.String(length=32), nullable=False),
    sa.Column('image', sa.LargeBinary().with_variant(mysql.LONGBLOB(), 'mysql', 'mariadb'), nullable=False),
    sa.Column('render_ms', sa.Integer(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_poster_images_member_id_members')),
    sa.ForeignKeyConstraint(['scene_code'], ['scenes.code'], name=op.f('fk_poster_images_scene_code_scenes')),
    sa.ForeignKeyConstraint(['template_id'], ['poster_templates.id'], name=op.f('fk_poster_images_template_id_poster_templates')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_poster_images')),
    sa.UniqueConstraint('member_id', 'template_id', 'template_version', 'content_key', 'variant', name='cache_key'),
    sa.UniqueConstraint('token', name=op.f('uq_poster_images_token'))
    )
    with op.batch_alter_table('poster_images', schema=None) as batch_op:
        batch_op.create_index('ix_poster_images_member', ['member_id'], unique=False)

    op.create_table('referral_bindings',
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inviter_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('upline_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('scene_code', sa.String(length=32), nullable=True),
    sa.Column('channel', sa.String(length=24), nullable=False),
    sa.Column('bound_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('rebind_count', sa.Integer(), nullable=False),
    sa.CheckConstraint('inviter_id <> member_id', name=op.f('ck_referral_bindings_not_self')),
    sa.CheckConstraint('upline_id IS NULL OR upline_id <> member_id', name=op.f('ck_referral_bindings_upline_not_self')),
    sa.ForeignKeyConstraint(['inviter_id'], ['members.id'], name=op.f('fk_referral_bindings_inviter_id_members')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_referral_bindings_member_id_members')),
    sa.ForeignKeyConstraint(['scene_code'], ['scenes.code'], name=op.f('fk_referral_bindings_scene_code_scenes')),
    sa.ForeignKeyConstraint(['upline_id'], ['members.id'], name=op.f('fk_referral_bindings_upline_id_members')),
    sa.PrimaryKeyConstraint('member_id', name=op.f('pk_referral_bindings'))
    )
    with op.batch_alter_table('referral_bindings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referral_bindings_inviter_id'), ['inviter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_referral_bindings_upline_id'), ['upline_id'], unique=False)

    with op.batch_alter_table('touch_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content', sa.String(length=96), nullable=False, server_default=''))

    op.create_table('oa_attributions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('unionid', sa.String(length=64), nullable=False),
    sa.Column('scene_code', sa.String(length=32), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['scene_code'], ['scenes.code'], name=op.f('fk_oa_attributions_scene_code_scenes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oa_attributions')),
    sa.UniqueConstraint('unionid', name=op.f('uq_oa_attributions_unionid'))
    )
    # The chain lock exists from the start: creating it on first use races (a deadlock on MariaDB).
    op.bulk_insert(sa.table("mutexes", sa.column("name", sa.String)), [{"name": "referral-chain"}])


def downgrade() -> None:
    # A dropped table takes its indexes with it; MariaDB refuses to drop an index alone while a foreign key needs it.
    op.execute("DELETE FROM mutexes WHERE name = 'referral-chain'")
    op.drop_table('oa_attributions')
    with op.batch_alter_table('touch_events', schema=None) as batch_op:
        batch_op.drop_column('content')

    op.drop_table('referral_bindings')
    op.drop_table('poster_images')
    op.drop_table('partner_commissions')
    op.drop_table('scenes')
    op.drop_table('leads')
    op.drop_table('poster_templates')
    op.drop_table('partners')
