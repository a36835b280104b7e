"""Training and feedback: courses with ordered lessons and quiz questions, members' lesson completions
and quiz attempts; members' feedback and reports about distributors, with the staff's notes.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 03:44:31
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('training_courses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('title', sa.String(length=64), nullable=False),
    sa.Column('summary', sa.String(length=255), nullable=False),
    sa.Column('audience', sa.Integer(), nullable=False),
    sa.Column('state', sa.Enum('draft', 'published', name='course_state', native_enum=False, length=16), nullable=False),
    sa.Column('pass_mark', sa.Integer(), nullable=False),
    sa.Column('sort', sa.Integer(), nullable=False),
    sa.Column('published_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('audience IN (1, 2, 3)', name=op.f('ck_training_courses_audience_range')),
    sa.CheckConstraint('pass_mark >= 1 AND pass_mark <= 100', name=op.f('ck_training_courses_pass_mark_range')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_courses'))
    )
    with op.batch_alter_table('training_courses', schema=None) as batch_op:
        batch_op.create_index('ix_training_courses_listing', ['state', 'audience', 'sort'], unique=False)

    op.create_table('feedback_items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.Enum('feedback', 'report', name='feedback_kind', native_enum=False, length=16), nullable=False),
    sa.Column('category', sa.Enum('suggestion', 'product', 'service', 'false_advertising', 'harassment', 'other', name='feedback_category', native_enum=False, length=24), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('contact', sa.String(length=64), nullable=False),
    sa.Column('reported_member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('scene_code', sa.String(length=32), nullable=False),
    sa.Column('state', sa.Enum('new', 'in_progress', 'resolved', 'dismissed', name='feedback_state', native_enum=False, length=16), nullable=False),
    sa.Column('assignee_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('reply', sa.Text(), nullable=False),
    sa.Column('replied_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('closed_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint("(kind = 'report') = (reported_member_id IS NOT NULL)", name=op.f('ck_feedback_items_report_names_member')),
    sa.ForeignKeyConstraint(['assignee_id'], ['staff.id'], name=op.f('fk_feedback_items_assignee_id_staff')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_feedback_items_member_id_members')),
    sa.ForeignKeyConstraint(['reported_member_id'], ['members.id'], name=op.f('fk_feedback_items_reported_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback_items'))
    )
    with op.batch_alter_table('feedback_items', schema=None) as batch_op:
        batch_op.create_index('ix_feedback_items_kind_state_id', ['kind', 'state', 'id'], unique=False)
        batch_op.create_index('ix_feedback_items_member_id', ['member_id', 'id'], unique=False)
        batch_op.create_index('ix_feedback_items_reported_id', ['reported_member_id', 'id'], unique=False)
        batch_op.create_index('ix_feedback_items_state_id', ['state', 'id'], unique=False)

    op.create_table('training_lessons',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('course_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('article', 'video', name='lesson_kind', native_enum=False, length=16), nullable=False),
    sa.Column('title', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('video_url', sa.String(length=512), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint("(kind = 'article' AND video_url = '') OR (kind = 'video' AND video_url <> '')", name=op.f('ck_training_lessons_kind_fields')),
    sa.ForeignKeyConstraint(['course_id'], ['training_courses.id'], name=op.f('fk_training_lessons_course_id_training_courses')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_lessons'))
    )
    with op.batch_alter_table('training_lessons', schema=None) as batch_op:
        batch_op.create_index('ix_training_lessons_course_position', ['course_id', 'position'], unique=False)

    op.create_table('training_quiz_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('course_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('answers', sa.JSON(), nullable=False),
    sa.Column('correct', sa.Integer(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('correct >= 0 AND correct <= total', name=op.f('ck_training_quiz_attempts_correct_range')),
    sa.ForeignKeyConstraint(['course_id'], ['training_courses.id'], name=op.f('fk_training_quiz_attempts_course_id_training_courses')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_training_quiz_attempts_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_quiz_attempts'))
    )
    with op.batch_alter_table('training_quiz_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_training_quiz_attempts_course_passed', ['course_id', 'passed', 'member_id'], unique=False)
        batch_op.create_index('ix_training_quiz_attempts_member_course', ['member_id', 'course_id', 'created_at'], unique=False)

    op.create_table('training_quiz_questions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('course_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.String(length=255), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('answer', sa.Integer(), nullable=False),
    sa.CheckConstraint('answer >= 0', name=op.f('ck_training_quiz_questions_answer_nonneg')),
    sa.ForeignKeyConstraint(['course_id'], ['training_courses.id'], name=op.f('fk_training_quiz_questions_course_id_training_courses')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_quiz_questions'))
    )
    with op.batch_alter_table('training_quiz_questions', schema=None) as batch_op:
        batch_op.create_index('ix_training_quiz_questions_course_position', ['course_id', 'position'], unique=False)

    op.create_table('feedback_notes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('staff_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['feedback_items.id'], name=op.f('fk_feedback_notes_item_id_feedback_items')),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_feedback_notes_staff_id_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback_notes'))
    )
    with op.batch_alter_table('feedback_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_notes_item_id'), ['item_id'], unique=False)

    op.create_table('training_completions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('lesson_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('course_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('completed_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['course_id'], ['training_courses.id'], name=op.f('fk_training_completions_course_id_training_courses')),
    sa.ForeignKeyConstraint(['lesson_id'], ['training_lessons.id'], name=op.f('fk_training_completions_lesson_id_training_lessons')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_training_completions_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_completions')),
    sa.UniqueConstraint('lesson_id', 'member_id', name=op.f('uq_training_completions_lesson_id_member_id'))
    )
    with op.batch_alter_table('training_completions', schema=None) as batch_op:
        batch_op.create_index('ix_training_completions_course_member', ['course_id', 'member_id'], unique=False)
        batch_op.create_index('ix_training_completions_member_course', ['member_id', 'course_id'], unique=False)



def downgrade() -> None:
    # A dropped table takes its indexes with it; MariaDB refuses to drop an index alone while a foreign key needs it.
    op.drop_table('training_completions')
    op.drop_table('feedback_notes')
    op.drop_table('training_quiz_questions')
    op.drop_table('training_quiz_attempts')
    op.drop_table('training_lessons')
    op.drop_table('feedback_items')
    op.drop_table('training_courses')
