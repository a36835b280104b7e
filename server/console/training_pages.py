"""Training pages: the courses with their completion figures, and a course's editor (its fields, lessons
added, edited, moved and removed, the quiz, publishing).

Every form is checked with the training admin API's request models and saved by the training services,
which audit each change.
"""
from __future__ import annotations

from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for

from server import db
from server.console.forms import FIELD_LIMIT, checked, problems, whole_number
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.errors import AppError, ValidationError
from server.training import queries, services
from server.training import routes as api
from server.training.models import Course, CourseState, QuizQuestion

AUDIENCES = {1: "仅一级分销员", 2: "全部分销员", 3: "全部会员"}
STATES = {"draft": "草稿", "published": "已发布"}
KINDS = {"article": "图文", "video": "视频"}
HINTS = {
    "title": "请填写标题（最多 64 字）。",
    "summary": "简介最多 255 字。",
    "audience": "请选择学员范围。",
    "pass_mark": "及格线应为 1 到 100 之间的整数（百分比）。",
    "sort": "排序应为 -1,000,000 到 1,000,000 之间的整数。",
    "kind": "请选择课时类型。",
    "body": "图文课时需要正文（最多 16,000 字）。",
    "video_url": "视频课时需要 https:// 开头、在允许的视频网站上的链接；图文课时不填。",
    "questions": "每题需要题干（最多 255 字）和 2–6 个选项（每个最多 64 字），并用 * 标出唯一的正确选项；最多 20 题。",
}


def _course_fields() -> dict[str, Any]:
    return {
        "title": form_text("title", FIELD_LIMIT),
        "summary": form_text("summary", FIELD_LIMIT),
        "audience": whole_number(form_text("audience", 8)),
        "pass_mark": whole_number(form_text("pass_mark", 8) or "80"),
        "sort": whole_number(form_text("sort", 32) or "0"),
    }


@bp.get("/training")
@console_view("training")
def training(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """Courses by sort then newest, filtered by state, with how many members started and completed each."""
    sess = db.session()
    state_arg = request.args.get("state", "")
    state = CourseState(state_arg) if state_arg in STATES else None
    page = int_arg("page", 1)
    rows, total = db.paginate(
        sess, services.courses_query(state=state), offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=services.COURSE_ORDER, count_cap=COUNT_CAP
    )
    stats = queries.course_stats(sess, [c.id for c in rows])
    lessons = queries.lesson_counts(sess, [c.id for c in rows])
    return render_template(
        "console/training.html", rows=rows, stats=stats, lessons=lessons, state=state_arg if state else "", states=STATES,
        audiences=AUDIENCES, pager=pages(total), errors=errors or {}, form=request.form if errors else {},
    ), status


@bp.post("/training")
@console_view("training.edit")
def training_create() -> Any:
    body, errors = checked(api.CourseBody, _course_fields(), HINTS)
    if body is None:
        return training(errors=errors, status=422)
    course = services.create_course(db.session(), body.model_dump(), staff=current_staff())
    flash(f"已新建课程「{course.title}」，请添加课时。", "success")
    return redirect(url_for("console.training_course", course_id=course.id), 303)


def quiz_text(questions: list[QuizQuestion]) -> str:
    """The quiz as the editor's text: a question per block, its prompt first, then an option per line, the right one starred."""
    blocks = []
    for q in questions:
        lines = [q.prompt] + [("*" if i == q.answer else "") + option for i, option in enumerate(q.options)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def parse_quiz(text: str) -> list[dict[str, Any]] | str:
    """The editor's text as questions for ``api.QuizBody``, or what is wrong with it (in Chinese)."""
    questions = []
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    for number, block in enumerate(blocks, start=1):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        prompt, options = lines[0], lines[1:]
        starred = [i for i, option in enumerate(options) if option.startswith("*")]
        if len(starred) != 1:
            return f"第 {number} 题需要用 * 标出唯一的正确选项。"
        questions.append({"prompt": prompt, "options": [o.lstrip("*").strip() for o in options], "answer": starred[0]})
    return questions


def _course_page(course: Course, errors: dict[str, str] | None = None, status: int = 200, quiz_form: str | None = None) -> Any:
    sess = db.session()
    questions = services.questions_of(sess, course.id)
    return render_template(
        "console/training_course.html",
        course=course,
        lessons=services.lessons_of(sess, course.id),
        questions=questions,
        quiz=quiz_form if quiz_form is not None else quiz_text(questions),
        stats=queries.course_stats(sess, [course.id])[course.id],
        audiences=AUDIENCES,
        states=STATES,
        kinds=KINDS,
        hosts=current_app.config["TRAINING_VIDEO_HOSTS"],
        render_article=services.render_article,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


@bp.get("/training/<int:course_id>")
@console_view("training")
def training_course(course_id: int) -> Any:
    return _course_page(services.get_course(db.session(), course_id))


def _back(course_id: int, message: str) -> Any:
    flash(message, "success")
    return redirect(url_for("console.training_course", course_id=course_id), 303)


@bp.post("/training/<int:course_id>")
@console_view("training.edit")
def training_update(course_id: int) -> Any:
    course = services.get_course(db.session(), course_id)
    body, errors = checked(api.CoursePatchBody, _course_fields(), HINTS)
    if body is None:
        return _course_page(course, errors, 422)
    services.update_course(db.session(), course_id, api.patch_fields(body), staff=current_staff())
    return _back(course_id, "已保存课程。")


@bp.post("/training/<int:course_id>/publication")
@console_view("training.edit")
def training_publish(course_id: int) -> Any:
    course = services.get_course(db.session(), course_id)
    published = request.form.get("published") == "1"
    try:
        services.set_published(db.session(), course_id, published, staff=current_staff())
    except AppError as error:
        return _course_page(course, {"publication": "课程至少需要一个课时才能发布。"}, error.http_status)
    return _back(course_id, "已发布课程。" if published else "已撤回为草稿。")


def _lesson_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {k: form_text(k, FIELD_LIMIT) for k in ("kind", "title", "body", "video_url")}
    fields["kind"] = fields["kind"][:16]
    return fields


@bp.post("/training/<int:course_id>/lessons")
@console_view("training.edit")
def training_add_lesson(course_id: int) -> Any:
    course = services.get_course(db.session(), course_id)
    body, errors = checked(api.LessonBody, _lesson_fields(), HINTS)
    if body is None:
        return _course_page(course, {f"new-{k}": v for k, v in errors.items()}, 422)
    try:
        services.add_lesson(db.session(), course_id, body.model_dump(), staff=current_staff(), video_hosts=current_app.config["TRAINING_VIDEO_HOSTS"])
    except ValidationError as error:
        return _course_page(course, {f"new-{k}": v for k, v in problems(error, HINTS).items()}, error.http_status)
    return _back(course_id, f"已添加课时「{body.title}」。")


@bp.post("/training/lessons/<int:lesson_id>")
@console_view("training.edit")
def training_update_lesson(lesson_id: int) -> Any:
    sess = db.session()
    lesson = services.get_lesson(sess, lesson_id)
    course = services.get_course(sess, lesson.course_id)
    body, errors = checked(api.LessonPatchBody, _lesson_fields(), HINTS)
    if body is None:
        return _course_page(course, {f"{lesson_id}-{k}": v for k, v in errors.items()}, 422)
    try:
        services.update_lesson(sess, lesson_id, api.patch_fields(body), staff=current_staff(), video_hosts=current_app.config["TRAINING_VIDEO_HOSTS"])
    except ValidationError as error:
        return _course_page(course, {f"{lesson_id}-{k}": v for k, v in problems(error, HINTS).items()}, error.http_status)
    return _back(course.id, "已保存课时。")


@bp.post("/training/lessons/<int:lesson_id>/move")
@console_view("training.edit")
def training_move_lesson(lesson_id: int) -> Any:
    lesson = services.get_lesson(db.session(), lesson_id)
    services.move_lesson(db.session(), lesson_id, -1 if request.form.get("direction") == "up" else 1, staff=current_staff())
    return _back(lesson.course_id, "已调整课时顺序。")


@bp.post("/training/lessons/<int:lesson_id>/remove")
@console_view("training.edit")
def training_remove_lesson(lesson_id: int) -> Any:
    sess = db.session()
    lesson = services.get_lesson(sess, lesson_id)
    course = services.get_course(sess, lesson.course_id)
    try:
        services.remove_lesson(sess, lesson_id, staff=current_staff())
    except AppError as error:
        return _course_page(course, {"publication": "已发布的课程至少保留一个课时；请先撤回为草稿。"}, error.http_status)
    return _back(course.id, "已删除课时，学员对它的完成记录一并删除。")


@bp.post("/training/<int:course_id>/quiz")
@console_view("training.edit")
def training_quiz(course_id: int) -> Any:
    course = services.get_course(db.session(), course_id)
    text = request.form.get("quiz", "")[:FIELD_LIMIT]
    parsed = parse_quiz(text)
    if isinstance(parsed, str):
        return _course_page(course, {"questions": parsed}, 422, quiz_form=text)
    body, errors = checked(api.QuizBody, {"pass_mark": whole_number(form_text("pass_mark", 8) or "80"), "questions": parsed}, HINTS)
    if body is None:
        return _course_page(course, errors, 422, quiz_form=text)
    services.replace_quiz(db.session(), course_id, pass_mark=body.pass_mark, questions=[q.model_dump() for q in body.questions], staff=current_staff())
    return _back(course_id, f"已保存测验（{len(body.questions)} 题）。" if body.questions else "已移除测验。")
