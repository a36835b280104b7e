"""The WeChat sandbox: a fake WeChat on its own HTTP server, speaking WeChat's wire formats.

Dev runs and tests point ``WECHAT_API_BASE`` here; the client code cannot tell it
from WeChat. It is as strict as WeChat (wrong method, missing or expired token,
bad scene are all refused the way WeChat refuses them) so the client is really
exercised, and it answers errors as WeChat does: HTTP 200 with ``errcode``/``errmsg``.

Codes the sandbox accepts, standing in for what a phone would produce:

- ``wx.login()`` code ``sandbox:<name>``: always the same member ``<name>``
  (1–64 of ``A-Za-z0-9_-.``); openid differs per appid, unionid does not. A reusable
  developer code: WeChat's own codes work once, and so do the opaque ones
  ``POST /sandbox/users/<name>/code`` issues (a second exchange gets 40163 "code been used";
  after five minutes, 40029).
- ``getPhoneNumber`` code ``sandbox-phone:13800138000`` (mainland, +86) or
  ``sandbox-phone:+852-51234567`` (elsewhere).

- Official-account OAuth: ``/connect/oauth2/authorize?…&sandbox_user=<name>``
  redirects at once with code ``sandbox-oauth:<name>`` (``snsapi_base``) or
  ``sandbox-oauth-userinfo:<name>`` (``snsapi_userinfo``); only the latter's
  exchange returns a unionid, as WeChat documents. With ``sandbox_snapshot=1`` too (code
  ``sandbox-oauth-snapshot:<name>``) the user is looking at a Moments snapshot page: the
  exchange answers ``is_snapshotuser: 1`` and a virtual openid shared by all such viewers.

Openids are issued, as on WeChat: a prepay for an openid the sandbox never handed out
for that appid is refused with OPENID_MISMATCH.

The official account's users are played on request: ``POST /sandbox/oa/events``
makes user ``<name>`` follow (through a QR code), scan, leave or write, and the
sandbox pushes WeChat's signed, optionally encrypted XML to the callback URL set
in ``MessagePush`` (the MP console's 服务器配置, also ``PUT /sandbox/oa/push``).

WeChat Pay is played for one merchant (``PayMerchant``): v2 and v3 orders, queries,
closes and refunds, and the buyer paying (``POST /sandbox/pay/pay``), which sends
WeChat's signed notification to the order's notify URL. v3 is signed with the merchant's platform
certificates (listed at ``GET /v3/certificates``, rotated with ``POST /sandbox/pay/certificates/rotate``)
or its WeChat Pay public key (``PUT /sandbox/pay/signer``, or a request naming ``PUB_KEY_ID_…``).

Each API family is a module with its blueprint, registered in ``create_sandbox_app``
(``app``): ``access_token``, ``miniprogram``, ``messages`` (subscribe and template messages, the
users' allowances, ``GET /sandbox/messages``), ``official_account`` (with the QR-image and
OAuth hosts as blueprints of their own) and the users it plays (``oa_users``), WeChat Pay's
merchant and book of orders (``pay_state``, in ``app.extensions["sandbox_pay"]``), ``pay_v2``,
``pay_v3``, the buyer it plays (``buyer``) and the sandbox's own ``controls``; ``core`` holds
what they share. ``keys`` generates the WeChat Pay key pairs the sandbox and the app hold.

``server`` never imports this package at module level (``tests/test_layers.py`` checks it):
development code paths that run in sandbox mode only import it inside a function.
"""
from __future__ import annotations

from wechat_sandbox.app import SandboxServer, create_sandbox_app, sandbox_apps_from_config, serve_in_thread
from wechat_sandbox.core import SandboxState, WeChatFault
from wechat_sandbox.keys import SandboxKeys, ensure_sandbox_keys
from wechat_sandbox.miniprogram import QR_ERROR_CORRECTION, render_code
from wechat_sandbox.official_account import MessagePush, message_push_from_config, original_id
from wechat_sandbox.pay_state import (
    PayFault,
    PayMerchant,
    PayState,
    build_pay_notification,
    build_refund_notification,
    install_pay_merchant,
    pay_merchant_from_config,
)

__all__ = [
    "QR_ERROR_CORRECTION",
    "MessagePush",
    "PayFault",
    "PayMerchant",
    "PayState",
    "SandboxKeys",
    "SandboxServer",
    "SandboxState",
    "WeChatFault",
    "build_pay_notification",
    "build_refund_notification",
    "create_sandbox_app",
    "ensure_sandbox_keys",
    "install_pay_merchant",
    "message_push_from_config",
    "original_id",
    "pay_merchant_from_config",
    "render_code",
    "sandbox_apps_from_config",
    "serve_in_thread",
]
