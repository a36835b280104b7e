"""Lead follow-up: an assignee, a follow-up state and notes per lead, the lead pool's filter indexes;
partner payouts, which mark a period's commission lines paid once.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 09:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('partner_payouts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('period_start', server.db.UTCDateTime(), nullable=False),
    sa.Column('period_end', server.db.UTCDateTime(), nullable=False),
    sa.Column('lines', sa.Integer(), nullable=False),
    sa.Column('total_fen', sa.BigInteger(), nullable=False),
    sa.Column('reference', sa.String(length=64), nullable=False),
    sa.Column('paid_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('paid_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('period_start < period_end', name=op.f('ck_partner_payouts_period_order')),
    sa.CheckConstraint('total_fen >= 0', name=op.f('ck_partner_payouts_total_nonneg')),
    sa.ForeignKeyConstraint(['paid_by'], ['staff.id'], name=op.f('fk_partner_payouts_paid_by_staff')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_partner_payouts_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partner_payouts')),
    sa.UniqueConstraint('partner_id', 'period_start', 'period_end', name='partner_period')
    )
    op.create_table('lead_notes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('lead_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('staff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('follow_up', sa.Enum('new', 'contacted', 'converted', 'lost', name='lead_follow_up', native_enum=False, length=16), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_lead_notes_lead_id_leads')),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_lead_notes_staff_id_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lead_notes'))
    )
    with op.batch_alter_table('lead_notes', schema=None) as batch_op:
        batch_op.create_index('ix_lead_notes_lead_created', ['lead_id', 'created_at'], unique=False)

    # Leads already in the pool start their follow-up as new, with nobody assigned.
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assignee_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('follow_up', sa.Enum('new', 'contacted', 'converted', 'lost', name='lead_follow_up', native_enum=False, length=16), nullable=False, server_default='new'))
        batch_op.add_column(sa.Column('follow_up_at', server.db.UTCDateTime(), nullable=True))
        batch_op.create_index('ix_leads_assignee_created', ['assignee_id', 'created_at'], unique=False)
        batch_op.create_index('ix_leads_channel_created', ['channel', 'created_at'], unique=False)
        batch_op.create_index('ix_leads_follow_up_created', ['follow_up', 'created_at'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_leads_assignee_id_staff'), 'staff', ['assignee_id'], ['id'])

    with op.batch_alter_table('partner_commissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payout_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_index(batch_op.f('ix_partner_commissions_payout_id'), ['payout_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_partner_commissions_payout_id_partner_payouts'), 'partner_payouts', ['payout_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('partner_commissions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_partner_commissions_payout_id_partner_payouts'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_partner_commissions_payout_id'))
        batch_op.drop_column('payout_id')
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_leads_assignee_id_staff'), type_='foreignkey')
        batch_op.drop_index('ix_leads_follow_up_created')
        batch_op.drop_index('ix_leads_channel_created')
        batch_op.drop_index('ix_leads_assignee_created')
        batch_op.drop_column('follow_up_at')
        batch_op.drop_column('follow_up')
        batch_op.drop_column('assignee_id')

    # Dropping the table drops its index with it; MariaDB refuses to drop the index alone while the
    # lead_id foreign key needs it.
    op.drop_table('lead_notes')
    op.drop_table('partner_payouts')
