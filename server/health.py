"""Liveness and readiness for load balancers and the demo."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from sqlalchemy import text

from server import cache, db
from server.errors import UpstreamError, envelope

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """The database answers (else 502); Redis, when configured, answers (else 200 "degraded", with the
    reason); in sandbox mode, where the WeChat sandbox is."""
    try:
        db.session().execute(text("SELECT 1"))
    except Exception:
        raise UpstreamError("a backing service is not answering") from None
    # The demo and other development clients drive the sandbox (payments, scans) and find it here.
    sandbox_url = current_app.config["WECHAT_API_BASE"].rstrip("/") if current_app.config["WECHAT_SANDBOX"] else None
    if cache.link() is None:
        return envelope({"status": "ok", "redis": False, "sandbox_url": sandbox_url})
    reason = cache.degraded_reason()
    if reason is not None:
        return envelope({"status": "degraded", "redis": False, "reason": reason, "sandbox_url": sandbox_url})
    return envelope({"status": "ok", "redis": True, "sandbox_url": sandbox_url})
