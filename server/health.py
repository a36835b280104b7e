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
    """The database (and Redis, when configured) answer; in sandbox mode, where the WeChat sandbox is."""
    try:
        db.session().execute(text("SELECT 1"))
        redis_client = cache.client()
        if redis_client is not None:
            redis_client.ping()
    except Exception:
        raise UpstreamError("a backing service is not answering") from None
    # The demo and other development clients drive the sandbox (payments, scans) and find it here.
    sandbox_url = current_app.config["WECHAT_API_BASE"].rstrip("/") if current_app.config["WECHAT_SANDBOX"] else None
    return envelope({"status": "ok", "redis": cache.client() is not None, "sandbox_url": sandbox_url})
