"""Risk controls: holds on rewards under review (owned by points), risk reviews with their signals, and
the identifier digests the signals compare.

Revision ID: 0020
Revises: 0017
Create Date: 2026-12-02 04:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db


revision = '0020'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reward_holds',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('subject', sa.String(length=8), nullable=False),
    sa.Column('ref_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('state', sa.Enum('held', 'released', 'reversed', name='hold_state', native_enum=False, length=16), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('decided_at', server.db.UTCDateTime(), nullable=True),
    sa.CheckConstraint("subject IN ('order', 'lead')", name=op.f('ck_reward_holds_subject_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reward_holds')),
    sa.UniqueConstraint('subject', 'ref_id', name='subject_ref')
    )
    op.create_table('risk_identities',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_risk_identities_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_risk_identities')),
    sa.UniqueConstraint('kind', 'digest', 'member_id', name='kind_digest_member')
    )
    with op.batch_alter_table('risk_identities', schema=None) as batch_op:
        batch_op.create_index('ix_risk_identities_member', ['member_id', 'kind'], unique=False)

    op.create_table('risk_reviews',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event', sa.Enum('sign_in', 'bind', 'lead', 'payment', 'refund', 'redemption', 'scene', name='risk_event', native_enum=False, length=16), nullable=False),
    sa.Column('subject', sa.String(length=8), nullable=False),
    sa.Column('ref_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('held', sa.Boolean(), nullable=False),
    sa.Column('state', sa.Enum('open', 'frozen', 'released', 'reversed', 'false_positive', name='review_state', native_enum=False, length=16), nullable=False),
    sa.Column('decided_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('decided_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('note', sa.String(length=255), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['decided_by'], ['staff.id'], name=op.f('fk_risk_reviews_decided_by_staff')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_risk_reviews_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_risk_reviews'))
    )
    with op.batch_alter_table('risk_reviews', schema=None) as batch_op:
        batch_op.create_index('ix_risk_reviews_created', ['created_at'], unique=False)
        batch_op.create_index('ix_risk_reviews_member', ['member_id', 'id'], unique=False)
        batch_op.create_index('ix_risk_reviews_state', ['state', 'id'], unique=False)
        batch_op.create_index('ix_risk_reviews_subject', ['subject', 'ref_id'], unique=False)

    op.create_table('risk_signals',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('review_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('signal', sa.String(length=32), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['review_id'], ['risk_reviews.id'], name=op.f('fk_risk_signals_review_id_risk_reviews')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_risk_signals'))
    )
    with op.batch_alter_table('risk_signals', schema=None) as batch_op:
        batch_op.create_index('ix_risk_signals_created', ['created_at', 'signal'], unique=False)
        batch_op.create_index(batch_op.f('ix_risk_signals_review_id'), ['review_id'], unique=False)


def downgrade() -> None:
    # A dropped table takes its indexes with it; MariaDB refuses to drop an index alone while a foreign key needs it.
    op.drop_table('risk_signals')
    op.drop_table('risk_reviews')
    op.drop_table('risk_identities')
    op.drop_table('reward_holds')
