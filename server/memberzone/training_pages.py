"""Training in the member zone: the courses for the member's audience with their progress, and a course
page with its lessons (each marked done with a tap) and its quiz. The same services as the mini-program's
``/api/v1/training`` routes: what the member may take, marking a lesson done once, scoring a quiz within
the hourly attempts, and never showing the right answers before a pass."""
from __future__ import annotations

from typing import Any

from flask import redirect, request, url_for

from server import db
from server.accounts.models import Member
from server.errors import AppError
from server.memberzone.routes import Pager, add_section, bp, member_error, page, page_arg, zone_view
from server.training import queries, services
from server.training.errors import CourseNotFoundError, LessonNotFoundError
from server.training.models import Course

#: A path id that can name a row: any other text is the zone's "not found" card, before sign-in.
MAX_ID = 2**63


def _row_id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < MAX_ID else None


@bp.get("/training")
@zone_view
def training(member: Member) -> Any:
    sess = db.session()
    pager = Pager(page_arg(), 0)
    rows, total = db.paginate(
        sess, services.visible_courses_query(sess, member.id), offset=pager.offset, limit=pager.size, order_by=services.COURSE_ORDER
    )
    return page(
        "memberzone/training.html",
        tab="home",
        rows=rows,
        progress=queries.progress(sess, member.id, [c.id for c in rows]),
        pager=Pager(pager.page, total),
    )


@bp.get("/training/<course_id>")
def training_course(course_id: str) -> Any:
    found = _row_id(course_id)
    if found is None:
        raise CourseNotFoundError()
    return _course(found)


@zone_view
def _course(member: Member, course_id: int, status: int = 200, error: str = "") -> Any:
    sess = db.session()
    course = services.member_course(sess, member.id, course_id)
    attempt_arg = _row_id(request.args.get("attempt", ""))
    return _course_page(member, course, status, error, services.member_attempt(sess, member.id, attempt_arg) if attempt_arg else None)


def _course_page(member: Member, course: Course, status: int = 200, error: str = "", attempt: Any = None) -> Any:
    sess = db.session()
    progress = queries.progress(sess, member.id, [course.id])[course.id]
    return page(
        "memberzone/training_course.html",
        status,
        tab="home",
        course=course,
        progress=progress,
        lessons=services.lessons_of(sess, course.id),
        done=services.done_lessons(sess, member.id, course.id),
        questions=services.questions_of(sess, course.id),
        attempts_left=services.attempts_left(sess, member.id, course.id),
        attempt=attempt,
        render_article=services.render_article,
        error=error,
    )


@bp.post("/training/lessons/<lesson_id>/complete")
def training_complete(lesson_id: str) -> Any:
    found = _row_id(lesson_id)
    if found is None:
        raise LessonNotFoundError()
    return _complete(found)


@zone_view
def _complete(member: Member, lesson_id: int) -> Any:
    """Mark a lesson done (again changes nothing) and go back to it."""
    completion, _created = services.complete_lesson(db.session(), member.id, lesson_id)
    return redirect(url_for("memberzone.training_course", course_id=completion.course_id, _anchor=f"lesson-{lesson_id}"), code=303)


@bp.post("/training/<course_id>/quiz")
def training_quiz(course_id: str) -> Any:
    found = _row_id(course_id)
    if found is None:
        raise CourseNotFoundError()
    return _quiz(found)


@zone_view
def _quiz(member: Member, course_id: int) -> Any:
    """Score the answers chosen on the course page; the page shows the result (and the right answers once passed)."""
    sess = db.session()
    course = services.member_course(sess, member.id, course_id)
    questions = services.questions_of(sess, course.id)
    answers = []
    for question in questions:
        chosen = request.form.get(f"q{question.id}", "")
        if not (chosen.isascii() and chosen.isdigit() and len(chosen) <= 2):
            return _course_page(member, course, 422, "请回答每一道题后再提交。")
        answers.append(int(chosen))
    try:
        attempt = services.take_quiz(sess, member.id, course.id, answers)
    except AppError as error:
        sess.rollback()
        message = "今天这门课的测验次数已用完，请一小时后再试。" if error.http_status == 429 else member_error(error)
        return _course_page(member, services.member_course(sess, member.id, course_id), error.http_status, message)
    return redirect(url_for("memberzone.training_course", course_id=course.id, attempt=attempt.id, _anchor="quiz"), code=303)


add_section("memberzone.training", "推广员培训", "课程、学习进度与测验")
