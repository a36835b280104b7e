"""Poster template pages: the list with previews, creating and editing a template with a live preview
of unsaved changes, uploading its background, offering or withdrawing one.

Forms are checked with the admin API's request models and saved by the posters services; a
background upload goes through the same check and re-encoding as the API's (``prepare_background``).
Previews are drawn with sample data and a placeholder code: nothing is stored and WeChat is not called.
Choosing the default template commits early, as the admin API's does: before its lock is released.
"""
from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

from flask import Response, current_app, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import FileStorage

from server import db
from server.console.forms import FIELD_LIMIT, checked, problems, whole_number
from server.console.routes import bp, form_text
from server.console.session import console_view, current_staff
from server.errors import AppError, ValidationError
from server.posters import routes as api
from server.posters import services
from server.posters.errors import DefaultTemplateError
from server.posters.models import PosterTemplate

AUDIENCES = {1: "仅一级分销员", 2: "全部分销员", 3: "全部会员"}
HINTS = {
    "name": "请填写模板名称（最多 64 字）。",
    "width": "宽度应为 300 到 2000 像素。",
    "height": "高度应为 300 到 4000 像素。",
    "background_color": "背景色应为 #RRGGBB，例如 #F6F6F6。",
    "background_image": f"背景图只接受 PNG 或 JPEG，不超过 {services.BACKGROUND_MAX_BYTES // 1024} KB。",
    "headline": "标题最多 64 字。",
    "body_text": "正文最多 255 字。",
    "layout": "布局须为 JSON 对象，且每个元素都在画布之内（见 server.posters.render 的默认布局）。",
    "audience": "请选择可见范围。",
    "active": "停用的模板不能设为默认。",
    "": "输入有误，请检查后重试。",
}


@bp.get("/posters")
@console_view("posters")
def posters() -> Any:
    """Every template, active ones first, each with its preview."""
    sess = db.session()
    templates = services.list_templates(sess)
    return render_template(
        "console/posters.html",
        templates=templates,
        with_background=services.templates_with_background(sess, [t.id for t in templates]),
        audiences=AUDIENCES,
    )


def _form_page(template: PosterTemplate | None, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    with_background = template is not None and template.id in services.templates_with_background(db.session(), [template.id])
    layout = json.dumps(template.layout or {}, ensure_ascii=False, indent=1) if template else "{}"
    return render_template(
        "console/poster.html",
        template=template,
        has_background=with_background,
        layout=layout,
        audiences=AUDIENCES,
        errors=errors or {},
        form=request.form if errors else {},
    ), status


@bp.get("/posters/new")
@console_view("posters.edit")
def posters_new() -> Any:
    return _form_page(None)


@bp.get("/posters/<int:template_id>")
@console_view("posters")
def posters_edit(template_id: int) -> Any:
    return _form_page(services.get_template(db.session(), template_id))


@bp.get("/posters/<int:template_id>/preview.png")
@console_view("posters")
def posters_preview_image(template_id: int) -> Any:
    """The saved template drawn with sample data (the admin API's preview)."""
    template = services.get_template(db.session(), template_id)
    response = Response(services.preview_poster(template, current_app.config["PUBLIC_BASE_URL"]), mimetype="image/png")
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def _fields() -> tuple[dict[str, Any], dict[str, str]]:
    """The form as the admin API's template fields; an uploaded background as the base64 the API takes."""
    fields: dict[str, Any] = {k: form_text(k, FIELD_LIMIT) for k in ("name", "background_color", "headline", "body_text")}
    fields["body_text"] = request.form.get("body_text", "")[:FIELD_LIMIT].replace("\r\n", "\n").strip()
    for key in ("width", "height", "audience"):
        fields[key] = whole_number(form_text(key, 16))
    errors: dict[str, str] = {}
    raw_layout = request.form.get("layout", "")[:FIELD_LIMIT].strip() or "{}"
    try:
        fields["layout"] = json.loads(raw_layout)
    except ValueError:
        errors["layout"] = HINTS["layout"]
    upload = request.files.get("background")
    if isinstance(upload, FileStorage) and upload.filename:
        data = upload.stream.read(services.BACKGROUND_MAX_BYTES + 1)
        if len(data) > services.BACKGROUND_MAX_BYTES or not data:
            errors["background_image"] = HINTS["background_image"]
        else:
            fields["background_image"] = base64.b64encode(data).decode("ascii")
    elif request.form.get("remove_background") == "1":
        fields["background_image"] = ""
    return fields, errors


@bp.post("/posters")
@console_view("posters.edit")
def posters_create() -> Any:
    fields, errors = _fields()
    body, invalid = checked(api.TemplateBody, fields, HINTS)
    if errors or body is None:
        return _form_page(None, {**invalid, **errors}, 422)
    try:
        template = services.create_template(db.session(), body.model_dump(), staff_id=current_staff().id)
    except ValidationError as error:
        return _form_page(None, problems(error, HINTS), error.http_status)
    flash(f"已新建海报模板「{template.name}」。", "success")
    return redirect(url_for("console.posters_edit", template_id=template.id), 303)


@bp.post("/posters/<int:template_id>")
@console_view("posters.edit")
def posters_update(template_id: int) -> Any:
    """Save a template; a change to the picture makes a new version, so members' posters are drawn anew."""
    sess = db.session()
    template = services.get_template(sess, template_id)
    fields, errors = _fields()
    body, invalid = checked(api.TemplatePatchBody, fields, HINTS)
    if errors or body is None:
        return _form_page(template, {**invalid, **errors}, 422)
    try:
        changes = {name: value for name, value in body.model_dump().items() if value is not None}
        services.update_template(sess, template, changes, staff_id=current_staff().id)
    except ValidationError as error:
        return _form_page(template, problems(error, HINTS), error.http_status)
    flash(f"已保存海报模板「{template.name}」（第 {template.version} 版）。", "success")
    return redirect(url_for("console.posters_edit", template_id=template.id), 303)


@bp.post("/posters/preview")
@console_view("posters")
def posters_preview() -> Any:
    """A live preview of the form's unsaved values (htmx swaps the image in); nothing is stored."""
    raw_id = form_text("template_id", 20)
    base = services.get_template(db.session(), int(raw_id)) if raw_id.isdigit() else None
    fields, errors = _fields()
    model = api.TemplatePatchBody if base is not None else api.TemplateBody
    body, invalid = checked(model, fields, HINTS)
    errors = {**invalid, **errors}
    if body is not None and not errors:
        try:
            draft = services.draft_template(base, {k: v for k, v in body.model_dump().items() if v is not None})
            png = services.preview_poster(draft, current_app.config["PUBLIC_BASE_URL"])
        except AppError as error:
            errors = problems(error, HINTS) or {"": HINTS[""]}
        else:
            return render_template("console/_poster_preview.html", png=base64.b64encode(png).decode("ascii"), errors={})
    return render_template("console/_poster_preview.html", png=None, errors=errors), 422


@bp.post("/posters/<int:template_id>/active")
@console_view("posters.edit")
def posters_active(template_id: int) -> Any:
    """Offer (``active=1``) or withdraw a template; the default cannot be withdrawn."""
    sess = db.session()
    template = services.get_template(sess, template_id)
    active = request.form.get("active") == "1"
    try:
        services.set_template_active(sess, template, active, staff_id=current_staff().id)
    except DefaultTemplateError as error:
        return _form_page(template, {"active": "默认海报不能停用；请先把另一个模板设为默认。"}, error.http_status)
    flash("已启用。" if active else "已停用。", "success")
    return redirect(url_for("console.posters_edit", template_id=template_id), 303)


@bp.post("/posters/<int:template_id>/default")
@console_view("posters.edit")
def posters_default(template_id: int) -> Any:
    """Make an active template for everyone the one posters use when the member picks none."""
    sess = db.session()
    template = services.get_template(sess, template_id)
    try:
        with contextlib.ExitStack() as locks:
            services.set_default_template(sess, template, staff_id=current_staff().id, locks=locks)
            # Commits early, by design: before the default-template lock is released, so the next holder sees this default.
            db.commit()
    except ValidationError as error:
        field = error.data["errors"][0]["field"] if error.data else ""
        message = "停用的模板不能设为默认；请先启用。" if field == "active" else "默认海报须对所有会员可见；请先把可见范围改为所有人。"
        return _form_page(template, {"active": message}, error.http_status)
    flash("已设为默认海报。", "success")
    return redirect(url_for("console.posters_edit", template_id=template_id), 303)
