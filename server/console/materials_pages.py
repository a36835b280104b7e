"""Promotion material pages: the list by kind and audience, creating and editing a material (with an
uploaded picture or cover kept in the media directory), and taking one down.

Each form is checked with the admin API's request models and saved by the distribution services.
"""
from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.datastructures import FileStorage

from server import db
from server.console.forms import FIELD_LIMIT, checked, problems, whole_number
from server.console.media import ImageRefusedError, store_image
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.distribution import routes as api
from server.distribution import services
from server.distribution.models import Material, MaterialKind
from server.errors import ValidationError
from server.posters.services import list_templates

KINDS = {"image_text": "图文", "video": "视频", "poster": "海报"}
AUDIENCES = {1: "仅一级分销员", 2: "全部分销员", 3: "全部会员"}
HINTS = {
    "kind": "请选择素材类型。",
    "title": "请填写标题（最多 64 字）。",
    "summary": "摘要最多 255 字。",
    "body": "图文素材需要正文（最多 16,000 字）。",
    "url": "视频素材需要以 http:// 或 https:// 开头的视频链接（最多 512 字符）；图文可上传图片。",
    "cover_url": "封面链接须以 http:// 或 https:// 开头（最多 512 字符）。",
    "poster_template_id": "海报素材需要选择一个海报模板；其他类型不能选择模板。",
    "audience": "请选择可见范围。",
    "sort": "排序应为 -1,000,000 到 1,000,000 之间的整数。",
}
#: Upload fields and the material field their stored image's URL goes to.
UPLOADS = {"image": "url", "cover": "cover_url"}


@bp.get("/materials")
@console_view("materials")
def materials() -> Any:
    """Materials filtered by kind, audience, shown or hidden and title; by sort, then newest."""
    kind_arg, audience_arg, active_arg = (request.args.get(k, "") for k in ("kind", "audience", "active"))
    kind = MaterialKind(kind_arg) if kind_arg in MaterialKind._value2member_map_ else None
    audience = int(audience_arg) if audience_arg in ("1", "2", "3") else None
    active = {"1": True, "0": False}.get(active_arg)
    q = request.args.get("q", "").strip()[:64]
    filters = {"kind": kind, "audience": audience, "active": active, "q": q}
    stmt = services.materials_query(kind=kind, audience=audience, active=active, q=q or None)
    page = int_arg("page", 1)
    rows, total = db.paginate(db.session(), stmt, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, order_by=services.MATERIAL_ORDER, count_cap=COUNT_CAP)
    return render_template("console/materials.html", rows=rows, filters=filters, kinds=KINDS, audiences=AUDIENCES, pager=pages(total))


def _form_page(material: Material | None, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    return render_template(
        "console/material.html",
        material=material,
        templates=list_templates(db.session()),
        kinds=KINDS,
        audiences=AUDIENCES,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


@bp.get("/materials/new")
@console_view("materials.edit")
def materials_new() -> Any:
    return _form_page(None)


@bp.get("/materials/<int:material_id>")
@console_view("materials")
def materials_edit(material_id: int) -> Any:
    return _form_page(services.get_material(db.session(), material_id))


def _fields() -> tuple[dict[str, Any], dict[str, str]]:
    """The form as the admin API's material fields, with uploaded images stored and their URLs filled in."""
    fields: dict[str, Any] = {k: form_text(k, FIELD_LIMIT) for k in ("kind", "title", "summary", "body", "url", "cover_url")}
    fields["kind"] = fields["kind"][:16]
    template = form_text("poster_template_id", 32)
    fields["poster_template_id"] = whole_number(template) if template and fields["kind"] == "poster" else None
    fields["audience"] = whole_number(form_text("audience", 8))
    fields["sort"] = whole_number(form_text("sort", 32) or "0")
    fields["active"] = request.form.get("active") == "1"
    errors: dict[str, str] = {}
    for upload_field, target in UPLOADS.items():
        upload = request.files.get(upload_field)
        if isinstance(upload, FileStorage) and upload.filename:
            try:
                fields[target] = store_image(upload)
            except ImageRefusedError as refusal:
                errors[target] = str(refusal)
    return fields, errors


def _saved(material: Material, verb: str) -> Any:
    flash(f"已{verb}素材「{material.title}」。", "success")
    return redirect(url_for("console.materials_edit", material_id=material.id), 303)


@bp.post("/materials")
@console_view("materials.edit")
def materials_create() -> Any:
    fields, errors = _fields()
    body, invalid = checked(api.MaterialBody, fields, HINTS)
    if errors or body is None:
        return _form_page(None, {**invalid, **errors}, 422)
    try:
        material = services.create_material(db.session(), api.material_fields(body.model_dump()), staff=current_staff())
    except ValidationError as error:
        return _form_page(None, problems(error, HINTS), error.http_status)
    return _saved(material, "新建")


@bp.post("/materials/<int:material_id>")
@console_view("materials.edit")
def materials_update(material_id: int) -> Any:
    material = services.get_material(db.session(), material_id)
    fields, errors = _fields()
    body, invalid = checked(api.MaterialPatchBody, fields, HINTS)
    if errors or body is None:
        return _form_page(material, {**invalid, **errors}, 422)
    try:
        services.update_material(
            db.session(), material_id, api.material_fields(api.patch_fields(body, nullable=("poster_template_id",))), staff=current_staff()
        )
    except ValidationError as error:
        return _form_page(material, problems(error, HINTS), error.http_status)
    return _saved(material, "保存")


@bp.post("/materials/<int:material_id>/deactivate")
@console_view("materials.edit")
def materials_deactivate(material_id: int) -> Any:
    """Take a material down for everyone; the row stays (what was shared keeps its source)."""
    material = services.deactivate_material(db.session(), material_id, staff=current_staff())
    return _saved(material, "下架")
