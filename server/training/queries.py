"""Read-side training figures: a member's progress in courses, and a course's completion counts."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.training.models import Lesson, LessonCompletion, QuizAttempt, QuizQuestion


def lesson_counts(sess: Session, course_ids: list[int]) -> dict[int, int]:
    """How many lessons each course has (a course without lessons is absent)."""
    rows = sess.execute(select(Lesson.course_id, func.count()).where(Lesson.course_id.in_(course_ids)).group_by(Lesson.course_id))
    return {course_id: n for course_id, n in rows}


def _quiz_courses(sess: Session, course_ids: list[int]) -> set[int]:
    return set(sess.scalars(select(QuizQuestion.course_id).where(QuizQuestion.course_id.in_(course_ids)).distinct()))


def progress(sess: Session, member_id: int, course_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Per course: its lessons, how many the member marked done, whether it has a quiz and the member passed
    it, whether the course is complete (every lesson done and the quiz, if any, passed), and the member's
    last activity in it."""
    ids = list(course_ids)
    if not ids:
        return {}
    lessons = lesson_counts(sess, ids)
    quizzes = _quiz_courses(sess, ids)
    done = {
        course_id: (n, last)
        for course_id, n, last in sess.execute(
            select(LessonCompletion.course_id, func.count(), func.max(LessonCompletion.completed_at))
            .where(LessonCompletion.member_id == member_id, LessonCompletion.course_id.in_(ids))
            .group_by(LessonCompletion.course_id)
        )
    }
    attempts = {
        course_id: (bool(passed), last)
        for course_id, passed, last in sess.execute(
            select(QuizAttempt.course_id, func.max(QuizAttempt.passed), func.max(QuizAttempt.created_at))
            .where(QuizAttempt.member_id == member_id, QuizAttempt.course_id.in_(ids))
            .group_by(QuizAttempt.course_id)
        )
    }
    result: dict[int, dict[str, Any]] = {}
    for course_id in ids:
        n_lessons = lessons.get(course_id, 0)
        n_done, done_at = done.get(course_id, (0, None))
        passed, tried_at = attempts.get(course_id, (False, None))
        has_quiz = course_id in quizzes
        moments = [m for m in (done_at, tried_at) if m is not None]
        result[course_id] = {
            "lesson_count": n_lessons,
            "done_count": n_done,
            "has_quiz": has_quiz,
            "quiz_passed": passed,
            "complete": n_lessons > 0 and n_done >= n_lessons and (passed or not has_quiz),
            "last_activity": _latest(moments),
        }
    return result


def _latest(moments: list[Any]) -> datetime | None:
    return max(moments) if moments else None


def course_stats(sess: Session, course_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Per course: how many members started it (marked a lesson done or tried the quiz) and how many completed it."""
    ids = list(course_ids)
    if not ids:
        return {}
    lessons = lesson_counts(sess, ids)
    quizzes = _quiz_courses(sess, ids)
    started: dict[int, set[int]] = {course_id: set() for course_id in ids}
    all_done: dict[int, set[int]] = {course_id: set() for course_id in ids}
    for course_id, member_id, n in sess.execute(
        select(LessonCompletion.course_id, LessonCompletion.member_id, func.count())
        .where(LessonCompletion.course_id.in_(ids))
        .group_by(LessonCompletion.course_id, LessonCompletion.member_id)
    ):
        started[course_id].add(member_id)
        if n >= lessons.get(course_id, 0) > 0:
            all_done[course_id].add(member_id)
    passed: dict[int, set[int]] = {course_id: set() for course_id in ids}
    for course_id, member_id, ok in sess.execute(
        select(QuizAttempt.course_id, QuizAttempt.member_id, func.max(QuizAttempt.passed))
        .where(QuizAttempt.course_id.in_(ids))
        .group_by(QuizAttempt.course_id, QuizAttempt.member_id)
    ):
        started[course_id].add(member_id)
        if ok:
            passed[course_id].add(member_id)
    return {
        course_id: {
            "started": len(started[course_id]),
            "completed": len(all_done[course_id] & passed[course_id] if course_id in quizzes else all_done[course_id]),
        }
        for course_id in ids
    }
