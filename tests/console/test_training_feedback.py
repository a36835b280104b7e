"""The training and feedback pages: building a course, the feedback queue, and what a distributor's record shows."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server import db
from server.training.models import Course, Lesson, QuizQuestion
from tests.console.conftest import Console
from tests.distribution.conftest import apply, decide, distributor, ops, sess, share_scene  # noqa: F401

QUIZ_TEXT = "积分能否兑换现金？\n能\n*不能\n\n可以夸大功效吗？\n*不可以\n可以"


def _course(app: Flask) -> Any:
    with app.app_context():
        return db.session().execute(select(Course.id, Course.title, Course.state)).one()


def _lessons(app: Flask) -> list[Any]:
    with app.app_context():
        return list(db.session().execute(select(Lesson.id, Lesson.title).order_by(Lesson.position)))


def test_operations_build_and_publish_a_course(app: Flask, console: Callable[..., Console]) -> None:
    browser = console("operations")
    assert "还没有培训课程" in browser.get("/console/training").text
    created = browser.post("/console/training", {"title": "合规推广", "summary": "不夸大", "audience": "2", "pass_mark": "60", "sort": "0"})
    assert created.status_code == 303
    course = _course(app)
    page = f"/console/training/{course.id}"
    assert browser.get(page).status_code == 200
    # An empty course cannot be published.
    empty = browser.post(f"{page}/publication", {"published": "1"})
    assert empty.status_code == 409 and "至少需要一个课时" in empty.text
    assert browser.post(f"{page}/lessons", {"kind": "article", "title": "第一课", "body": "**不得**夸大\n\n<script>x</script>"}).status_code == 303
    assert browser.post(f"{page}/lessons", {"kind": "video", "title": "第二课", "video_url": "https://v.qq.com/x/1.html"}).status_code == 303
    shown = browser.get(page).text
    assert "<strong>不得</strong>" in shown and "&lt;script&gt;x&lt;/script&gt;" in shown and "<script>x</script>" not in shown
    first, second = _lessons(app)
    assert browser.post(f"/console/training/lessons/{second.id}/move", {"direction": "up"}).status_code == 303
    assert [lesson.id for lesson in _lessons(app)] == [second.id, first.id]
    assert browser.post(f"/console/training/lessons/{first.id}", {"kind": "article", "title": "第一课（改）", "body": "新正文", "video_url": ""}).status_code == 303
    assert _lessons(app)[1].title == "第一课（改）"
    assert browser.post(f"{page}/quiz", {"quiz": QUIZ_TEXT, "pass_mark": "50"}).status_code == 303
    with app.app_context():
        questions = [tuple(row) for row in db.session().execute(select(QuizQuestion.prompt, QuizQuestion.options, QuizQuestion.answer).order_by(QuizQuestion.position))]
    assert questions == [("积分能否兑换现金？", ["能", "不能"], 1), ("可以夸大功效吗？", ["不可以", "可以"], 0)]
    assert "*不能" in browser.get(page).text  # the editor shows the quiz back in its own format
    assert browser.post(f"{page}/publication", {"published": "1"}).status_code == 303
    assert _course(app).state.value == "published"
    assert browser.post(f"/console/training/lessons/{first.id}/remove", {}).status_code == 303
    assert [lesson.id for lesson in _lessons(app)] == [second.id]
    listed = browser.get("/console/training").text
    assert "合规推广" in listed and "已发布" in listed


@pytest.mark.parametrize("path,data,message", [
    ("lessons", {"kind": "video", "title": "v", "video_url": "https://evil.example.com/v.mp4"}, "允许的视频网站"),
    ("lessons", {"kind": "article", "title": "a", "body": ""}, "图文课时需要正文"),
    ("lessons", {"kind": "x" * 40, "title": "a", "body": "b"}, "请选择课时类型"),
    ("quiz", {"quiz": "问题\n选项一\n选项二", "pass_mark": "80"}, "标出唯一的正确选项"),
    ("quiz", {"quiz": "问题\n*只有一个选项", "pass_mark": "80"}, "2–6 个选项"),
    ("quiz", {"quiz": "问题\n*a\nb", "pass_mark": "101"}, "及格线"),
    ("", {"title": "", "audience": "9", "pass_mark": "x", "sort": "y"}, "请填写标题"),
])
def test_bad_course_forms_answer_with_the_problem_and_change_nothing(app: Flask, console: Callable[..., Console], path: str, data: dict[str, str], message: str) -> None:
    browser = console("operations")
    browser.post("/console/training", {"title": "课程", "audience": "2"})
    course = _course(app)
    response = browser.post(f"/console/training/{course.id}" + (f"/{path}" if path else ""), data)
    assert response.status_code == 422 and message in response.text
    assert _lessons(app) == [] and _course(app).title == "课程"


def test_finance_reaches_neither_training_nor_feedback(console: Callable[..., Console]) -> None:
    finance = console("finance")
    for path in ("/console/training", "/console/feedback", "/console/training/1", "/console/feedback/1"):
        response = finance.get(path)
        assert response.status_code == 403 and "无权访问" in response.text, path
    assert finance.post("/console/training", {"title": "x"}).status_code == 403


def _report(client: FlaskClient, member: dict[str, Any], reported_id: int) -> int:
    body = {"kind": "report", "category": "false_advertising", "body": "宣称包治百病", "distributor_member_id": reported_id}
    response = client.post("/api/v1/feedback", json=body, headers=member["headers"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()["data"]["id"]


def test_staff_handle_a_report_in_the_queue(client: FlaskClient, console: Callable[..., Console], distributor, wx_login) -> None:
    alice = distributor("alice")
    carol = wx_login("carol")
    item_id = _report(client, carol, alice["user"]["id"])
    browser = console("operations", username="ops-a")
    queue = browser.get("/console/feedback?state=new&kind=report").text
    assert f'id="feedback-{item_id}"' in queue and "夸大或虚假宣传" in queue
    assert f'id="feedback-{item_id}"' not in browser.get("/console/feedback?kind=feedback").text
    page = browser.get(f"/console/feedback/{item_id}").text
    assert f"/console/distributors/{alice['distributor']['id']}" in page  # the way to freeze them
    assert browser.post(f"/console/feedback/{item_id}/notes", {"note": "已电话核实"}).status_code == 303
    assert browser.post(f"/console/feedback/{item_id}/notes", {"note": ""}).status_code == 422
    assert browser.post(f"/console/feedback/{item_id}/assign", {"assignee_id": "abc"}).status_code == 422
    assert browser.post(f"/console/feedback/{item_id}/transitions", {"action": "start", "expected_state": "new"}).status_code == 303
    # A colleague's page still showed "new": their move is refused with the current state.
    other = console("operations", username="ops-b")
    stale = other.post(f"/console/feedback/{item_id}/transitions", {"action": "dismiss", "expected_state": "new"})
    assert stale.status_code == 409 and "处理中" in stale.text
    bad = browser.post(f"/console/feedback/{item_id}/transitions", {"action": "explode", "expected_state": "in_progress"})
    assert bad.status_code == 422
    done = browser.post(f"/console/feedback/{item_id}/transitions", {"action": "resolve", "expected_state": "in_progress", "reply": "已责令其停止夸大宣传"})
    assert done.status_code == 303
    page = browser.get(f"/console/feedback/{item_id}").text
    assert "已电话核实" in page and "已解决" in page
    mine = client.get("/api/v1/feedback", headers=carol["headers"]).get_json()["data"]["items"][0]
    assert mine["state"] == "resolved" and mine["reply"] == "已责令其停止夸大宣传"
    assert "已电话核实" not in str(mine)


def test_the_distributor_record_shows_training_and_reports(app: Flask, client: FlaskClient, console: Callable[..., Console], distributor, wx_login, ops) -> None:
    alice = distributor("alice")
    admin = "/admin/api/v1/training/courses"
    course_ids = []
    for title in ("产品知识", "合规推广"):
        course_id = client.post(admin, json={"title": title, "audience": 2}, headers=ops).get_json()["data"]["id"]
        client.post(f"{admin}/{course_id}/lessons", json={"kind": "article", "title": "一", "body": "正文"}, headers=ops)
        client.post(f"{admin}/{course_id}/publication", json={"published": True}, headers=ops)
        course_ids.append(course_id)
    lesson_id = client.get(f"{admin}/{course_ids[0]}", headers=ops).get_json()["data"]["lessons"][0]["id"]
    assert client.post(f"/api/v1/training/lessons/{lesson_id}/complete", headers=alice["headers"]).status_code == 200
    carol = wx_login("carol")
    report_ids = [_report(client, carol, alice["user"]["id"]) for _ in range(2)]
    browser = console("operations")
    page = browser.get(f"/console/distributors/{alice['distributor']['id']}").text
    training = page[page.index('id="training"'):page.index('id="reports"')]
    assert "1 / 2" in training and "产品知识</a>：已完成" in training and "合规推广</a>：0 / 1 课时" in training
    reports = page[page.index('id="reports"'):]
    assert "共 2 条" in reports and all(f"/console/feedback/{i}" in reports for i in report_ids)
    assert f"reported={alice['user']['id']}" in reports
