"""The sandbox's own controls (``/sandbox/…``, not WeChat's): health, stalling a WeChat route on
purpose, one-time login codes, revoking and expiring tokens.
"""
from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request

from wechat_sandbox.core import LOGIN_CODE_TTL, _control_error, _Stall, state

#: A member name the sandbox can play.
USER_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


control_bp = Blueprint("sandbox_control", __name__, url_prefix="/sandbox")


@control_bp.get("/health")
def health() -> Response:
    return jsonify(ok=True)


@control_bp.before_app_request
def _hold_stalled_route() -> None:
    """Hold a call to a stalled route (see ``stall_route``) before WeChat's handler sees it."""
    sandbox = state()
    with sandbox.lock:
        stall = sandbox.stalls.get(request.path)
        if stall is None or stall.times <= 0 or stall.released.is_set():
            return
        stall.times -= 1
        stall.waiting += 1
    try:
        stall.released.wait(stall.seconds)
    finally:
        with sandbox.lock:
            stall.waiting -= 1


@control_bp.route("/stall", methods=["GET", "POST", "DELETE"])
def stall_route() -> Response:
    """Slow WeChat down on purpose: ``POST {"path", "seconds" ≤ 60, "times" ≥ 1}`` holds the next ``times``
    calls to ``path`` for ``seconds`` (or until ``DELETE ?path=`` releases them); ``GET`` shows who waits."""
    sandbox = state()
    if request.method == "GET":
        with sandbox.lock:
            return jsonify({path: {"waiting": s.waiting, "times": s.times} for path, s in sandbox.stalls.items()})
    if request.method == "DELETE":
        path = request.args.get("path")
        with sandbox.lock:
            released = [s for p, s in sandbox.stalls.items() if path is None or p == path]
            for stall in released:
                stall.released.set()
            for p in [p for p, s in sandbox.stalls.items() if s in released and s.waiting == 0]:
                del sandbox.stalls[p]
        return jsonify(released=len(released))
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not body["path"].startswith("/"):
        return _control_error(400, "path (starting with /) is required")
    seconds, times = body.get("seconds", 10), body.get("times", 1)
    if type(seconds) not in (int, float) or not 0 < seconds <= 60 or type(times) is not int or not 1 <= times <= 1000:
        return _control_error(400, "seconds must be in (0, 60] and times in [1, 1000]")
    with sandbox.lock:
        sandbox.stalls[body["path"]] = _Stall(float(seconds), times)
    return jsonify(path=body["path"], seconds=seconds, times=times)


@control_bp.post("/users/<name>/code")
def issue_login_code(name: str) -> Response:
    """Play member ``<name>`` calling ``wx.login()``: a fresh one-time code (``?appid=`` binds it to one app)."""
    if not USER_NAME.fullmatch(name):
        return _control_error(400, "name must be 1-64 of A-Za-z0-9_.-")
    appid = request.args.get("appid")
    if appid is not None and appid not in state().apps:
        return _control_error(400, "unknown appid")
    return jsonify(code=state().issue_login_code(name, appid), expires_in=LOGIN_CODE_TTL)


@control_bp.post("/tokens/revoke")
def revoke_tokens() -> Response:
    return jsonify(revoked=state().revoke_tokens(request.args.get("appid")))


@control_bp.post("/tokens/expire")
def expire_tokens() -> Response:
    return jsonify(expired=state().expire_tokens(request.args.get("appid")))
