"""Notifications: members' subscribe-message allowances, the outbox of messages to members, and the
official account's followers (for template messages when a member has no allowance left).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 00:52:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('oa_followers',
    sa.Column('oa_openid', sa.String(length=64), nullable=False),
    sa.Column('unionid', sa.String(length=64), nullable=True),
    sa.Column('following', sa.Boolean(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('oa_openid', name=op.f('pk_oa_followers'))
    )
    with op.batch_alter_table('oa_followers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oa_followers_unionid'), ['unionid'], unique=False)

    op.create_table('notification_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=96), nullable=False),
    sa.Column('event', sa.Enum('points_pending', 'points_available', 'order_shipped', 'refund_result', 'distributor_decided', 'lead_valid', 'redemption_fulfilled', name='notify_event', native_enum=False, length=24), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('page', sa.String(length=255), nullable=False),
    sa.Column('fallback', sa.JSON(), nullable=True),
    sa.Column('state', sa.Enum('queued', 'sending', 'sent', 'dropped', 'failed', name='outbox_state', native_enum=False, length=16), nullable=False),
    sa.Column('channel', sa.Enum('subscribe', 'template', name='message_channel', native_enum=False, length=16), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('lease_until', server.db.UTCDateTime(), nullable=True),
    sa.Column('errcode', sa.Integer(), nullable=True),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('msgid', sa.BigInteger(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('sent_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('attempts >= 0', name=op.f('ck_notification_outbox_attempts_nonneg')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_notification_outbox_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_outbox')),
    sa.UniqueConstraint('key', name=op.f('uq_notification_outbox_key'))
    )
    with op.batch_alter_table('notification_outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_outbox_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_notification_outbox_event_created', ['event', 'created_at'], unique=False)
        batch_op.create_index('ix_notification_outbox_member_created', ['member_id', 'created_at'], unique=False)
        batch_op.create_index('ix_notification_outbox_state_next_attempt', ['state', 'next_attempt_at'], unique=False)

    op.create_table('subscription_allowances',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.Column('remaining', sa.Integer(), nullable=False),
    sa.Column('accepted', sa.Integer(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('remaining >= 0', name=op.f('ck_subscription_allowances_remaining_nonneg')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_subscription_allowances_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscription_allowances')),
    sa.UniqueConstraint('member_id', 'template_id', name='member_template')
    )


def downgrade() -> None:
    # A dropped table takes its indexes with it; MariaDB refuses to drop an index alone while a foreign key needs it.
    op.drop_table('subscription_allowances')
    op.drop_table('notification_outbox')
    op.drop_table('oa_followers')
