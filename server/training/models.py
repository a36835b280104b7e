"""Training courses, their lessons and quiz questions, and what members did with them."""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, enum_column, utcnow


class CourseState(str, enum.Enum):
    draft = "draft"
    published = "published"


class LessonKind(str, enum.Enum):
    article = "article"
    video = "video"


class Course(Base):
    """A course for an audience of members: its ordered lessons and, optionally, a quiz."""

    __tablename__ = "training_courses"
    __table_args__ = (
        CheckConstraint("audience IN (1, 2, 3)", name="audience_range"),
        CheckConstraint("pass_mark >= 1 AND pass_mark <= 100", name="pass_mark_range"),
        Index("ix_training_courses_listing", "state", "audience", "sort"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    title: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(String(255), default="")
    #: Who may take it, as promotion materials: 1 tier-1 distributors; 2 every approved distributor; 3 every member.
    audience: Mapped[int] = mapped_column(default=2)
    state: Mapped[CourseState] = mapped_column(enum_column(CourseState, "course_state"), default=CourseState.draft)
    #: The share of quiz questions, in percent, a member must answer right to pass (when the course has a quiz).
    pass_mark: Mapped[int] = mapped_column(default=80)
    #: Display order, ascending; ties go to the newest.
    sort: Mapped[int] = mapped_column(default=0)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Lesson(Base):
    """One step of a course: an article (plain text, shown escaped) or a video link."""

    __tablename__ = "training_lessons"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'article' AND video_url = '') OR (kind = 'video' AND video_url <> '')", name="kind_fields"
        ),
        Index("ix_training_lessons_course_position", "course_id", "position"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    course_id: Mapped[int] = mapped_column(BigId, ForeignKey("training_courses.id"))
    #: Order within the course, from 1; rewritten whole when lessons are reordered or removed.
    position: Mapped[int]
    kind: Mapped[LessonKind] = mapped_column(enum_column(LessonKind, "lesson_kind"))
    title: Mapped[str] = mapped_column(String(64))
    #: The article's text, or a video's notes: plain text, never markup (escaped when shown).
    body: Mapped[str] = mapped_column(Text, default="")
    #: A video lesson's https link, on one of TRAINING_VIDEO_HOSTS; empty for an article.
    video_url: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class QuizQuestion(Base):
    """A single-choice question of a course's quiz; ``answer`` is never shown before a pass."""

    __tablename__ = "training_quiz_questions"
    __table_args__ = (
        CheckConstraint("answer >= 0", name="answer_nonneg"),
        Index("ix_training_quiz_questions_course_position", "course_id", "position"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    course_id: Mapped[int] = mapped_column(BigId, ForeignKey("training_courses.id"))
    position: Mapped[int]
    prompt: Mapped[str] = mapped_column(String(255))
    #: The choices, 2 to 6 short texts, in the order shown.
    options: Mapped[list[str]] = mapped_column(JSON)
    #: The index in ``options`` of the right choice.
    answer: Mapped[int]


class LessonCompletion(Base):
    """A member marked a lesson done; once per member and lesson (the unique key makes it idempotent)."""

    __tablename__ = "training_completions"
    __table_args__ = (
        UniqueConstraint("lesson_id", "member_id"),
        Index("ix_training_completions_member_course", "member_id", "course_id"),
        Index("ix_training_completions_course_member", "course_id", "member_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lesson_id: Mapped[int] = mapped_column(BigId, ForeignKey("training_lessons.id"))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    #: The lesson's course, so a course's progress is read from one index.
    course_id: Mapped[int] = mapped_column(BigId, ForeignKey("training_courses.id"))
    completed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QuizAttempt(Base):
    """A member's answers to a course's quiz, with the score they got; every attempt is kept."""

    __tablename__ = "training_quiz_attempts"
    __table_args__ = (
        CheckConstraint("correct >= 0 AND correct <= total", name="correct_range"),
        Index("ix_training_quiz_attempts_member_course", "member_id", "course_id", "created_at"),
        Index("ix_training_quiz_attempts_course_passed", "course_id", "passed", "member_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    course_id: Mapped[int] = mapped_column(BigId, ForeignKey("training_courses.id"))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    #: The chosen option's index per question, in the quiz's order then.
    answers: Mapped[list[Any]] = mapped_column(JSON)
    correct: Mapped[int]
    total: Mapped[int]
    #: The score in percent, floored.
    score: Mapped[int]
    passed: Mapped[bool]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
