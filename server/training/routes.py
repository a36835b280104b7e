"""Training API: courses, lessons and quizzes for members (/api/v1/training) and staff (/admin/api/v1/training)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, current_app
from pydantic import Field, StringConstraints

from server import db
from server.accounts.auth import current_member, current_staff, member_required, staff_required
from server.accounts.models import StaffRole
from server.api import Body, NonBlank, Page, iso, parse_body, parse_query
from server.errors import envelope
from server.training import queries, services
from server.training.models import Course, CourseState, Lesson, QuizAttempt, QuizQuestion

bp = Blueprint("training", __name__, url_prefix="/api/v1/training")
admin_bp = Blueprint("training_admin", __name__, url_prefix="/admin/api/v1/training")

Title = Annotated[NonBlank, StringConstraints(max_length=64)]
Summary = Annotated[str, StringConstraints(max_length=255)]
#: Fits MySQL's 64 KiB TEXT even if every character takes utf8mb4's four bytes.
LessonText = Annotated[str, StringConstraints(max_length=16_000)]
VideoUrl = Annotated[str, StringConstraints(max_length=512)]
Audience = Annotated[int, Field(ge=1, le=3)]
PassMark = Annotated[int, Field(ge=1, le=100)]
SortKey = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
RowId = Annotated[int, Field(ge=1)]
Prompt = Annotated[NonBlank, StringConstraints(max_length=255)]
Option = Annotated[NonBlank, StringConstraints(max_length=64)]
#: The most options a question has, and the most questions and lessons a course has.
MAX_OPTIONS, MAX_QUESTIONS, MAX_LESSONS = 6, 20, 100
OptionIndex = Annotated[int, Field(ge=0, le=MAX_OPTIONS - 1)]


class CourseBody(Body):
    title: Title
    summary: Summary = ""
    audience: Audience = 2
    pass_mark: PassMark = 80
    sort: SortKey = 0


class CoursePatchBody(Body):
    title: Title | None = None
    summary: Summary | None = None
    audience: Audience | None = None
    pass_mark: PassMark | None = None
    sort: SortKey | None = None


class LessonBody(Body):
    kind: Literal["article", "video"]
    title: Title
    body: LessonText = ""
    video_url: VideoUrl = ""


class LessonPatchBody(Body):
    kind: Literal["article", "video"] | None = None
    title: Title | None = None
    body: LessonText | None = None
    video_url: VideoUrl | None = None


class LessonOrderBody(Body):
    lesson_ids: Annotated[list[RowId], Field(min_length=1, max_length=MAX_LESSONS)]


class QuestionBody(Body):
    prompt: Prompt
    options: Annotated[list[Option], Field(min_length=2, max_length=MAX_OPTIONS)]
    answer: OptionIndex


class QuizBody(Body):
    pass_mark: PassMark = 80
    questions: Annotated[list[QuestionBody], Field(max_length=MAX_QUESTIONS)]


class PublicationBody(Body):
    published: bool


class AnswersBody(Body):
    answers: Annotated[list[OptionIndex], Field(min_length=1, max_length=MAX_QUESTIONS)]


class AdminCourseQuery(Page):
    state: CourseState | None = None
    audience: int | None = Field(None, ge=1, le=3)


def patch_fields(body: Body) -> dict[str, Any]:
    """The fields a PATCH body sets; a null means unchanged."""
    return {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}


def video_hosts() -> tuple[str, ...]:
    return tuple(current_app.config["TRAINING_VIDEO_HOSTS"])


# -- serializers ---------------------------------------------------------------------------------


def serialize_lesson(lesson: Lesson) -> dict[str, Any]:
    return {
        "id": lesson.id,
        "position": lesson.position,
        "kind": lesson.kind.value,
        "title": lesson.title,
        "body": lesson.body,
        "body_html": str(services.render_article(lesson.body)),
        "video_url": lesson.video_url,
    }


def serialize_question(question: QuizQuestion, *, with_answer: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"id": question.id, "prompt": question.prompt, "options": list(question.options)}
    if with_answer:
        data["answer"] = question.answer
    return data


def _course_fields(course: Course) -> dict[str, Any]:
    return {"id": course.id, "title": course.title, "summary": course.summary, "audience": course.audience}


def serialize_member_course(course: Course, progress: dict[str, Any]) -> dict[str, Any]:
    return {**_course_fields(course), **{k: progress[k] for k in ("lesson_count", "done_count", "has_quiz", "quiz_passed", "complete")},
            "last_activity": iso(progress["last_activity"])}


def member_course_detail(course: Course, member_id: int) -> dict[str, Any]:
    """A course as a member takes it: lessons with done flags, the quiz without answers until they pass it."""
    sess = db.session()
    progress = queries.progress(sess, member_id, [course.id])[course.id]
    done = services.done_lessons(sess, member_id, course.id)
    data = serialize_member_course(course, progress)
    data["lessons"] = [
        {**serialize_lesson(lesson), "done": lesson.id in done, "completed_at": iso(done.get(lesson.id))}
        for lesson in services.lessons_of(sess, course.id)
    ]
    questions = services.questions_of(sess, course.id)
    data["quiz"] = None
    if questions:
        passed = progress["quiz_passed"]
        data["quiz"] = {
            "pass_mark": course.pass_mark,
            "questions": [serialize_question(q, with_answer=passed) for q in questions],
            "passed": passed,
            "attempts_left": services.attempts_left(sess, member_id, course.id),
        }
    return data


def serialize_admin_course(course: Course, stats: dict[str, int]) -> dict[str, Any]:
    return {
        **_course_fields(course),
        "state": course.state.value,
        "pass_mark": course.pass_mark,
        "sort": course.sort,
        "published_at": iso(course.published_at),
        "created_at": iso(course.created_at),
        "updated_at": iso(course.updated_at),
        "stats": stats,
    }


def admin_course_detail(course: Course) -> dict[str, Any]:
    sess = db.session()
    data = serialize_admin_course(course, queries.course_stats(sess, [course.id])[course.id])
    data["lessons"] = [serialize_lesson(lesson) for lesson in services.lessons_of(sess, course.id)]
    data["questions"] = [serialize_question(q, with_answer=True) for q in services.questions_of(sess, course.id)]
    return data


def serialize_attempt(attempt: QuizAttempt, course: Course) -> dict[str, Any]:
    sess = db.session()
    progress = queries.progress(sess, attempt.member_id, [course.id])[course.id]
    return {
        "attempt_id": attempt.id,
        "correct": attempt.correct,
        "total": attempt.total,
        "score": attempt.score,
        "pass_mark": course.pass_mark,
        "passed": attempt.passed,
        "attempts_left": services.attempts_left(sess, attempt.member_id, course.id),
        "course_complete": progress["complete"],
        # The right answers only once the member passed, so a failed attempt teaches nothing to copy.
        "answers": [q.answer for q in services.questions_of(sess, course.id)] if progress["quiz_passed"] else None,
    }


# -- members ---------------------------------------------------------------------------------------


@bp.get("/courses")
@member_required
def list_courses() -> Any:
    """The published courses for the member's audience, with their progress in each."""
    query = parse_query(Page)
    sess = db.session()
    member_id = current_member().id
    rows, total = db.paginate(
        sess, services.visible_courses_query(sess, member_id), offset=query.offset, limit=query.page_size, order_by=services.COURSE_ORDER
    )
    progress = queries.progress(sess, member_id, [c.id for c in rows])
    return envelope({"items": [serialize_member_course(c, progress[c.id]) for c in rows], "total": total, "page": query.page})


@bp.get("/courses/<int:course_id>")
@member_required
def get_course(course_id: int) -> Any:
    member_id = current_member().id
    course = services.member_course(db.session(), member_id, course_id)
    return envelope(member_course_detail(course, member_id))


@bp.post("/lessons/<int:lesson_id>/complete")
@member_required
def complete_lesson(lesson_id: int) -> Any:
    """Mark a lesson done; the same call again answers the same completion."""
    sess = db.session()
    member_id = current_member().id
    completion, _created = services.complete_lesson(sess, member_id, lesson_id)
    progress = queries.progress(sess, member_id, [completion.course_id])[completion.course_id]
    return envelope({
        "lesson_id": completion.lesson_id,
        "course_id": completion.course_id,
        "completed_at": iso(completion.completed_at),
        "course": {k: progress[k] for k in ("lesson_count", "done_count", "has_quiz", "quiz_passed", "complete")},
    })


@bp.post("/courses/<int:course_id>/quiz")
@member_required
def take_quiz(course_id: int) -> Any:
    """Answer a course's quiz: the score and whether it passed; the right answers only after a pass."""
    body = parse_body(AnswersBody)
    sess = db.session()
    attempt = services.take_quiz(sess, current_member().id, course_id, body.answers)
    return envelope(serialize_attempt(attempt, services.get_course(sess, course_id)), status=201)


# -- staff -----------------------------------------------------------------------------------------


@admin_bp.get("/courses")
@staff_required(StaffRole.operations)
def admin_list_courses() -> Any:
    query = parse_query(AdminCourseQuery)
    sess = db.session()
    stmt = services.courses_query(state=query.state, audience=query.audience)
    rows, total = db.paginate(sess, stmt, offset=query.offset, limit=query.page_size, order_by=services.COURSE_ORDER)
    stats = queries.course_stats(sess, [c.id for c in rows])
    return envelope({"items": [serialize_admin_course(c, stats[c.id]) for c in rows], "total": total, "page": query.page})


@admin_bp.post("/courses")
@staff_required(StaffRole.operations)
def admin_create_course() -> Any:
    body = parse_body(CourseBody)
    course = services.create_course(db.session(), body.model_dump(), staff=current_staff())
    return envelope(admin_course_detail(course), status=201)


@admin_bp.get("/courses/<int:course_id>")
@staff_required(StaffRole.operations)
def admin_get_course(course_id: int) -> Any:
    return envelope(admin_course_detail(services.get_course(db.session(), course_id)))


@admin_bp.patch("/courses/<int:course_id>")
@staff_required(StaffRole.operations)
def admin_patch_course(course_id: int) -> Any:
    body = parse_body(CoursePatchBody)
    course = services.update_course(db.session(), course_id, patch_fields(body), staff=current_staff())
    return envelope(admin_course_detail(course))


@admin_bp.post("/courses/<int:course_id>/publication")
@staff_required(StaffRole.operations)
def admin_publish_course(course_id: int) -> Any:
    body = parse_body(PublicationBody)
    course = services.set_published(db.session(), course_id, body.published, staff=current_staff())
    return envelope(admin_course_detail(course))


@admin_bp.post("/courses/<int:course_id>/lessons")
@staff_required(StaffRole.operations)
def admin_add_lesson(course_id: int) -> Any:
    body = parse_body(LessonBody)
    lesson = services.add_lesson(db.session(), course_id, body.model_dump(), staff=current_staff(), video_hosts=video_hosts())
    return envelope(serialize_lesson(lesson), status=201)


@admin_bp.patch("/lessons/<int:lesson_id>")
@staff_required(StaffRole.operations)
def admin_patch_lesson(lesson_id: int) -> Any:
    body = parse_body(LessonPatchBody)
    lesson = services.update_lesson(db.session(), lesson_id, patch_fields(body), staff=current_staff(), video_hosts=video_hosts())
    return envelope(serialize_lesson(lesson))


@admin_bp.delete("/lessons/<int:lesson_id>")
@staff_required(StaffRole.operations)
def admin_remove_lesson(lesson_id: int) -> Any:
    course = services.remove_lesson(db.session(), lesson_id, staff=current_staff())
    return envelope(admin_course_detail(course))


@admin_bp.put("/courses/<int:course_id>/lesson-order")
@staff_required(StaffRole.operations)
def admin_reorder_lessons(course_id: int) -> Any:
    body = parse_body(LessonOrderBody)
    services.reorder_lessons(db.session(), course_id, body.lesson_ids, staff=current_staff())
    return envelope(admin_course_detail(services.get_course(db.session(), course_id)))


@admin_bp.put("/courses/<int:course_id>/quiz")
@staff_required(StaffRole.operations)
def admin_set_quiz(course_id: int) -> Any:
    body = parse_body(QuizBody)
    services.replace_quiz(
        db.session(), course_id, pass_mark=body.pass_mark, questions=[q.model_dump() for q in body.questions], staff=current_staff()
    )
    return envelope(admin_course_detail(services.get_course(db.session(), course_id)))
