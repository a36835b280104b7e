"""WeChat adapters for the app: one MiniProgram and one OfficialAccount per app, tokens shared through Redis.

Nothing here knows whether ``WECHAT_API_BASE`` is WeChat or the sandbox.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from flask import Flask, current_app, has_app_context

from server import cache, db, html
from server.wechat.client import LockFactory, MiniProgram, OfficialAccount
from server.wechat.oa_messages import MessageCodec
from server.wechat.pay import WeChatPayGateway


def _app_lock_factory(app: Flask) -> LockFactory:
    """``server.cache.lock`` for ``app``, usable with or without an app context."""

    @contextlib.contextmanager
    def factory(name: str) -> Iterator[Any]:
        if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]  # current_app is typed as the Flask it proxies
            # Pushing a second context here would run the app's teardown handlers when it pops.
            with cache.lock(name):
                yield
            return
        # A thread or job without this app's context: lend it one for the lock.
        with app.app_context(), cache.lock(name):
            yield

    return factory


def _app_cache(app: Flask) -> tuple[Callable[[str], Any], Callable[[str, Any, float], None]]:
    """``server.cache`` values of ``app``, usable with or without an app context."""

    def get(key: str) -> Any:
        if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
            return cache.get_value(key)
        with app.app_context():
            return cache.get_value(key)

    def put(key: str, value: Any, ttl: float) -> None:
        if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
            cache.set_value(key, value, ttl)
            return
        with app.app_context():
            cache.set_value(key, value, ttl)

    return get, put


def init_app(app: Flask) -> None:
    """Build the app's adapters; runs after ``server.cache.init_app`` so Redis is known.

    A malformed EncodingAESKey fails here, at start-up, rather than on WeChat's first callback.
    """
    lock_factory = _app_lock_factory(app)
    app.extensions["wechat_miniprogram"] = MiniProgram.from_config(app.config, app.extensions.get("redis_link"), lock_factory)
    app.extensions["wechat_official_account"] = OfficialAccount.from_config(
        app.config, app.extensions.get("redis_link"), lock_factory
    )
    # The member zone shows the account's QR code from WeChat's image host.
    html.allow_images_from(app, app.extensions["wechat_official_account"].mp_base)
    app.extensions["wechat_oa_messages"] = MessageCodec.from_config(app.config)
    pay = WeChatPayGateway.from_config(app.config)
    if pay.v3 is not None:
        # Platform certificates are shared by every worker through the cache, and never fetched inside a transaction.
        pay.v3.cache = _app_cache(app)
        pay.v3.in_transaction = db.transaction_open
    app.extensions["wechat_pay"] = pay


def miniprogram() -> MiniProgram:
    """The current app's MiniProgram."""
    return current_app.extensions["wechat_miniprogram"]


def official_account() -> OfficialAccount:
    """The current app's OfficialAccount."""
    return current_app.extensions["wechat_official_account"]


def oa_messages() -> MessageCodec | None:
    """The current app's callback codec; None when no ``WECHAT_OA_TOKEN`` is configured."""
    return current_app.extensions["wechat_oa_messages"]


def wechat_pay() -> WeChatPayGateway:
    """The current app's WeChat Pay (v2 and/or v3, whichever the merchant configured)."""
    return current_app.extensions["wechat_pay"]
