"""The WeChat sandbox: a fake WeChat on its own HTTP server, for development and tests.

``server`` never imports this package at module level (``tests/test_layers.py`` checks it):
only the code paths that run in sandbox mode import it, inside a function. See ``wechat_sandbox.app``.
"""
from __future__ import annotations

from wechat_sandbox.app import (
    QR_ERROR_CORRECTION,
    MessagePush,
    PayFault,
    PayMerchant,
    PayState,
    SandboxServer,
    SandboxState,
    WeChatFault,
    build_pay_notification,
    build_refund_notification,
    create_sandbox_app,
    install_pay_merchant,
    message_push_from_config,
    original_id,
    pay_merchant_from_config,
    render_code,
    sandbox_apps_from_config,
    serve_in_thread,
)

__all__ = [
    "QR_ERROR_CORRECTION",
    "MessagePush",
    "PayFault",
    "PayMerchant",
    "PayState",
    "SandboxServer",
    "SandboxState",
    "WeChatFault",
    "build_pay_notification",
    "build_refund_notification",
    "create_sandbox_app",
    "install_pay_merchant",
    "message_push_from_config",
    "original_id",
    "pay_merchant_from_config",
    "render_code",
    "sandbox_apps_from_config",
    "serve_in_thread",
]
