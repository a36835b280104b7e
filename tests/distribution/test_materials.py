"""Promotion materials: operations manage them; each member sees what their tier allows."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from server import db
from server.accounts.models import AuditEntry
from server.posters.models import PosterTemplate

ADMIN = "/admin/api/v1/materials"


@pytest.fixture
def template_id(sess) -> int:
    with sess() as s:
        template = PosterTemplate(name="春季海报", layout={})
        s.add(template)
        db.commit()
        return template.id


@pytest.fixture
def add_material(client, ops):
    """``add_material(title="…", audience=2)``: an image_text material unless ``kind`` says otherwise."""

    def add(**fields):
        body = {"kind": "image_text", "title": "新品上市", "body": "产品介绍"} | fields
        response = client.post(ADMIN, json=body, headers=ops)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["data"]

    return add


def visible(client, member, **params):
    response = client.get("/api/v1/materials", query_string=params, headers=member["headers"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def test_each_kind_is_created_with_its_own_fields(client, ops, template_id):
    article = client.post(
        ADMIN,
        json={"kind": "image_text", "title": "使用教程", "summary": "三步上手", "body": "<p>第一步</p>", "url": "https://cdn.example.com/a.jpg", "audience": 2},
        headers=ops,
    )
    assert article.status_code == 201, article.get_json()
    data = article.get_json()["data"]
    assert data["kind"] == "image_text" and data["audience"] == 2 and data["active"] is True and data["poster_template_id"] is None

    video = client.post(ADMIN, json={"kind": "video", "title": "开箱视频", "url": "https://v.example.com/1.mp4", "cover_url": "https://cdn.example.com/c.jpg"}, headers=ops)
    assert video.status_code == 201 and video.get_json()["data"]["audience"] == 3

    poster = client.post(ADMIN, json={"kind": "poster", "title": "春季海报", "poster_template_id": template_id, "audience": 1}, headers=ops)
    assert poster.status_code == 201 and poster.get_json()["data"]["poster_template_id"] == template_id

    detail = client.get(f"{ADMIN}/{data['id']}", headers=ops)
    assert detail.status_code == 200 and detail.get_json()["data"]["body"] == "<p>第一步</p>"
    assert client.get(f"{ADMIN}/999999", headers=ops).status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "image_text", "title": "无正文"}, "body"),
        ({"kind": "image_text", "title": "空白正文", "body": "\x1c"}, "body"),
        ({"kind": "video", "title": "无链接"}, "url"),
        ({"kind": "poster", "title": "无模板"}, "poster_template_id"),
        ({"kind": "poster", "title": "坏模板", "poster_template_id": 999_999}, "poster_template_id"),
        ({"kind": "video", "title": "多余模板", "url": "https://v.example.com/1.mp4", "poster_template_id": 1}, "poster_template_id"),
        ({"kind": "video", "title": "坏链接", "url": "ftp://v.example.com/1.mp4"}, "url"),
        ({"kind": "image_text", "title": "坏封面", "body": "x", "cover_url": "javascript:alert(1)"}, "cover_url"),
        ({"kind": "audio", "title": "音频", "url": "https://a.example.com/1.mp3"}, "kind"),
        ({"kind": "image_text", "title": "", "body": "x"}, "title"),
        ({"kind": "image_text", "title": "x", "body": "x", "audience": 4}, "audience"),
        ({"kind": "image_text", "title": "x", "body": "x", "audience": True}, "audience"),
        ({"kind": "image_text", "title": "x", "body": "x", "audience": "3"}, "audience"),
        ({"kind": "image_text", "title": "x", "body": "x", "price_fen": 100}, "price_fen"),
    ],
)
def test_material_fields_are_validated(client, ops, template_id, body, field):
    response = client.post(ADMIN, json=body, headers=ops)
    assert response.status_code == 422, response.get_json()
    assert field in {e["field"] for e in response.get_json()["data"]["errors"]}


def test_update_checks_the_result_as_a_whole(client, ops, add_material, template_id, sess):
    material = add_material(title="旧标题")
    path = f"{ADMIN}/{material['id']}"
    renamed = client.patch(path, json={"title": "新标题", "sort": 5}, headers=ops)
    assert renamed.status_code == 200 and renamed.get_json()["data"]["title"] == "新标题"
    assert renamed.get_json()["data"]["body"] == "产品介绍"  # untouched fields stay

    assert client.patch(path, json={"kind": "poster"}, headers=ops).status_code == 422
    missing = client.patch(path, json={"kind": "poster", "poster_template_id": 999_999}, headers=ops)
    assert missing.status_code == 422 and missing.get_json()["data"]["errors"][0]["field"] == "poster_template_id"
    poster = client.patch(path, json={"kind": "poster", "poster_template_id": template_id}, headers=ops)
    assert poster.status_code == 200 and poster.get_json()["data"]["kind"] == "poster"

    # Leaving poster: the template must be cleared, and a video needs its link.
    assert client.patch(path, json={"kind": "video", "url": "https://v.example.com/2.mp4"}, headers=ops).status_code == 422
    video = client.patch(path, json={"kind": "video", "url": "https://v.example.com/2.mp4", "poster_template_id": None}, headers=ops)
    assert video.status_code == 200
    assert video.get_json()["data"]["poster_template_id"] is None and video.get_json()["data"]["kind"] == "video"
    assert client.patch(path, json={"url": ""}, headers=ops).status_code == 422
    assert client.patch(f"{ADMIN}/999999", json={"title": "x"}, headers=ops).status_code == 404

    with sess() as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.target == f"material:{material['id']}").order_by(AuditEntry.id)).all()
    assert actions == ["material.create", "material.update", "material.update", "material.update"]


def test_deactivated_material_disappears_for_members(client, ops, add_material, wx_login):
    alice = wx_login("alice")
    material = add_material()
    assert [m["id"] for m in visible(client, alice)["items"]] == [material["id"]]
    gone = client.delete(f"{ADMIN}/{material['id']}", headers=ops)
    assert gone.status_code == 200 and gone.get_json()["data"]["active"] is False
    assert visible(client, alice)["items"] == []
    # Still there for operations, and can be brought back.
    assert client.get(ADMIN, query_string={"active": "false"}, headers=ops).get_json()["data"]["total"] == 1
    assert client.get(ADMIN, query_string={"active": "true"}, headers=ops).get_json()["data"]["total"] == 0
    assert client.patch(f"{ADMIN}/{material['id']}", json={"active": True}, headers=ops).status_code == 200
    assert visible(client, alice)["total"] == 1


def test_materials_visible_per_tier(client, add_material, wx_login, apply, distributor, decide, share_scene):
    ids = {audience: add_material(title=f"audience {audience}", audience=audience)["id"] for audience in (1, 2, 3)}
    hidden = add_material(title="inactive", audience=3, active=False)["id"]

    def seen(member):
        return {m["id"] for m in visible(client, member)["items"]}

    member = wx_login("member")
    pending = wx_login("pending")
    apply(pending)
    tier1 = distributor("tier1")
    tier2 = distributor("tier2", scene=share_scene(tier1["user"]["id"]))
    assert tier2["distributor"]["tier"] == 2
    frozen = distributor("frozen")
    decide(frozen["distributor"]["id"], "freeze", reason="x")

    assert seen(member) == {ids[3]}
    assert seen(pending) == {ids[3]}
    assert seen(tier1) == {ids[1], ids[2], ids[3]}
    assert seen(tier2) == {ids[2], ids[3]}
    assert seen(frozen) == {ids[3]}
    assert hidden not in seen(tier1)


def test_member_listing_is_ordered_filtered_and_paged(client, add_material, wx_login, template_id):
    first = add_material(title="first", sort=0)["id"]
    second = add_material(title="second", sort=0)["id"]
    top = add_material(title="top", sort=-10)["id"]
    video = add_material(kind="video", title="video", url="https://v.example.com/1.mp4", body="", sort=10)["id"]
    alice = wx_login("alice")

    listing = visible(client, alice)
    # Sort first, then newest; "second" and "first" share a sort and may share a second, so the id breaks the tie.
    assert [m["id"] for m in listing["items"]] == [top, second, first, video]
    assert listing["total"] == 4 and listing["page"] == 1
    assert set(listing["items"][0]) == {"id", "kind", "title", "summary", "body", "url", "cover_url", "poster_template_id", "audience", "sort", "updated_at"}
    assert [m["id"] for m in visible(client, alice, kind="video")["items"]] == [video]
    page = visible(client, alice, page=2, page_size=3)
    assert [m["id"] for m in page["items"]] == [video] and page["total"] == 4
    assert client.get("/api/v1/materials", query_string={"kind": "audio"}, headers=alice["headers"]).status_code == 422


def test_console_listing_filters(client, ops, add_material):
    add_material(title="春季推广", audience=1)
    add_material(title="夏季推广", audience=3)
    add_material(kind="video", title="视频", url="https://v.example.com/1.mp4", body="")

    def total(**params):
        return client.get(ADMIN, query_string=params, headers=ops).get_json()["data"]["total"]

    assert total() == 3
    assert total(audience=1) == 1
    assert total(kind="video") == 1
    assert total(q="推广") == 2


def test_console_search_takes_percent_and_underscore_literally(client, ops, add_material):
    add_material(title="满100减20%")
    add_material(title="新品_预告")
    add_material(title="普通素材")

    def titles(q):
        return {m["title"] for m in client.get(ADMIN, query_string={"q": q}, headers=ops).get_json()["data"]["items"]}

    assert titles("%") == {"满100减20%"}
    assert titles("_") == {"新品_预告"}
    assert titles("/") == set()


def test_material_roles(client, staff_login, ops, owner, wx_login, add_material):
    material = add_material()
    finance = staff_login("finance")
    alice = wx_login("alice")
    for method, path in [("get", ADMIN), ("post", ADMIN), ("get", f"{ADMIN}/{material['id']}"), ("patch", f"{ADMIN}/{material['id']}"), ("delete", f"{ADMIN}/{material['id']}")]:
        body = {"title": "x"} if method in ("post", "patch") else None
        assert getattr(client, method)(path, json=body, headers=finance).status_code == 403, (method, path)
        assert getattr(client, method)(path, json=body, headers=alice["headers"]).status_code == 401, (method, path)
    assert client.get(ADMIN, headers=owner).status_code == 200
    assert client.get("/api/v1/materials").status_code == 401
    assert client.get("/api/v1/materials", headers=ops).status_code == 401
