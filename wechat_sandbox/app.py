"""The sandbox as a Flask app (``create_sandbox_app``), one blueprint per API family, and served on
a thread of its own (``serve_in_thread``).
"""
from __future__ import annotations

import threading
from typing import Any, Mapping

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from server.api import JSONProvider
from server.wechat.client import redact_url
from server.wechat.pay import mute_wechatpy_pay_logs
from wechat_sandbox.access_token import token_bp
from wechat_sandbox.buyer import pay_control_bp
from wechat_sandbox.controls import control_bp
from wechat_sandbox.core import SandboxState, WeChatFault, _render_fault
from wechat_sandbox.jssdk import TicketBook, jssdk_bp
from wechat_sandbox.links import LinkBook, links_bp
from wechat_sandbox.messages import messages_bp
from wechat_sandbox.miniprogram import miniprogram_bp
from wechat_sandbox.oa_users import oa_users_bp
from wechat_sandbox.official_account import MessagePush, OfficialAccountState, mp_bp, official_account_bp, open_bp
from wechat_sandbox.pay_state import PayMerchant, PayState
from wechat_sandbox.pay_v2 import pay_v2_bp
from wechat_sandbox.pay_v3 import pay_v3_bp


def create_sandbox_app(
    apps: Mapping[str, str],
    *,
    seed: str,
    pages: frozenset[str] | None = None,
    message_push: MessagePush | None = None,
    pay: PayMerchant | None = None,
) -> Flask:
    """A Flask app playing WeChat for the apps ``{appid: secret}``; ``seed`` fixes derived ids.

    ``message_push`` is where (``callback_url``) and how the official account's messages are pushed.
    ``pay`` is the WeChat Pay merchant (``pay_merchant_from_config``); without it, the one the
    environment's configuration describes, resolved on the first pay call.
    """
    if not apps:
        raise ValueError("the sandbox needs at least one appid and secret")
    mute_wechatpy_pay_logs()
    app = Flask(__name__)
    app.json = JSONProvider(app)
    app.extensions["sandbox_state"] = SandboxState(apps, seed, pages)
    app.extensions["sandbox_oa"] = OfficialAccountState(message_push)
    app.extensions["sandbox_pay"] = PayState(pay)
    app.extensions["sandbox_tickets"] = TicketBook()
    app.extensions["sandbox_links"] = LinkBook()
    app.register_error_handler(WeChatFault, _render_fault)
    for bp in (control_bp, token_bp, miniprogram_bp, messages_bp, official_account_bp, jssdk_bp, links_bp, oa_users_bp, mp_bp, open_bp, pay_v2_bp, pay_v3_bp, pay_control_bp):
        app.register_blueprint(bp)
    return app


def sandbox_apps_from_config(config: Mapping[str, Any]) -> dict[str, str]:
    """The ``{appid: secret}`` the sandbox should accept: the mini-program's and the official account's."""
    apps: dict[str, str] = {}
    for appid_key, secret_key in (("WECHAT_APPID", "WECHAT_SECRET"), ("WECHAT_OA_APPID", "WECHAT_OA_SECRET")):
        appid, secret = config.get(appid_key), config.get(secret_key)
        if appid and secret:
            apps[appid] = secret
    return apps


class _RedactingRequestHandler(WSGIRequestHandler):
    """Werkzeug's access log, minus secrets: the token and login URLs carry them in the query."""

    def log(self, type: str, message: str, *args: Any) -> None:
        text = message % args if args else message
        super().log(type, "%s", redact_url(text))


class SandboxServer:
    """A sandbox app served on a daemon thread."""

    def __init__(self, app: Flask, server: BaseWSGIServer, thread: threading.Thread) -> None:
        self.app = app
        self._server = server
        self._thread = thread
        self.host = server.host
        self.port = server.port
        self.base_url = f"http://{self.host}:{self.port}/"

    def shutdown(self) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.shutdown()
        self._thread.join(timeout=5)


def serve_in_thread(app: Flask, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    """Serve ``app`` on ``host:port`` (0 picks a free port) from a daemon thread."""
    server = make_server(host, port, app, threaded=True, request_handler=_RedactingRequestHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"wechat-sandbox:{server.port}", daemon=True
    )
    thread.start()
    return SandboxServer(app, server, thread)
