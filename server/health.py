"""Liveness and readiness for load balancers and the demo."""
from __future__ import annotations

from typing import Any

from flask import Blueprint
from sqlalchemy import text

from server import cache, db
from server.errors import UpstreamError, envelope

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """The database answers (else 502); Redis, when configured, answers (else 200 "degraded", with the reason)."""
    try:
        db.session().execute(text("SELECT 1"))
    except Exception:
        raise UpstreamError("a backing service is not answering") from None
    if cache.link() is None:
        return envelope({"status": "ok", "redis": False})
    reason = cache.degraded_reason()
    if reason is not None:
        return envelope({"status": "degraded", "redis": False, "reason": reason})
    return envelope({"status": "ok", "redis": True})
