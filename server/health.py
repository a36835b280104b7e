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
    """The database (and Redis, when configured) answer."""
    try:
        db.session().execute(text("SELECT 1"))
        redis_client = cache.client()
        if redis_client is not None:
            redis_client.ping()
    except Exception:
        raise UpstreamError("a backing service is not answering") from None
    return envelope({"status": "ok", "redis": cache.client() is not None})
