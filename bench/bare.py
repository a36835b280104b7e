"""The baseline ``run.py`` measures the app against: Flask answering a trivial JSON envelope on any GET,
reading the body of any POST first (a payment notification gets WeChat's empty 204), nothing else.

Served by ``gunicorn -c gunicorn.conf.py --pythonpath bench 'bare:create_app()'`` with the app's settings.
"""
from __future__ import annotations

from flask import Flask, Response, jsonify, request

NOTIFY_PATHS = ("/wechat/pay/v3/notify", "/wechat/pay/notify")


def create_app() -> Flask:
    app = Flask("bare")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok")

    @app.get("/<path:path>")
    def read(path: str) -> Response:
        return jsonify({"code": 0, "message": "ok", "data": {"ok": True}})

    @app.post("/<path:path>")
    def write(path: str) -> Response:
        request.get_data()
        if request.path in NOTIFY_PATHS:
            return Response(status=204)
        return jsonify({"code": 0, "message": "ok", "data": {"ok": True}})

    return app
