"""Exports of the console's lists: ``/console/<list>/export?format=csv|xlsx&<the page's filters>``.

An export holds exactly the rows the page's filters select, on every page, in the page's order
(``export_lists``). It is counted first: up to ``EXPORT_STREAM_MAX_ROWS`` rows the file is sent at once
(CSV streamed row by row, XLSX written to a temporary file and sent); a larger one becomes an export
job written in the background to ``EXPORT_DIR``, whose page (``/console/exports/<id>``) shows its
progress and then a download link only its staff member may use, until it expires (410 after).
Every export leaves an audit entry with its list, filters and row count (``export_jobs.record_export``).

Exporting a list needs the list's own area: the file shows nothing the page does not (phones masked
as there), so no role may see a list but not export it.
"""
from __future__ import annotations

import functools
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from flask import current_app, flash, redirect, render_template, request, send_file, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from server import db, tasks
from server.accounts import export_jobs
from server.accounts.models import ExportJob, ExportState
from server.clock import local
from server.console.export_lists import LISTS, ExportList, count_rows, export_rows
from server.console.roles import allowed
from server.console.routes import bp, error_page
from server.console.session import console_view, current_staff
from server.errors import NotFoundError
from server.exports import FORMATS, MIME, content_disposition, download, write_csv, write_xlsx

#: The most data rows an Excel sheet holds (1,048,576 rows, one of them the header).
XLSX_MAX_ROWS = 1_048_575
#: Background exports one staff member may have queued or running at once.
MAX_ACTIVE = 3
#: How many of a staff member's exports their list shows.
RECENT = 50
FORMAT_NAMES = {"csv": "CSV", "xlsx": "Excel"}


def _ttl() -> timedelta:
    return timedelta(hours=int(current_app.config["EXPORT_TTL_HOURS"]))


def _export_dir() -> Path:
    return Path(current_app.config["EXPORT_DIR"])


def _file_title(export: ExportList) -> str:
    return f"{export.title}-{local(db.utcnow()):%Y%m%d-%H%M%S}"


def export_url(name: str, fmt: str) -> str:
    """The export of list ``name`` in ``fmt`` with the filters of the page being shown."""
    export = LISTS[name]
    args: dict[str, Any] = {**export.filters(request.args), "format": fmt}
    return url_for(f"console.{name}_export", **args)


# -- asking for an export ---------------------------------------------------------------------------


def _export_view(export: ExportList) -> Callable[[], Any]:
    def view() -> Any:
        fmt = next((f for f in FORMATS if f == request.args.get("format", "")), None)
        if fmt is None:
            return error_page(400, "导出格式应为 csv 或 xlsx。")
        # The filters as stored and audited are what the export selects with, here and in a background job.
        filters = export.filters(request.args)
        stmt, problems = export.select(filters)
        if problems:
            return error_page(400, "筛选条件有误，请修改后再导出：" + "；".join(problems))
        sess = db.session()
        staff = current_staff()
        total = count_rows(sess, export, stmt)
        if fmt == "xlsx" and total > XLSX_MAX_ROWS:
            return error_page(422, f"共 {total:,} 行，超过 Excel 单表上限 {XLSX_MAX_ROWS:,} 行；请缩小筛选范围或导出 CSV。")
        if total <= int(current_app.config["EXPORT_STREAM_MAX_ROWS"]):
            export_jobs.record_export(sess, staff_id=staff.id, list_name=export.name, fmt=fmt, filters=filters, rows=total)
            # CSV is sent after the request's commit: each batch then ends its read, so no transaction
            # stays open while a slow client downloads. XLSX is written before the answer, in the request.
            end_read = sess.rollback if fmt == "csv" else None
            rows = export_rows(sess, export, stmt, size=int(current_app.config["EXPORT_BATCH_ROWS"]), end_read=end_read)
            return download(fmt, _file_title(export), export.columns, rows, sheet=export.title)
        return _start_job(sess, export, fmt, filters, total)

    view.__name__ = f"{export.name}_export"
    view.__doc__ = f"The {export.name} list as a file, with the page's filters (see the module)."
    return view


def _start_job(sess: Session, export: ExportList, fmt: str, filters: dict[str, str], total: int) -> Any:
    """A background export, or the same one already under way; refused when the staff member has too many."""
    staff = current_staff()
    active = export_jobs.active_exports(sess, staff.id)
    for job in active:
        if job.list_name == export.name and job.format == fmt and job.filters == filters:
            flash("同样的导出正在进行中。", "info")
            return redirect(url_for("console.export_job", job_id=job.id), 303)
    if len(active) >= MAX_ACTIVE:
        return error_page(429, f"你已有 {len(active)} 个导出正在进行，请等它们完成后再导出。")
    job = export_jobs.start_export(sess, staff_id=staff.id, list_name=export.name, fmt=fmt, filters=filters, rows_total=total)
    tasks.defer(run_export_job, job.id)
    flash(f"共 {total:,} 行，正在后台生成文件，完成后可在此下载。", "success")
    return redirect(url_for("console.export_job", job_id=job.id), 303)


for _export in LISTS.values():
    bp.add_url_rule(f"/{_export.endpoint.split('.', 1)[1]}/export", endpoint=f"{_export.name}_export", view_func=console_view(_export.area)(_export_view(_export)), methods=["GET"])


# -- the background job ------------------------------------------------------------------------------


def run_export_job(job_id: int) -> None:
    """Write export ``job_id`` to ``EXPORT_DIR`` batch by batch, committing its progress after each batch.

    The file is written under a temporary name and renamed once complete, so a download never sees half
    a file; a failure removes the partial file and marks the job failed with a reason staff can read.
    """
    sess = db.session()
    job = export_jobs.begin_export(sess, job_id)
    if job is None:
        return
    db.commit()
    assert job.file_name is not None
    export_dir = _export_dir()
    part = export_dir / (job.file_name + export_jobs.PART)
    try:
        export = LISTS[job.list_name]
        stmt, _problems = export.select(job.filters)
        export_dir.mkdir(parents=True, exist_ok=True)
        rows = export_rows(
            sess, export, stmt, size=int(current_app.config["EXPORT_BATCH_ROWS"]), after_batch=functools.partial(_save_progress, sess, job)
        )
        with part.open("wb") as out:
            if job.format == "csv":
                done = write_csv(export.columns, rows, out)
            else:
                done = write_xlsx(export.columns, rows, out, sheet=export.title)
        os.replace(part, export_dir / job.file_name)
        export_jobs.finish_export(sess, job, rows_done=done, ttl=_ttl())
        db.commit()
    except Exception:
        current_app.logger.exception("export job %s failed", job_id)
        sess.rollback()
        part.unlink(missing_ok=True)
        export_jobs.fail_export(sess, job_id, "生成文件时出错，请重新导出；如仍失败请联系管理员。", ttl=_ttl())
        db.commit()


def _save_progress(sess: Session, job: ExportJob, rows_done: int) -> None:
    """A batch is written: its progress is committed (which also ends the batch's read)."""
    export_jobs.record_progress(sess, job, rows_done)
    db.commit()


# -- the staff member's exports ----------------------------------------------------------------------


def _own_job(job_id: int) -> ExportJob:
    """The export, if it is the signed-in staff member's (anyone else's is "not found")."""
    job = db.session().get(ExportJob, job_id)
    if job is None or job.staff_id != current_staff().id:
        raise NotFoundError("no such export")
    return job


def _view(job: ExportJob) -> dict[str, Any]:
    export = LISTS.get(job.list_name)
    now = db.utcnow()
    expired = job.expires_at is not None and job.expires_at <= now
    return {
        "job": job,
        "title": export.title if export else job.list_name,
        "format": FORMAT_NAMES.get(job.format, job.format),
        "active": job.state in export_jobs.ACTIVE,
        "done": job.state == ExportState.done and not expired and job.file_name is not None,
        "expired": job.state == ExportState.done and (expired or job.file_name is None),
        "percent": min(100, job.rows_done * 100 // job.rows_total) if job.rows_total else 0,
        "list_url": url_for(export.endpoint, **dict(job.filters)) if export else "",
    }


@bp.get("/exports")
@console_view("exports")
def exports() -> Any:
    """The signed-in staff member's recent exports, newest first."""
    sess = db.session()
    rows = sess.scalars(select(ExportJob).where(ExportJob.staff_id == current_staff().id).order_by(ExportJob.id.desc()).limit(RECENT))
    return render_template("console/exports.html", jobs=[_view(job) for job in rows], ttl_hours=current_app.config["EXPORT_TTL_HOURS"])


@bp.get("/exports/<int:job_id>")
@console_view("exports")
def export_job(job_id: int) -> Any:
    """One export: its progress while it runs (polled with htmx), then the download link."""
    job = _own_job(job_id)
    return render_template("console/export_job.html", view=_view(job))


@bp.get("/exports/<int:job_id>/state")
@console_view("exports")
def export_job_state(job_id: int) -> Any:
    """The export's state as the fragment its page polls."""
    return render_template("console/_export_job.html", view=_view(_own_job(job_id)))


@bp.get("/exports/<int:job_id>/download")
@console_view("exports")
def export_download(job_id: int) -> Any:
    """The finished file, for its staff member alone, while the list is still theirs to see; 410 once expired."""
    job = _own_job(job_id)
    export = LISTS.get(job.list_name)
    if export is None or not allowed(current_staff().role, export.area):
        return error_page(403)
    view = _view(job)
    if view["expired"] or job.state == ExportState.failed:
        return error_page(410, "该导出文件已过期或未生成，请回到列表重新导出。")
    if not view["done"]:
        return error_page(409, "文件还在生成中，请稍候。")
    assert job.file_name is not None
    path = _export_dir() / job.file_name
    if not path.is_file():
        return error_page(410, "该导出文件已不存在，请回到列表重新导出。")
    response: Response = send_file(path, mimetype=MIME[job.format], conditional=False, etag=False)
    response.headers["Content-Disposition"] = content_disposition(f"{export.title}-{job.id}.{job.format}")
    response.headers["Cache-Control"] = "no-store"
    return response


bp.add_app_template_global(export_url, "export_url")
