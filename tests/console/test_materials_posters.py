"""Material and poster-template pages for each role, image uploads (checked, re-encoded, stored by
content hash under MEDIA_DIR and served from /media) and the poster previews."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from PIL import Image
from sqlalchemy import func, select

from server import db
from server.console import media
from server.accounts.models import AuditEntry
from server.distribution.models import Material, MaterialKind
from server.posters.models import PosterTemplate
from tests.console.test_distributors import login, shop  # noqa: F401  (the demo shop fixture)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (40, 30), exif: bool = False, color: str = "#3366CC") -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, color)
    if exif:
        data = Image.Exif()
        data[0x010F] = "SecretCamera"  # Make
        image.save(out, format=fmt, exif=data.tobytes())
    else:
        image.save(out, format=fmt)
    return out.getvalue()


def upload(data: bytes, name: str = "picture.png") -> tuple[io.BytesIO, str]:
    return io.BytesIO(data), name


def materials(app: Flask) -> list[tuple[str, MaterialKind, str, str, bool]]:
    with app.app_context():
        rows = db.session().execute(select(Material.title, Material.kind, Material.url, Material.cover_url, Material.active).order_by(Material.id)).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_operations_list_create_edit_and_take_down_materials(app: Flask, shop: dict[str, Any]) -> None:  # noqa: F811
    ops = login(app, "ops")
    listing = ops.get("/console/materials").text
    assert "春茶推荐文案" in listing and "一级分销员培训视频" in listing
    assert "春茶推荐文案" not in ops.get("/console/materials", query_string={"kind": "video"}).text
    assert "一级分销员培训视频" in ops.get("/console/materials", query_string={"audience": "1", "active": "1", "q": "培训"}).text
    for bad in ({"kind": "nope"}, {"audience": "7"}, {"active": "maybe"}, {"page": "x"}, {"q": "_" * 300}):
        assert ops.get("/console/materials", query_string=bad).status_code == 200
    response = ops.post("/console/materials", {"kind": "image_text", "title": "新品文案", "body": "正文", "audience": "2", "sort": "3", "active": "1"})
    assert response.status_code == 303
    material_id = int(response.location.rsplit("/", 1)[1])
    edited = ops.post(f"/console/materials/{material_id}", {"kind": "video", "title": "新品视频", "url": "https://example.com/v.mp4", "audience": "3", "sort": "0", "active": "1"})
    assert edited.status_code == 303
    assert ops.post(f"/console/materials/{material_id}/deactivate", {}).status_code == 303
    assert ("新品视频", MaterialKind.video, "https://example.com/v.mp4", "", False) in materials(app)
    with app.app_context():
        actions = db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"material:{material_id}").order_by(AuditEntry.id)).all()
        assert actions == ["material.create", "material.update", "material.deactivate"]


@pytest.mark.parametrize("form,message", [
    ({"kind": "video", "title": "没有链接"}, "视频素材需要"),
    ({"kind": "image_text", "title": "没有正文"}, "图文素材需要正文"),
    ({"kind": "poster", "title": "没有模板"}, "海报素材需要选择一个海报模板"),
    ({"kind": "poster", "title": "没有的模板", "poster_template_id": "999999"}, "海报素材需要选择一个海报模板"),
    ({"kind": "podcast", "title": "未知类型"}, "请选择素材类型"),
    ({"kind": "image_text", "title": "", "body": "x"}, "请填写标题"),
    ({"kind": "image_text", "title": "标" * 65, "body": "x"}, "请填写标题"),
    ({"kind": "video", "title": "坏链接", "url": "javascript:alert(1)"}, "视频素材需要"),
    ({"kind": "image_text", "title": "坏范围", "body": "x", "audience": "9"}, "请选择可见范围"),
    ({"kind": "image_text", "title": "坏排序", "body": "x", "sort": "1.5"}, "排序应为"),
])
def test_bad_materials_are_refused_in_chinese_and_nothing_is_stored(app: Flask, shop: dict[str, Any], form: dict[str, str], message: str) -> None:  # noqa: F811
    ops = login(app, "ops")
    before = materials(app)
    response = ops.post("/console/materials", {"audience": "3", **form})
    assert response.status_code == 422 and message in response.text
    assert materials(app) == before


def test_uploaded_images_are_checked_reencoded_and_served(app: Flask, shop: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    app.config["MEDIA_DIR"] = str(tmp_path / "media")
    ops = login(app, "ops")
    jpeg = image_bytes("JPEG", exif=True)
    assert b"SecretCamera" in jpeg
    response = ops.post(
        "/console/materials",
        {"kind": "image_text", "title": "带图文案", "body": "正文", "audience": "3", "image": upload(jpeg, "photo.jpg"), "cover": upload(image_bytes("PNG", color="#CC6633"), "c.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303, response.text
    _title, _kind, url, cover_url, _active = materials(app)[-1]
    base = app.config["PUBLIC_BASE_URL"]
    assert url.startswith(f"{base}/media/") and url.endswith(".jpg") and cover_url.endswith(".jpg")
    stored = ops.client.get(url.removeprefix(base))
    assert stored.status_code == 200 and stored.mimetype == "image/jpeg" and "immutable" in stored.headers["Cache-Control"]
    assert b"SecretCamera" not in stored.data and Image.open(io.BytesIO(stored.data)).size == (40, 30)
    stored.close()
    # Stored under the content's hash: the same picture again is the same file.
    assert len(list((tmp_path / "media").iterdir())) == 2
    again = ops.post(
        "/console/materials",
        {"kind": "image_text", "title": "同图", "body": "正文", "audience": "3", "image": upload(jpeg, "again.jpg")},
        content_type="multipart/form-data",
    )
    assert again.status_code == 303 and materials(app)[-1][2] == url
    assert len(list((tmp_path / "media").iterdir())) == 2
    for name in ("../secret.png", "abc.png", "x" * 32 + ".gif"):
        assert ops.client.get(f"/media/{name}").status_code == 404


@pytest.mark.parametrize("data,name", [
    (b"just text, not an image", "fake.png"),
    (b"GIF89a" + b"\x00" * 64, "anim.gif"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "broken.png"),
    (image_bytes("PNG", size=(300, 300)) + b"\x00" * 5000, "huge.png"),
])
def test_uploads_that_are_not_small_pngs_or_jpegs_are_refused(
    app: Flask, shop: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, name: str  # noqa: F811
) -> None:
    app.config["MEDIA_DIR"] = str(tmp_path / "media")
    # A smaller limit than the 1 MiB one, so the test client's body stays in memory.
    monkeypatch.setattr(media, "MAX_BYTES", 4096)
    ops = login(app, "ops")
    before = materials(app)
    response = ops.post(
        "/console/materials", {"kind": "image_text", "title": "坏图", "body": "x", "audience": "3", "image": upload(data, name)}, content_type="multipart/form-data"
    )
    assert response.status_code == 422 and ("只接受 PNG 或 JPEG" in response.text or "图片不能超过" in response.text)
    assert materials(app) == before and not (tmp_path / "media").exists()


def test_a_decompression_bomb_is_refused(app: Flask, shop: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    app.config["MEDIA_DIR"] = str(tmp_path / "media")
    bomb = image_bytes("PNG", size=(6000, 6000))
    assert len(bomb) < 1024 * 1024
    response = login(app, "ops").post(
        "/console/materials", {"kind": "image_text", "title": "炸弹", "body": "x", "audience": "3", "cover": upload(bomb)}, content_type="multipart/form-data"
    )
    assert response.status_code == 422 and "只接受 PNG 或 JPEG" in response.text


def test_finance_cannot_change_materials_or_templates(app: Flask, shop: dict[str, Any]) -> None:  # noqa: F811
    finance = login(app, "finance")
    with app.app_context():
        before = db.session().scalar(select(func.count()).select_from(AuditEntry))
    for path in (
        "/console/materials",
        f"/console/materials/{shop['material']}",
        f"/console/materials/{shop['material']}/deactivate",
        "/console/posters",
        f"/console/posters/{shop['template']}",
        f"/console/posters/{shop['template']}/active",
        "/console/posters/preview",
    ):
        response = finance.post(path, {"kind": "image_text", "title": "x", "body": "x", "name": "x", "active": "0"})
        assert response.status_code == 403 and "无权访问" in response.text, path
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(AuditEntry)) == before


def template_row(app: Flask, template_id: int) -> tuple[str, int, str, bool, bool]:
    with app.app_context():
        row = db.session().get(PosterTemplate, template_id)
        assert row is not None
        return row.name, row.version, row.background_color, row.background_image is not None, row.active


def test_poster_templates_are_created_edited_previewed_and_withdrawn(app: Flask, shop: dict[str, Any]) -> None:  # noqa: F811
    ops = login(app, "ops")
    listing = ops.get("/console/posters").text
    assert "春茶上新" in listing and f"/console/posters/{shop['template']}/preview.png" in listing
    preview = ops.get(f"/console/posters/{shop['template']}/preview.png")
    assert preview.status_code == 200 and preview.mimetype == "image/png"
    assert Image.open(io.BytesIO(preview.data)).size == (750, 1334)
    form = {"name": "夏日特惠", "width": "600", "height": "900", "background_color": "#FFEEDD", "headline": "夏日特惠", "body_text": "第一行\r\n第二行", "audience": "3", "layout": ""}
    created = ops.post("/console/posters", form)
    assert created.status_code == 303, created.text
    template_id = int(created.location.rsplit("/", 1)[1])
    assert template_row(app, template_id) == ("夏日特惠", 1, "#FFEEDD", False, True)
    # A background upload is re-encoded by the posters service, and the picture's change makes version 2.
    with_background = ops.post(
        f"/console/posters/{template_id}", {**form, "background": upload(image_bytes("JPEG", size=(600, 900)), "bg.jpg")}, content_type="multipart/form-data"
    )
    assert with_background.status_code == 303
    assert template_row(app, template_id) == ("夏日特惠", 2, "#FFEEDD", True, True)
    assert ops.post(f"/console/posters/{template_id}", {**form, "remove_background": "1"}).status_code == 303
    assert template_row(app, template_id)[3] is False
    assert ops.post(f"/console/posters/{template_id}/active", {"active": "0"}).status_code == 303
    assert template_row(app, template_id)[4] is False
    assert ops.get("/console/posters/999999").status_code == 404
    assert ops.get("/console/posters/999999/preview.png").status_code == 404


@pytest.mark.parametrize("change,message", [
    ({"background_color": "red"}, "背景色应为"),
    ({"width": "100"}, "宽度应为"),
    ({"height": "abc"}, "高度应为"),
    ({"name": ""}, "请填写模板名称"),
    ({"audience": "0"}, "请选择可见范围"),
    ({"layout": "{not json"}, "布局须为 JSON 对象"),
    ({"layout": '{"code": {"x": 99999}}'}, "布局须为 JSON 对象"),
    ({"layout": "[1, 2]"}, "布局须为 JSON 对象"),
])
def test_bad_template_forms_are_refused_and_nothing_changes(app: Flask, shop: dict[str, Any], change: dict[str, str], message: str) -> None:  # noqa: F811
    ops = login(app, "ops")
    before = template_row(app, shop["template"])
    form = {"name": "春茶上新", "width": "750", "height": "1334", "background_color": "#EAF5EC", "headline": "h", "body_text": "b", "audience": "3", "layout": "{}"}
    response = ops.post(f"/console/posters/{shop['template']}", {**form, **change})
    assert response.status_code == 422 and message in response.text
    assert template_row(app, shop["template"]) == before
    # The live preview refuses the same values the same way, and stores nothing either.
    live = ops.post("/console/posters/preview", {**form, **change, "template_id": str(shop["template"])})
    assert live.status_code == 422 and message in live.text
    assert template_row(app, shop["template"]) == before


def test_the_live_preview_draws_unsaved_changes_without_storing_them(app: Flask, shop: dict[str, Any]) -> None:  # noqa: F811
    ops = login(app, "ops")
    before = template_row(app, shop["template"])
    form = {"template_id": str(shop["template"]), "name": "改名未保存", "width": "750", "height": "1334", "background_color": "#000000",
            "headline": "未保存的标题", "body_text": "", "audience": "3", "layout": "{}"}
    response = ops.post("/console/posters/preview", {**form, "background": upload(image_bytes("PNG", size=(100, 100)))}, content_type="multipart/form-data")
    assert response.status_code == 200 and 'src="data:image/png;base64,' in response.text
    assert template_row(app, shop["template"]) == before
    new = ops.post("/console/posters/preview", {k: v for k, v in form.items() if k != "template_id"})
    assert new.status_code == 200 and "data:image/png;base64," in new.text
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(PosterTemplate)) == 1


def _default_ids(app: Flask) -> list[int]:
    with app.app_context():
        return list(db.session().scalars(select(PosterTemplate.id).where(PosterTemplate.is_default.is_(True))))


def test_operations_choose_the_default_template_and_it_is_audited(app: Flask, shop: dict[str, Any]) -> None:  # noqa: F811
    ops = login(app, "ops")
    form = {"name": "夏日特惠", "width": "600", "height": "900", "background_color": "#FFEEDD", "headline": "夏日", "body_text": "", "audience": "3", "layout": ""}
    second = int(ops.post("/console/posters", form).location.rsplit("/", 1)[1])
    assert ops.post(f"/console/posters/{shop['template']}/default").status_code == 303
    assert _default_ids(app) == [shop["template"]]
    # Choosing another moves the mark: there is one default at a time.
    assert ops.post(f"/console/posters/{second}/default").status_code == 303
    assert _default_ids(app) == [second]
    assert 'id="make-default"' not in ops.get(f"/console/posters/{second}").text
    assert 'id="make-default"' in ops.get(f"/console/posters/{shop['template']}").text
    with app.app_context():
        actions = db.session().scalars(select(AuditEntry.action).where(AuditEntry.target == f"poster_template:{second}")).all()
    assert "poster_template.set_default" in actions


def test_a_withdrawn_or_partial_audience_template_cannot_be_the_default(app: Flask, shop: dict[str, Any]) -> None:  # noqa: F811
    ops = login(app, "ops")
    form = {"name": "一级专享", "width": "600", "height": "900", "background_color": "#FFEEDD", "headline": "h", "body_text": "", "audience": "1", "layout": ""}
    tier_only = int(ops.post("/console/posters", form).location.rsplit("/", 1)[1])
    refused = ops.post(f"/console/posters/{tier_only}/default")
    assert refused.status_code == 422 and "须对所有会员可见" in refused.text
    assert ops.post(f"/console/posters/{tier_only}/active", {"active": "0"}).status_code == 303
    refused = ops.post(f"/console/posters/{tier_only}/default")
    assert refused.status_code == 422 and "停用的模板不能设为默认" in refused.text
    assert _default_ids(app) == []
    finance = login(app, "finance")
    assert finance.post(f"/console/posters/{shop['template']}/default").status_code == 403
    assert _default_ids(app) == []


def test_the_default_template_cannot_be_withdrawn(app: Flask, shop: dict[str, Any]) -> None:  # noqa: F811
    ops = login(app, "ops")
    assert ops.post(f"/console/posters/{shop['template']}/default").status_code == 303
    assert "默认" in ops.get("/console/posters").text
    response = ops.post(f"/console/posters/{shop['template']}/active", {"active": "0"})
    assert response.status_code == 409 and "默认海报不能停用" in response.text
    assert template_row(app, shop["template"])[4] is True
