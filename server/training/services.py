"""Training: staff build courses (lessons, quiz) and publish them; members mark lessons done and take quizzes.

Who sees a course follows the promotion materials' audiences (``distribution.services.audience_floor``):
audience 1 is for approved tier-1 distributors, 2 for every approved distributor, 3 for every member.
A course is complete for a member when every lesson is marked done and, if it has a quiz, a passing
attempt exists; nothing about completion is stored apart from those rows, so adding a lesson to a
course makes it incomplete again for those who finished it.
"""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Sequence
from urllib.parse import urlsplit

from markupsafe import Markup, escape
from sqlalchemy import Select, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.accounts.models import Member, Staff
from server.accounts.services import record_audit
from server.db import utcnow
from server.distribution.services import EVERY_MEMBER, audience_floor
from server.errors import ValidationError
from server.training import queries
from server.training.errors import (
    CourseEmptyError,
    CourseNotFoundError,
    LessonNotFoundError,
    NoQuizError,
    QuizAttemptsExceededError,
)
from server.training.models import Course, CourseState, Lesson, LessonCompletion, LessonKind, QuizAttempt, QuizQuestion

#: Quiz attempts a member may make on one course in an hour.
QUIZ_ATTEMPTS_PER_HOUR = 5
QUIZ_WINDOW = timedelta(hours=1)
#: How courses are listed: by sort, then newest.
COURSE_ORDER = (Course.sort, Course.created_at.desc(), Course.id.desc())


def _invalid(field: str, error: str) -> ValidationError:
    return ValidationError(data={"errors": [{"field": field, "error": error}]})


# -- articles ----------------------------------------------------------------------------------

_BOLD = re.compile(r"\*\*(.+?)\*\*")


def render_article(text: str) -> Markup:
    """An article's plain text as safe HTML: everything escaped, blank lines make paragraphs, a line break
    is kept, and ``**text**`` is bold. No other markup exists, so nothing a writer types can run."""
    paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if p.strip()]
    html = []
    for paragraph in paragraphs:
        escaped = str(escape(paragraph))
        escaped = _BOLD.sub(r"<strong>\1</strong>", escaped).replace("\n", "<br>")
        html.append(f"<p>{escaped}</p>")
    return Markup("".join(html))


def video_url_problem(url: str, hosts: Sequence[str]) -> str | None:
    """Why ``url`` cannot be a lesson's video: only https links on one of ``hosts`` (or their subdomains)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return "must be an https URL"
    if parts.scheme != "https" or not host or parts.username or parts.password:
        return "must be an https URL"
    if not any(host == allowed or host.endswith("." + allowed) for allowed in hosts):
        return "the video must be on one of: " + ", ".join(hosts)
    return None


# -- courses (staff) -------------------------------------------------------------------------------


def _course_values(course: Course) -> dict[str, Any]:
    return {"title": course.title, "audience": course.audience, "pass_mark": course.pass_mark, "sort": course.sort, "state": course.state.value}


def create_course(sess: Session, fields: dict[str, Any], *, staff: Staff) -> Course:
    """A new course, as a draft with no lessons yet. Audited."""
    course = Course(**fields, state=CourseState.draft)
    sess.add(course)
    sess.flush()
    record_audit(sess, staff.id, "training.course_create", f"course:{course.id}", _course_values(course))
    return course


def get_course(sess: Session, course_id: int, *, for_update: bool = False) -> Course:
    course = sess.get(Course, course_id, with_for_update=for_update)
    if course is None:
        raise CourseNotFoundError()
    return course


def courses_query(*, state: CourseState | None = None, audience: int | None = None) -> Select[Course]:
    stmt = select(Course)
    if state is not None:
        stmt = stmt.where(Course.state == state)
    if audience is not None:
        stmt = stmt.where(Course.audience == audience)
    return stmt


def update_course(sess: Session, course_id: int, changes: dict[str, Any], *, staff: Staff) -> Course:
    """Change a course's title, summary, audience, pass mark or order. Audited with old and new values."""
    course = get_course(sess, course_id, for_update=True)
    old = _course_values(course)
    for key, value in changes.items():
        setattr(course, key, value)
    sess.flush()
    record_audit(sess, staff.id, "training.course_update", f"course:{course.id}", {"old": old, "new": _course_values(course), "fields": sorted(changes)})
    return course


def set_published(sess: Session, course_id: int, published: bool, *, staff: Staff) -> Course:
    """Publish a course (it needs a lesson) or take it back to draft; members keep what they did. Audited."""
    course = get_course(sess, course_id, for_update=True)
    target = CourseState.published if published else CourseState.draft
    if course.state == target:
        return course
    if published and not lessons_of(sess, course.id):
        raise CourseEmptyError()
    course.state = target
    if published:
        course.published_at = utcnow()
    sess.flush()
    record_audit(sess, staff.id, "training.publish" if published else "training.unpublish", f"course:{course.id}", {"title": course.title})
    return course


# -- lessons (staff) -------------------------------------------------------------------------------


def lessons_of(sess: Session, course_id: int) -> list[Lesson]:
    return list(sess.scalars(select(Lesson).where(Lesson.course_id == course_id).order_by(Lesson.position, Lesson.id)))


def _check_lesson(lesson: Lesson, video_hosts: Sequence[str]) -> None:
    if lesson.kind == LessonKind.video:
        if not lesson.video_url:
            raise _invalid("video_url", "a video lesson needs its link")
        if problem := video_url_problem(lesson.video_url, video_hosts):
            raise _invalid("video_url", problem)
    else:
        if lesson.video_url:
            raise _invalid("video_url", "only a video lesson has a link")
        if not lesson.body.strip():
            raise _invalid("body", "an article needs its text")


def _lesson_values(lesson: Lesson) -> dict[str, Any]:
    return {"title": lesson.title, "kind": lesson.kind.value, "position": lesson.position, "video_url": lesson.video_url}


def add_lesson(sess: Session, course_id: int, fields: dict[str, Any], *, staff: Staff, video_hosts: Sequence[str]) -> Lesson:
    """Append a lesson to a course; an article needs text, a video an https link on an allowed host. Audited."""
    course = get_course(sess, course_id, for_update=True)
    position = (sess.scalar(select(func.max(Lesson.position)).where(Lesson.course_id == course.id)) or 0) + 1
    lesson = Lesson(course_id=course.id, position=position, **fields)
    lesson.kind = LessonKind(lesson.kind)
    lesson.body = lesson.body or ""
    lesson.video_url = lesson.video_url or ""
    _check_lesson(lesson, video_hosts)
    sess.add(lesson)
    sess.flush()
    record_audit(sess, staff.id, "training.lesson_add", f"course:{course.id}", {"lesson_id": lesson.id, **_lesson_values(lesson)})
    return lesson


def get_lesson(sess: Session, lesson_id: int) -> Lesson:
    lesson = sess.get(Lesson, lesson_id)
    if lesson is None:
        raise LessonNotFoundError()
    return lesson


def update_lesson(sess: Session, lesson_id: int, changes: dict[str, Any], *, staff: Staff, video_hosts: Sequence[str]) -> Lesson:
    """Change a lesson; the result is checked as a whole (a kind change brings its own fields). Audited."""
    lesson = get_lesson(sess, lesson_id)
    get_course(sess, lesson.course_id, for_update=True)
    old = _lesson_values(lesson)
    values = {**{k: getattr(lesson, k) for k in ("kind", "title", "body", "video_url")}, **changes}
    values["kind"] = LessonKind(values["kind"])
    _check_lesson(Lesson(**values), video_hosts)  # checked aside, so a refused change leaves the lesson as it was
    for key, value in values.items():
        setattr(lesson, key, value)
    sess.flush()
    record_audit(sess, staff.id, "training.lesson_update", f"course:{lesson.course_id}", {"lesson_id": lesson.id, "old": old, "new": _lesson_values(lesson)})
    return lesson


def _renumber(lessons: list[Lesson]) -> None:
    for position, lesson in enumerate(lessons, start=1):
        lesson.position = position


def remove_lesson(sess: Session, lesson_id: int, *, staff: Staff) -> Course:
    """Remove a lesson and the completions of it; a published course keeps at least one lesson. Audited."""
    lesson = get_lesson(sess, lesson_id)
    course = get_course(sess, lesson.course_id, for_update=True)
    rest = [other for other in lessons_of(sess, course.id) if other.id != lesson.id]
    if course.state == CourseState.published and not rest:
        raise CourseEmptyError("a published course keeps at least one lesson; unpublish it first")
    values = _lesson_values(lesson)
    sess.execute(delete(LessonCompletion).where(LessonCompletion.lesson_id == lesson.id))
    sess.delete(lesson)
    _renumber(rest)
    sess.flush()
    record_audit(sess, staff.id, "training.lesson_remove", f"course:{course.id}", {"lesson_id": lesson_id, **values})
    return course


def reorder_lessons(sess: Session, course_id: int, lesson_ids: list[int], *, staff: Staff) -> list[Lesson]:
    """Put a course's lessons in the given order; every lesson of the course, each once. Audited."""
    course = get_course(sess, course_id, for_update=True)
    lessons = {lesson.id: lesson for lesson in lessons_of(sess, course.id)}
    if sorted(lesson_ids) != sorted(lessons):
        raise _invalid("lesson_ids", "must list every lesson of the course exactly once")
    ordered = [lessons[i] for i in lesson_ids]
    _renumber(ordered)
    sess.flush()
    record_audit(sess, staff.id, "training.lesson_reorder", f"course:{course.id}", {"lesson_ids": lesson_ids})
    return ordered


def move_lesson(sess: Session, lesson_id: int, step: int, *, staff: Staff) -> list[Lesson]:
    """Move a lesson one place up (step -1) or down (+1); at either end nothing moves."""
    lesson = get_lesson(sess, lesson_id)
    ids = [other.id for other in lessons_of(sess, lesson.course_id)]
    at = ids.index(lesson.id)
    to = at + step
    if 0 <= to < len(ids):
        ids[at], ids[to] = ids[to], ids[at]
    return reorder_lessons(sess, lesson.course_id, ids, staff=staff)


# -- quiz (staff) ---------------------------------------------------------------------------------


def questions_of(sess: Session, course_id: int) -> list[QuizQuestion]:
    return list(sess.scalars(select(QuizQuestion).where(QuizQuestion.course_id == course_id).order_by(QuizQuestion.position, QuizQuestion.id)))


def replace_quiz(sess: Session, course_id: int, *, pass_mark: int, questions: list[dict[str, Any]], staff: Staff) -> list[QuizQuestion]:
    """Set a course's quiz: its questions (none removes the quiz) and pass mark. Past attempts keep their result. Audited."""
    course = get_course(sess, course_id, for_update=True)
    for index, question in enumerate(questions):
        if not 0 <= question["answer"] < len(question["options"]):
            raise _invalid(f"questions.{index}.answer", "must be the index of one of the options")
    sess.execute(delete(QuizQuestion).where(QuizQuestion.course_id == course.id))
    rows = [
        QuizQuestion(course_id=course.id, position=position, prompt=q["prompt"], options=list(q["options"]), answer=q["answer"])
        for position, q in enumerate(questions, start=1)
    ]
    sess.add_all(rows)
    course.pass_mark = pass_mark
    sess.flush()
    record_audit(sess, staff.id, "training.quiz_set", f"course:{course.id}", {"questions": len(rows), "pass_mark": pass_mark})
    return rows


# -- members -----------------------------------------------------------------------------------------


def visible_courses_query(sess: Session, member_id: int) -> Select[Course]:
    """The published courses this member's audience sees (as promotion materials: tier, then wider)."""
    return select(Course).where(Course.state == CourseState.published, Course.audience >= audience_floor(sess, member_id))


def member_course(sess: Session, member_id: int, course_id: int) -> Course:
    """A published course this member may take; any other is "no such course" (drafts are not revealed)."""
    course = sess.get(Course, course_id)
    if course is None or course.state != CourseState.published or course.audience < audience_floor(sess, member_id):
        raise CourseNotFoundError()
    return course


def complete_lesson(sess: Session, member_id: int, lesson_id: int) -> tuple[LessonCompletion, bool]:
    """Mark a lesson of a course the member may take as done: (the completion, whether it is new).

    Idempotent: the unique (lesson, member) key lets concurrent requests race, and the loser reads the
    winner's row.
    """
    lesson = sess.get(Lesson, lesson_id)
    if lesson is None:
        raise LessonNotFoundError()
    try:
        member_course(sess, member_id, lesson.course_id)
    except CourseNotFoundError:
        raise LessonNotFoundError() from None
    stmt = select(LessonCompletion).where(LessonCompletion.lesson_id == lesson.id, LessonCompletion.member_id == member_id)
    existing = sess.scalars(stmt).first()
    if existing is not None:
        return existing, False
    completion = LessonCompletion(lesson_id=lesson.id, member_id=member_id, course_id=lesson.course_id)
    try:
        with sess.begin_nested():
            sess.add(completion)
    except IntegrityError:
        found = sess.scalars(stmt.execution_options(populate_existing=True)).first()
        if found is None:
            raise
        return found, False
    return completion, True


def attempts_left(sess: Session, member_id: int, course_id: int) -> int:
    """Quiz attempts the member has left on this course within the current hour."""
    since = utcnow() - QUIZ_WINDOW
    used = sess.scalar(
        select(func.count()).select_from(QuizAttempt).where(
            QuizAttempt.member_id == member_id, QuizAttempt.course_id == course_id, QuizAttempt.created_at > since
        )
    ) or 0
    return max(QUIZ_ATTEMPTS_PER_HOUR - used, 0)


def take_quiz(sess: Session, member_id: int, course_id: int, answers: list[int]) -> QuizAttempt:
    """Score the member's answers (one option index per question, in order) and record the attempt.

    At most QUIZ_ATTEMPTS_PER_HOUR attempts per course and hour: the member's row is locked while the
    attempts are counted, so concurrent submissions cannot pass the limit together.
    """
    course = member_course(sess, member_id, course_id)
    questions = questions_of(sess, course.id)
    if not questions:
        raise NoQuizError()
    if len(answers) != len(questions):
        raise _invalid("answers", f"must answer each of the {len(questions)} questions, in order")
    for index, (answer, question) in enumerate(zip(answers, questions)):
        if not 0 <= answer < len(question.options):
            raise _invalid(f"answers.{index}", f"must be an option index from 0 to {len(question.options) - 1}")
    sess.get(Member, member_id, with_for_update=True)
    if attempts_left(sess, member_id, course.id) <= 0:
        raise QuizAttemptsExceededError(data={"retry_after_seconds": int(QUIZ_WINDOW.total_seconds())})
    correct = sum(1 for answer, question in zip(answers, questions) if answer == question.answer)
    score = correct * 100 // len(questions)
    attempt = QuizAttempt(
        course_id=course.id, member_id=member_id, answers=list(answers), correct=correct, total=len(questions),
        score=score, passed=score >= course.pass_mark,
    )
    sess.add(attempt)
    sess.flush()
    return attempt


def member_attempt(sess: Session, member_id: int, attempt_id: int) -> QuizAttempt | None:
    """One of the member's own quiz attempts, or None (another member's is nobody's business)."""
    attempt = sess.get(QuizAttempt, attempt_id)
    return attempt if attempt is not None and attempt.member_id == member_id else None


def done_lessons(sess: Session, member_id: int, course_id: int) -> dict[int, Any]:
    """The member's completed lessons of a course: lesson id → when."""
    rows = sess.execute(
        select(LessonCompletion.lesson_id, LessonCompletion.completed_at).where(
            LessonCompletion.member_id == member_id, LessonCompletion.course_id == course_id
        )
    )
    return {lesson_id: at for lesson_id, at in rows}


def training_summary(sess: Session, member_id: int) -> dict[str, Any]:
    """A member's training record: the published courses their audience requires, how many they completed,
    and their last activity (a lesson marked done or a quiz taken) in any course."""
    floor = audience_floor(sess, member_id)
    required = list(sess.scalars(visible_courses_query(sess, member_id).order_by(*COURSE_ORDER)))
    found = queries.progress(sess, member_id, [c.id for c in required])
    last = sess.scalar(select(func.max(LessonCompletion.completed_at)).where(LessonCompletion.member_id == member_id))
    tried = sess.scalar(select(func.max(QuizAttempt.created_at)).where(QuizAttempt.member_id == member_id))
    moments = [m for m in (last, tried) if m is not None]
    return {
        "audience": floor,
        "distributor": floor != EVERY_MEMBER,
        "required": len(required),
        "completed": sum(1 for c in required if found[c.id]["complete"]),
        "courses": [(c, found[c.id]) for c in required],
        "last_activity": max(moments) if moments else None,
    }
