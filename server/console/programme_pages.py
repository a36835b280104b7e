"""Distributor programme rules pages: the versions, a draft's editor with a preview rendering the live
rates, and publishing with a confirmation; through the same services as the admin API."""
from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from server import db
from server.console.forms import FIELD_LIMIT, checked, problems
from server.console.routes import bp, form_text, int_arg
from server.console.session import console_view, current_staff
from server.distribution import programme
from server.distribution import routes as api
from server.distribution.errors import RulesPublishedError
from server.distribution.models import ProgrammeRules, RulesStatus
from server.errors import ValidationError

HINTS = {
    "title": "请填写标题（最多 64 字）。",
    "body": "请填写规则正文（最多 20,000 字）。",
}


def _unknown_text(error: ValidationError) -> str | None:
    unknown = error.data.get("unknown") if isinstance(error.data, dict) else None
    return "未知的占位符：" + "、".join("{{" + name + "}}" for name in unknown) + "。可用的占位符见下方列表。" if unknown else None


@bp.get("/distributor-rules")
@console_view("programme")
def programme_rules() -> Any:
    """Every version, newest first, with the current one marked."""
    sess = db.session()
    current = programme.current_rules(sess)
    return render_template("console/programme_rules.html", rows=programme.list_rules(sess), current=current)


def _editor(rules: ProgrammeRules | None, *, title: str, body: str, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """The editor of a draft (or of a new one): the form, a preview of ``body`` with the live rates, and the placeholders."""
    sess = db.session()
    unknown = programme.unknown_placeholders(body, programme.live_values(sess))
    errors = dict(errors or {})
    if unknown and "body" not in errors:
        errors["body"] = "未知的占位符：" + "、".join("{{" + name + "}}" for name in unknown) + "。可用的占位符见下方列表。"
    current = programme.current_rules(sess)
    return render_template(
        "console/programme_rule.html",
        rules=rules,
        title=title,
        body=body,
        preview=programme.render_text(sess, body) if body.strip() else None,
        placeholders=programme.placeholders(sess),
        current=current,
        errors=errors,
    ), status


@bp.get("/distributor-rules/new")
@console_view("programme.edit")
def programme_rules_new() -> Any:
    """A new draft, empty or (``?from=ID``) starting from a version's text: how a published version is edited."""
    source_id = int_arg("from", 0, lo=0, hi=10**9)
    source = db.session().get(ProgrammeRules, source_id) if source_id else None
    return _editor(None, title=source.title if source else "", body=source.body if source else "")


@bp.post("/distributor-rules")
@console_view("programme.edit")
def programme_rules_create() -> Any:
    title, body = form_text("title", 200), form_text("body", FIELD_LIMIT)
    if request.form.get("action") == "preview":
        return _editor(None, title=title, body=body)
    parsed, errors = checked(api.RulesBody, {"title": title, "body": body}, HINTS)
    if parsed is None:
        return _editor(None, title=title, body=body, errors=errors, status=422)
    try:
        rules = programme.create_draft(db.session(), title=parsed.title, body=parsed.body, staff_id=current_staff().id)
    except ValidationError as error:
        return _editor(None, title=title, body=body, errors={"body": _unknown_text(error) or problems(error, HINTS).get("body", "")}, status=422)
    flash(f"已保存草稿「{rules.title}」。", "success")
    return redirect(url_for("console.programme_rules_page", rules_id=rules.id), 303)


@bp.get("/distributor-rules/<int:rules_id>")
@console_view("programme")
def programme_rules_page(rules_id: int) -> Any:
    """A draft opens in the editor; a published version shows as members read it."""
    rules = programme.get_rules(db.session(), rules_id)
    return _editor(rules, title=rules.title, body=rules.body)


@bp.post("/distributor-rules/<int:rules_id>")
@console_view("programme.edit")
def programme_rules_save(rules_id: int) -> Any:
    rules = programme.get_rules(db.session(), rules_id)
    title, body = form_text("title", 200), form_text("body", FIELD_LIMIT)
    if rules.status != RulesStatus.draft:
        return _editor(rules, title=rules.title, body=rules.body, errors={"": "已发布的版本不能修改；请基于它新建草稿。"}, status=409)
    if request.form.get("action") == "preview":
        return _editor(rules, title=title, body=body)
    parsed, errors = checked(api.RulesPatchBody, {"title": title, "body": body}, HINTS)
    if parsed is None:
        return _editor(rules, title=title, body=body, errors=errors, status=422)
    try:
        programme.update_draft(db.session(), rules_id, api.patch_fields(parsed), staff_id=current_staff().id)
    except ValidationError as error:
        return _editor(rules, title=title, body=body, errors={"body": _unknown_text(error) or problems(error, HINTS).get("body", "")}, status=422)
    flash("草稿已保存。", "success")
    return redirect(url_for("console.programme_rules_page", rules_id=rules_id), 303)


@bp.post("/distributor-rules/<int:rules_id>/publish")
@console_view("programme.edit")
def programme_rules_publish(rules_id: int) -> Any:
    """Publish the draft as the next version; members applying from now on accept it."""
    try:
        rules = programme.publish(db.session(), rules_id, staff_id=current_staff().id)
    except RulesPublishedError:
        rules = programme.get_rules(db.session(), rules_id)
        return _editor(rules, title=rules.title, body=rules.body, errors={"": "该版本已发布，不能再次发布。"}, status=409)
    except ValidationError as error:
        rules = programme.get_rules(db.session(), rules_id)
        return _editor(rules, title=rules.title, body=rules.body, errors={"body": _unknown_text(error) or "规则正文有误。"}, status=422)
    flash(f"已发布第 {rules.number} 版分销规则，现为当前版本。", "success")
    return redirect(url_for("console.programme_rules_page", rules_id=rules_id), 303)
