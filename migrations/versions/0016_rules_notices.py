"""Distributor programme rules with their versions and members' acceptances; notices with read receipts.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 04:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('programme_rules',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('number', sa.Integer(), nullable=True),
    sa.Column('status', sa.Enum('draft', 'published', name='rules_status', native_enum=False, length=16), nullable=False),
    sa.Column('title', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('created_by', BIG_ID, nullable=True),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('published_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('published_by', BIG_ID, nullable=True),
    sa.CheckConstraint("(status = 'published' AND number IS NOT NULL) OR (status <> 'published' AND number IS NULL)", name=op.f('ck_programme_rules_published_has_number')),
    sa.ForeignKeyConstraint(['created_by'], ['staff.id'], name=op.f('fk_programme_rules_created_by_staff')),
    sa.ForeignKeyConstraint(['published_by'], ['staff.id'], name=op.f('fk_programme_rules_published_by_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_programme_rules')),
    sa.UniqueConstraint('number', name=op.f('uq_programme_rules_number'))
    )
    op.create_table('programme_rules_acceptances',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('member_id', BIG_ID, nullable=False),
    sa.Column('rules_id', BIG_ID, nullable=False),
    sa.Column('accepted_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('client_address', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_programme_rules_acceptances_member_id_members')),
    sa.ForeignKeyConstraint(['rules_id'], ['programme_rules.id'], name=op.f('fk_programme_rules_acceptances_rules_id_programme_rules')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_programme_rules_acceptances'))
    )
    with op.batch_alter_table('programme_rules_acceptances', schema=None) as batch_op:
        batch_op.create_index('ix_programme_rules_acceptances_member', ['member_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_programme_rules_acceptances_rules_id'), ['rules_id'], unique=False)

    op.create_table('notices',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('title', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('audience', sa.Enum('all', 'distributors', 'tier', name='notice_audience', native_enum=False, length=16), nullable=False),
    sa.Column('tier', sa.Integer(), nullable=True),
    sa.Column('status', sa.Enum('draft', 'published', 'withdrawn', name='notice_status', native_enum=False, length=16), nullable=False),
    sa.Column('pinned', sa.Boolean(), nullable=False),
    sa.Column('published_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('withdrawn_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('created_by', BIG_ID, nullable=True),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint("(audience = 'tier' AND tier IN (1, 2)) OR (audience <> 'tier' AND tier IS NULL)", name=op.f('ck_notices_tier_for_tier_audience')),
    sa.CheckConstraint("status = 'draft' OR published_at IS NOT NULL", name=op.f('ck_notices_published_has_time')),
    sa.ForeignKeyConstraint(['created_by'], ['staff.id'], name=op.f('fk_notices_created_by_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notices'))
    )
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.create_index('ix_notices_listing', ['status', 'pinned', 'published_at', 'id'], unique=False)

    op.create_table('notice_receipts',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('notice_id', BIG_ID, nullable=False),
    sa.Column('member_id', BIG_ID, nullable=False),
    sa.Column('read_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_notice_receipts_member_id_members')),
    sa.ForeignKeyConstraint(['notice_id'], ['notices.id'], name=op.f('fk_notice_receipts_notice_id_notices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notice_receipts')),
    sa.UniqueConstraint('notice_id', 'member_id', name='notice_member')
    )
    with op.batch_alter_table('notice_receipts', schema=None) as batch_op:
        batch_op.create_index('ix_notice_receipts_member', ['member_id', 'notice_id'], unique=False)

    # The publish lock exists from the start: creating it on first use races (a deadlock on MariaDB).
    op.bulk_insert(sa.table("mutexes", sa.column("name", sa.String)), [{"name": "programme_rules_publish"}])


def downgrade() -> None:
    op.execute("DELETE FROM mutexes WHERE name = 'programme_rules_publish'")
    # A dropped table takes its indexes with it; MariaDB refuses to drop an index alone while a foreign key needs it.
    op.drop_table('notice_receipts')
    op.drop_table('notices')
    op.drop_table('programme_rules_acceptances')
    op.drop_table('programme_rules')
