"""Training fixtures: distributors of both tiers (from the distribution tests) and courses built through the admin API."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from flask.testing import FlaskClient

from tests.distribution.conftest import apply, decide, distributor, ops, owner, sess, share_scene  # noqa: F401

ADMIN = "/admin/api/v1/training"


@pytest.fixture
def course(client: FlaskClient, ops: dict[str, str]) -> Callable[..., dict[str, Any]]:
    """``course(audience=2, lessons=2, quiz=[...], published=True)`` builds a course as operations; its admin detail."""

    def make(title: str = "产品知识", audience: int = 2, lessons: int = 2, quiz: list[dict[str, Any]] | None = None,
             pass_mark: int = 80, published: bool = True) -> dict[str, Any]:
        created = client.post(f"{ADMIN}/courses", json={"title": title, "audience": audience, "pass_mark": pass_mark}, headers=ops)
        assert created.status_code == 201, created.get_json()
        course_id = created.get_json()["data"]["id"]
        for n in range(lessons):
            body = {"kind": "article", "title": f"第 {n + 1} 课", "body": f"正文 {n + 1}"}
            added = client.post(f"{ADMIN}/courses/{course_id}/lessons", json=body, headers=ops)
            assert added.status_code == 201, added.get_json()
        if quiz:
            set_quiz = client.put(f"{ADMIN}/courses/{course_id}/quiz", json={"pass_mark": pass_mark, "questions": quiz}, headers=ops)
            assert set_quiz.status_code == 200, set_quiz.get_json()
        if published:
            done = client.post(f"{ADMIN}/courses/{course_id}/publication", json={"published": True}, headers=ops)
            assert done.status_code == 200, done.get_json()
        return client.get(f"{ADMIN}/courses/{course_id}", headers=ops).get_json()["data"]

    return make


#: Three questions; the right answers are 1, 0, 2.
QUIZ = [
    {"prompt": "积分能否兑换现金？", "options": ["能", "不能"], "answer": 1},
    {"prompt": "推广时可以夸大功效吗？", "options": ["不可以", "可以", "看情况"], "answer": 0},
    {"prompt": "分销层级最多几级？", "options": ["一级", "三级", "两级"], "answer": 2},
]
