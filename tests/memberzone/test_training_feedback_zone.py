"""Training and feedback in the member zone: courses with progress, marking lessons done, the quiz (no
answers before a pass), and the feedback form with the member's past items and the staff's replies."""
from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select

from server import db
from server.feedback.models import FeedbackItem
from server.training.models import LessonCompletion, QuizAttempt
from server.training.services import QUIZ_ATTEMPTS_PER_HOUR
from tests.memberzone.conftest import form_token
from tests.training.conftest import ADMIN, QUIZ

ZONE = "/h5/member"


def _course(client: FlaskClient, ops: dict[str, str], audience: int = 3, quiz: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    course_id = client.post(f"{ADMIN}/courses", json={"title": "合规推广", "audience": audience, "pass_mark": 60}, headers=ops).get_json()["data"]["id"]
    client.post(f"{ADMIN}/courses/{course_id}/lessons", json={"kind": "article", "title": "不能说的话", "body": "不得宣称**治疗**功效。\n\n<b>x</b>"}, headers=ops)
    client.post(f"{ADMIN}/courses/{course_id}/lessons", json={"kind": "video", "title": "门店实拍", "video_url": "https://v.qq.com/x/1.html"}, headers=ops)
    if quiz:
        client.put(f"{ADMIN}/courses/{course_id}/quiz", json={"pass_mark": 60, "questions": quiz}, headers=ops)
    assert client.post(f"{ADMIN}/courses/{course_id}/publication", json={"published": True}, headers=ops).status_code == 200
    return client.get(f"{ADMIN}/courses/{course_id}", headers=ops).get_json()["data"]


def _count(app: Any, model: Any) -> int:
    with app.app_context():
        return db.session().scalar(select(func.count()).select_from(model)) or 0


def test_courses_lessons_and_marking_done(app, client, zone, ops) -> None:
    course = _course(client, ops)
    _course(client, ops, audience=1)  # for tier-1 distributors only: carol does not see it
    browser, _carol = zone("carol")
    listed = browser.get(f"{ZONE}/training").get_data(as_text=True)
    assert listed.count("合规推广") == 1 and "已学 0 / 2 课时" in listed
    assert "推广员培训" in browser.get(ZONE).get_data(as_text=True)  # the home page links to it
    page = browser.get(f"{ZONE}/training/{course['id']}").get_data(as_text=True)
    assert "<strong>治疗</strong>" in page and "&lt;b&gt;x&lt;/b&gt;" in page and "https://v.qq.com/x/1.html" in page
    first = course["lessons"][0]["id"]
    token = form_token(page)
    done = browser.post(f"{ZONE}/training/lessons/{first}/complete", data={"form_token": token})
    assert done.status_code == 303 and f"/training/{course['id']}" in done.headers["Location"]
    again = browser.post(f"{ZONE}/training/lessons/{first}/complete", data={"form_token": token})
    assert again.status_code == 303 and _count(app, LessonCompletion) == 1
    assert "已学完" in browser.get(f"{ZONE}/training/{course['id']}").get_data(as_text=True)
    # Without the page's token nothing is marked.
    assert browser.post(f"{ZONE}/training/lessons/{course['lessons'][1]['id']}/complete", data={}).status_code == 400
    assert _count(app, LessonCompletion) == 1


def test_a_course_outside_the_audience_or_a_bad_address_is_not_found(client, zone, ops) -> None:
    tier1 = _course(client, ops, audience=1)
    browser, _carol = zone("carol")
    for path in (f"/training/{tier1['id']}", "/training/abc", "/training/0", "/training/99999999999999999999"):
        response = browser.get(ZONE + path)
        assert response.status_code == 404 and response.mimetype == "text/html", path
    token = form_token(browser.get(f"{ZONE}/feedback").get_data(as_text=True))
    refused = browser.post(f"{ZONE}/training/lessons/{tier1['lessons'][0]['id']}/complete", data={"form_token": token})
    assert refused.status_code == 404


def test_the_quiz_scores_shows_answers_only_after_a_pass_and_keeps_its_limit(app, client, zone, ops) -> None:
    course = _course(client, ops, quiz=QUIZ)
    browser, _carol = zone("carol")
    page = browser.get(f"{ZONE}/training/{course['id']}").get_data(as_text=True)
    assert "正确答案" not in page
    questions = course["questions"]
    token = form_token(page)
    wrong = {"form_token": token} | {f"q{q['id']}": "0" for q in questions}
    failed = browser.post(f"{ZONE}/training/{course['id']}/quiz", data=wrong)
    assert failed.status_code == 303 and "attempt=" in failed.headers["Location"]
    shown = browser.get(failed.headers["Location"]).get_data(as_text=True)
    assert "答对 1 / 3 题" in shown and "未通过" in shown and "正确答案" not in shown
    missing = browser.post(f"{ZONE}/training/{course['id']}/quiz", data={"form_token": token, f"q{questions[0]['id']}": "1"})
    assert missing.status_code == 422 and "请回答每一道题" in missing.get_data(as_text=True)
    out_of_range = browser.post(f"{ZONE}/training/{course['id']}/quiz", data=wrong | {f"q{questions[0]['id']}": "9"})
    assert out_of_range.status_code == 422
    assert _count(app, QuizAttempt) == 1
    right = {"form_token": token} | {f"q{q['id']}": str(q["answer"]) for q in questions}
    passed = browser.post(f"{ZONE}/training/{course['id']}/quiz", data=right)
    shown = browser.get(passed.headers["Location"]).get_data(as_text=True)
    assert "答对 3 / 3 题" in shown and "通过！" in shown and "正确答案：不能" in shown
    for _ in range(QUIZ_ATTEMPTS_PER_HOUR - 2):
        assert browser.post(f"{ZONE}/training/{course['id']}/quiz", data=right).status_code == 303
    limited = browser.post(f"{ZONE}/training/{course['id']}/quiz", data=right)
    assert limited.status_code == 429 and "次数已用完" in limited.get_data(as_text=True)
    assert _count(app, QuizAttempt) == QUIZ_ATTEMPTS_PER_HOUR


def test_feedback_and_a_report_by_scene_with_the_staff_reply(app, client, zone, distributor, share_scene, ops) -> None:
    alice = distributor("alice")
    browser, _carol = zone("carol")
    page = browser.get(f"{ZONE}/feedback").get_data(as_text=True)
    assert "还没有提交过反馈" in page and "举报推广员 · 夸大或虚假宣传" in page
    token = form_token(page)
    sent = browser.post(f"{ZONE}/feedback", data={"form_token": token, "choice": "feedback:suggestion", "body": "希望增加夜间配送", "contact": ""})
    assert sent.status_code == 303 and "sent=1" in sent.headers["Location"]
    scene = share_scene(alice["user"]["id"])
    report = browser.post(f"{ZONE}/feedback", data={"form_token": token, "choice": "report:false_advertising", "body": "说产品能治病", "scene": scene})
    assert report.status_code == 303
    with app.app_context():
        reported = db.session().scalars(select(FeedbackItem.reported_member_id).where(FeedbackItem.kind == "report")).one()
    assert reported == alice["user"]["id"]
    item_id = client.get("/admin/api/v1/feedback?kind=report", headers=ops).get_json()["data"]["items"][0]["id"]
    client.post(f"/admin/api/v1/feedback/{item_id}/transitions", json={"action": "start"}, headers=ops)
    client.post(f"/admin/api/v1/feedback/{item_id}/transitions", json={"action": "resolve", "reply": "已责令其停止夸大宣传"}, headers=ops)
    mine = browser.get(f"{ZONE}/feedback?sent=1").get_data(as_text=True)
    assert "已收到" in mine and "客服回复：已责令其停止夸大宣传" in mine and "已解决" in mine and "希望增加夜间配送" in mine


def test_bad_feedback_forms_show_the_reason_and_store_nothing(app, zone, wx_login) -> None:
    dave = wx_login("dave")
    browser, _carol = zone("carol")
    token = form_token(browser.get(f"{ZONE}/feedback").get_data(as_text=True))
    for data, message in (
        ({"choice": "feedback:suggestion", "body": "  "}, "请填写内容"),
        ({"choice": "feedback:harassment", "body": "x"}, "请选择类型"),
        ({"choice": "x" * 3000, "body": "x"}, "请选择类型"),
        ({"choice": "report:harassment", "body": "x"}, "推广码"),
        ({"choice": "report:harassment", "body": "x", "scene": "nosuchcode"}, "没有找到这个推广码"),
        ({"choice": "feedback:other", "body": "x" * 2001}, "请填写内容"),
        ({"choice": "feedback:other", "body": "x", "contact": "c" * 65}, "联系方式"),
    ):
        response = browser.post(f"{ZONE}/feedback", data={"form_token": token} | data)
        assert response.status_code == 422 and message in response.get_data(as_text=True), data
    assert _count(app, FeedbackItem) == 0
    assert browser.post(f"{ZONE}/feedback", data={"choice": "feedback:other", "body": "x"}).status_code == 400
    assert _count(app, FeedbackItem) == 0
    assert dave  # a member who is not the visitor has nothing to do with the form


def test_feedback_from_the_zone_counts_against_the_same_hourly_limit(app_factory, wx_login) -> None:
    from tests.memberzone.conftest import follow_oauth

    app = app_factory(FEEDBACK_RATE_LIMIT=1)
    client = app.test_client()
    assert client.post("/api/v1/auth/wx-login", json={"code": "sandbox:carol"}).status_code == 200
    browser = app.test_client()
    follow_oauth(browser, browser.get(ZONE), "carol")
    token = form_token(browser.get(f"{ZONE}/feedback").get_data(as_text=True))
    data = {"form_token": token, "choice": "feedback:service", "body": "客服回复慢"}
    assert browser.post(f"{ZONE}/feedback", data=data).status_code == 303
    limited = browser.post(f"{ZONE}/feedback", data=data)
    assert limited.status_code == 429 and "提交太频繁" in limited.get_data(as_text=True)
    assert _count(app, FeedbackItem) == 1
