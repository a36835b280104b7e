"""Training: who sees which course, marking lessons done, quizzes, and the admin API that builds courses."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server import db
from server.accounts.models import AuditEntry
from server.training.models import LessonCompletion, QuizAttempt
from server.training.services import QUIZ_ATTEMPTS_PER_HOUR, render_article
from tests.training.conftest import ADMIN, QUIZ

API = "/api/v1/training"


def _titles(client: FlaskClient, member: dict[str, Any]) -> set[str]:
    response = client.get(f"{API}/courses", headers=member["headers"])
    assert response.status_code == 200, response.get_json()
    return {c["title"] for c in response.get_json()["data"]["items"]}


def test_courses_follow_the_audience_of_the_member(client, course, distributor, wx_login, share_scene) -> None:
    course("一级专享", audience=1)
    course("全体分销员", audience=2)
    course("全体会员", audience=3)
    course("草稿", audience=3, published=False)
    alice = distributor("alice")
    bob = distributor("bob", scene=share_scene(alice["user"]["id"]))
    assert bob["distributor"]["tier"] == 2
    carol = wx_login("carol")
    assert _titles(client, alice) == {"一级专享", "全体分销员", "全体会员"}
    assert _titles(client, bob) == {"全体分销员", "全体会员"}
    assert _titles(client, carol) == {"全体会员"}


def test_a_course_outside_the_audience_or_a_draft_is_not_found(client, course, distributor, wx_login) -> None:
    tier1 = course("一级专享", audience=1)
    draft = course("草稿", audience=3, published=False)
    carol = wx_login("carol")
    for c in (tier1, draft):
        response = client.get(f"{API}/courses/{c['id']}", headers=carol["headers"])
        assert response.status_code == 404 and response.get_json()["code"] == 40485
        complete = client.post(f"{API}/lessons/{c['lessons'][0]['id']}/complete", headers=carol["headers"])
        assert complete.status_code == 404 and complete.get_json()["code"] == 40486
    alice = distributor("alice")
    assert client.get(f"{API}/courses/{tier1['id']}", headers=alice["headers"]).status_code == 200


def test_a_frozen_distributor_sees_only_what_every_member_sees(client, course, distributor, decide) -> None:
    course("全体分销员", audience=2)
    alice = distributor("alice")
    assert _titles(client, alice) == {"全体分销员"}
    assert decide(alice["distributor"]["id"], "freeze", reason="夸大宣传").status_code == 200
    assert _titles(client, alice) == set()


def test_marking_a_lesson_done_is_idempotent_and_completes_a_course_without_quiz(client, app, course, distributor) -> None:
    c = course(lessons=2)
    alice = distributor("alice")
    first, second = (lesson["id"] for lesson in c["lessons"])
    one = client.post(f"{API}/lessons/{first}/complete", headers=alice["headers"])
    again = client.post(f"{API}/lessons/{first}/complete", headers=alice["headers"])
    assert one.status_code == again.status_code == 200
    assert one.get_json()["data"]["completed_at"] == again.get_json()["data"]["completed_at"]
    assert again.get_json()["data"]["course"] == {"lesson_count": 2, "done_count": 1, "has_quiz": False, "quiz_passed": False, "complete": False}
    last = client.post(f"{API}/lessons/{second}/complete", headers=alice["headers"]).get_json()["data"]
    assert last["course"]["complete"] is True
    detail = client.get(f"{API}/courses/{c['id']}", headers=alice["headers"]).get_json()["data"]
    assert [lesson["done"] for lesson in detail["lessons"]] == [True, True] and detail["complete"] is True and detail["quiz"] is None
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(LessonCompletion)) == 2


def test_concurrent_completions_of_one_lesson_make_one_row(app, client, course, distributor) -> None:
    c = course(lessons=1)
    alice = distributor("alice")
    lesson_id = c["lessons"][0]["id"]
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def mark() -> None:
        with app.test_client() as own:
            barrier.wait()
            statuses.append(own.post(f"{API}/lessons/{lesson_id}/complete", headers=alice["headers"]).status_code)

    threads = [threading.Thread(target=mark) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 4
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(LessonCompletion)) == 1


def test_a_course_with_a_quiz_completes_only_after_a_pass(client, course, distributor) -> None:
    c = course(lessons=1, quiz=QUIZ, pass_mark=60)
    alice = distributor("alice")
    client.post(f"{API}/lessons/{c['lessons'][0]['id']}/complete", headers=alice["headers"])
    detail = client.get(f"{API}/courses/{c['id']}", headers=alice["headers"]).get_json()["data"]
    assert detail["complete"] is False and detail["has_quiz"] is True
    # Before a pass no question carries its answer.
    assert all("answer" not in q for q in detail["quiz"]["questions"]) and detail["quiz"]["pass_mark"] == 60

    failed = client.post(f"{API}/courses/{c['id']}/quiz", json={"answers": [1, 1, 0]}, headers=alice["headers"])
    assert failed.status_code == 201
    data = failed.get_json()["data"]
    assert (data["correct"], data["total"], data["score"], data["passed"]) == (1, 3, 33, False)
    assert data["answers"] is None and data["course_complete"] is False
    assert "answer" not in failed.get_data(as_text=True).replace('"answers"', "")

    passed = client.post(f"{API}/courses/{c['id']}/quiz", json={"answers": [1, 0, 0]}, headers=alice["headers"]).get_json()["data"]
    assert (passed["correct"], passed["score"], passed["passed"]) == (2, 66, True)
    assert passed["answers"] == [1, 0, 2] and passed["course_complete"] is True
    detail = client.get(f"{API}/courses/{c['id']}", headers=alice["headers"]).get_json()["data"]
    assert detail["complete"] is True and [q["answer"] for q in detail["quiz"]["questions"]] == [1, 0, 2]


def test_the_pass_mark_is_inclusive(client, course, distributor) -> None:
    c = course(lessons=1, quiz=QUIZ[:2], pass_mark=50)
    alice = distributor("alice")
    data = client.post(f"{API}/courses/{c['id']}/quiz", json={"answers": [1, 1]}, headers=alice["headers"]).get_json()["data"]
    assert data["score"] == 50 and data["passed"] is True
    assert data["course_complete"] is False  # the lesson is not done yet


def test_quiz_attempts_are_limited_per_hour_and_recorded(app, client, course, distributor) -> None:
    c = course(lessons=1, quiz=QUIZ)
    alice = distributor("alice")
    for n in range(QUIZ_ATTEMPTS_PER_HOUR):
        response = client.post(f"{API}/courses/{c['id']}/quiz", json={"answers": [0, 1, 0]}, headers=alice["headers"])
        assert response.status_code == 201 and response.get_json()["data"]["attempts_left"] == QUIZ_ATTEMPTS_PER_HOUR - n - 1
    refused = client.post(f"{API}/courses/{c['id']}/quiz", json={"answers": [1, 0, 2]}, headers=alice["headers"])
    assert refused.status_code == 429 and refused.get_json()["code"] == 42980
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(QuizAttempt)) == QUIZ_ATTEMPTS_PER_HOUR


@pytest.mark.parametrize("answers,field", [
    ([1, 0], "answers"),
    ([1, 0, 2, 1], "answers"),
    ([1, 5, 2], "answers.1"),
    ([1, -1, 2], "answers.1"),
    (["1", 0, 2], "answers.0"),
    ([True, 0, 2], "answers.0"),
])
def test_bad_answers_are_refused_and_not_recorded(app, client, course, distributor, answers, field) -> None:
    c = course(lessons=1, quiz=QUIZ)
    alice = distributor("alice")
    response = client.post(f"{API}/courses/{c['id']}/quiz", json={"answers": answers}, headers=alice["headers"])
    assert response.status_code == 422, response.get_json()
    assert field in {e["field"] for e in response.get_json()["data"]["errors"]}
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(QuizAttempt)) == 0


def test_a_course_without_quiz_refuses_answers(client, course, distributor) -> None:
    c = course(lessons=1)
    alice = distributor("alice")
    response = client.post(f"{API}/courses/{c['id']}/quiz", json={"answers": [0]}, headers=alice["headers"])
    assert response.status_code == 404 and response.get_json()["code"] == 40487


def test_adding_a_lesson_makes_a_finished_course_incomplete_and_removing_it_completes_it(client, course, distributor, ops) -> None:
    c = course(lessons=1)
    alice = distributor("alice")
    client.post(f"{API}/lessons/{c['lessons'][0]['id']}/complete", headers=alice["headers"])
    added = client.post(f"{ADMIN}/courses/{c['id']}/lessons", json={"kind": "video", "title": "视频", "video_url": "https://v.qq.com/x/page/a.html"}, headers=ops)
    assert added.status_code == 201
    assert client.get(f"{API}/courses/{c['id']}", headers=alice["headers"]).get_json()["data"]["complete"] is False
    assert client.delete(f"{ADMIN}/lessons/{added.get_json()['data']['id']}", headers=ops).status_code == 200
    assert client.get(f"{API}/courses/{c['id']}", headers=alice["headers"]).get_json()["data"]["complete"] is True


def test_course_statistics_count_started_and_completed(client, course, distributor, ops) -> None:
    c = course(lessons=2)
    alice, bob = distributor("alice"), distributor("bob")
    for lesson in c["lessons"]:
        client.post(f"{API}/lessons/{lesson['id']}/complete", headers=alice["headers"])
    client.post(f"{API}/lessons/{c['lessons'][0]['id']}/complete", headers=bob["headers"])
    stats = client.get(f"{ADMIN}/courses/{c['id']}", headers=ops).get_json()["data"]["stats"]
    assert stats == {"started": 2, "completed": 1}
    listed = client.get(f"{ADMIN}/courses", headers=ops).get_json()["data"]["items"]
    assert listed[0]["stats"] == stats


def test_lessons_are_reordered_and_removed(client, course, ops) -> None:
    c = course(lessons=3, published=False)
    ids = [lesson["id"] for lesson in c["lessons"]]
    reordered = client.put(f"{ADMIN}/courses/{c['id']}/lesson-order", json={"lesson_ids": ids[::-1]}, headers=ops)
    assert reordered.status_code == 200
    assert [(lesson["id"], lesson["position"]) for lesson in reordered.get_json()["data"]["lessons"]] == list(zip(ids[::-1], (1, 2, 3)))
    for bad in (ids[:2], ids + [ids[0]], [ids[0], ids[1], 999999]):
        response = client.put(f"{ADMIN}/courses/{c['id']}/lesson-order", json={"lesson_ids": bad}, headers=ops)
        assert response.status_code == 422 and response.get_json()["data"]["errors"][0]["field"] == "lesson_ids"
    removed = client.delete(f"{ADMIN}/lessons/{ids[1]}", headers=ops).get_json()["data"]
    assert [(lesson["id"], lesson["position"]) for lesson in removed["lessons"]] == [(ids[2], 1), (ids[0], 2)]


def test_publishing_needs_a_lesson_and_is_audited(app, client, course, ops) -> None:
    c = course(lessons=0, published=False)
    empty = client.post(f"{ADMIN}/courses/{c['id']}/publication", json={"published": True}, headers=ops)
    assert empty.status_code == 409 and empty.get_json()["code"] == 40985
    client.post(f"{ADMIN}/courses/{c['id']}/lessons", json={"kind": "article", "title": "一", "body": "正文"}, headers=ops)
    published = client.post(f"{ADMIN}/courses/{c['id']}/publication", json={"published": True}, headers=ops).get_json()["data"]
    assert published["state"] == "published" and published["published_at"]
    lesson_id = published["lessons"][0]["id"]
    last = client.delete(f"{ADMIN}/lessons/{lesson_id}", headers=ops)
    assert last.status_code == 409 and last.get_json()["code"] == 40985
    assert client.post(f"{ADMIN}/courses/{c['id']}/publication", json={"published": False}, headers=ops).get_json()["data"]["state"] == "draft"
    with app.app_context():
        actions = set(db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"course:{c['id']}")))
    assert {"training.course_create", "training.lesson_add", "training.publish", "training.unpublish"} <= actions


@pytest.mark.parametrize("body,field", [
    ({"kind": "video", "title": "v", "video_url": "http://v.qq.com/a"}, "video_url"),
    ({"kind": "video", "title": "v", "video_url": "https://evil.example.com/a.mp4"}, "video_url"),
    ({"kind": "video", "title": "v", "video_url": "https://v.qq.com.evil.example/a"}, "video_url"),
    ({"kind": "video", "title": "v", "video_url": "javascript:alert(1)"}, "video_url"),
    ({"kind": "video", "title": "v"}, "video_url"),
    ({"kind": "article", "title": "a", "body": "  "}, "body"),
    ({"kind": "article", "title": "a", "body": "x", "video_url": "https://v.qq.com/a"}, "video_url"),
    ({"kind": "audio", "title": "a", "body": "x"}, "kind"),
    ({"kind": "article", "title": "", "body": "x"}, "title"),
    ({"kind": "article", "title": "a" * 65, "body": "x"}, "title"),
])
def test_bad_lessons_are_refused(client, course, ops, body, field) -> None:
    c = course(lessons=0, published=False)
    response = client.post(f"{ADMIN}/courses/{c['id']}/lessons", json=body, headers=ops)
    assert response.status_code == 422, response.get_json()
    assert field in {e["field"] for e in response.get_json()["data"]["errors"]}


def test_a_video_on_an_allowed_subdomain_is_accepted(client, course, ops) -> None:
    c = course(lessons=0, published=False)
    body = {"kind": "video", "title": "v", "video_url": "https://finder.channels.weixin.qq.com/v/1"}
    assert client.post(f"{ADMIN}/courses/{c['id']}/lessons", json=body, headers=ops).status_code == 201


@pytest.mark.parametrize("questions,field", [
    ([{"prompt": "?", "options": ["a"], "answer": 0}], "questions.0.options"),
    ([{"prompt": "?", "options": ["a", "b"], "answer": 2}], "questions.0.answer"),
    ([{"prompt": "", "options": ["a", "b"], "answer": 0}], "questions.0.prompt"),
    ([{"prompt": "?", "options": ["a", "b", "c", "d", "e", "f", "g"], "answer": 0}], "questions.0.options"),
])
def test_bad_quizzes_are_refused(client, course, ops, questions, field) -> None:
    c = course(lessons=1, published=False)
    response = client.put(f"{ADMIN}/courses/{c['id']}/quiz", json={"pass_mark": 80, "questions": questions}, headers=ops)
    assert response.status_code == 422, response.get_json()
    assert field in {e["field"] for e in response.get_json()["data"]["errors"]}


def test_finance_cannot_build_courses_and_members_cannot_use_the_admin_api(client, staff_login, wx_login) -> None:
    finance = staff_login("finance")
    assert client.get(f"{ADMIN}/courses", headers=finance).status_code == 403
    assert client.post(f"{ADMIN}/courses", json={"title": "x"}, headers=finance).status_code == 403
    carol = wx_login("carol")
    assert client.get(f"{ADMIN}/courses", headers=carol["headers"]).status_code == 401


def test_articles_are_escaped_with_paragraphs_and_bold() -> None:
    html = str(render_article("第一段 **重点**\n下一行\n\n<script>alert(1)</script> & <b>x</b>"))
    assert html == "<p>第一段 <strong>重点</strong><br>下一行</p><p>&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;x&lt;/b&gt;</p>"


def test_concurrent_quiz_attempts_never_pass_the_hourly_limit(app, course, distributor) -> None:
    c = course(lessons=1, quiz=QUIZ)
    alice = distributor("alice")
    statuses: list[int] = []
    tries = QUIZ_ATTEMPTS_PER_HOUR + 3
    barrier = threading.Barrier(tries)

    def attempt() -> None:
        with app.test_client() as own:
            barrier.wait()
            statuses.append(own.post(f"{API}/courses/{c['id']}/quiz", json={"answers": [1, 0, 0]}, headers=alice["headers"]).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(tries)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] * QUIZ_ATTEMPTS_PER_HOUR + [429] * 3
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(QuizAttempt)) == QUIZ_ATTEMPTS_PER_HOUR
