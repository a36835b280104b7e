"""The JS-SDK: the official account's jsapi_ticket, stored and refreshed like the access token, and
the ``wx.config`` signature, checked against WeChat's documented example and the sandbox."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, ContextManager, Iterator

import pytest
import redis
import requests
from flask import Flask
from wechatpy.session.memorystorage import MemoryStorage

from server import cache, config, wechat
from server.wechat.client import (
    SHARE_JS_APIS,
    OfficialAccount,
    WeChatApiClient,
    WeChatError,
    jsapi_signature,
    redact_url,
)
from wechat_sandbox import SandboxServer, SandboxState, WeChatFault, create_sandbox_app, serve_in_thread

APPID, SECRET = "wxjssdktest000001", "jssdk-secret-one"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = serve_in_thread(create_sandbox_app({APPID: SECRET}, seed="jssdk-seed"))
    yield server
    server.shutdown()


@pytest.fixture
def state(sandbox: SandboxServer) -> SandboxState:
    return sandbox.app.extensions["sandbox_state"]


@pytest.fixture
def make_oa(sandbox: SandboxServer) -> Iterator[Callable[..., OfficialAccount]]:
    built: list[OfficialAccount] = []

    def make(*, session: Any = None, lock_factory: Callable[[str], ContextManager[Any]] | None = None) -> OfficialAccount:
        client = WeChatApiClient(APPID, SECRET, api_base=sandbox.base_url, session=session or MemoryStorage(),
                                 lock_factory=lock_factory)
        oa = OfficialAccount(client)
        built.append(oa)
        return oa

    yield make
    for oa in built:
        oa.close()


@pytest.fixture
def oa(make_oa: Callable[..., OfficialAccount]) -> OfficialAccount:
    return make_oa()


def verify(sandbox: SandboxServer, url: str, config: dict[str, Any]) -> str:
    res = requests.post(sandbox.base_url + "sandbox/jssdk/verify", json={"url": url, "config": config}, timeout=10)
    assert res.status_code == 200
    return res.json()["errMsg"]


def ticket_calls(state: SandboxState) -> int:
    return state.calls["/cgi-bin/ticket/getticket"]


PAGE = "https://shop.example.com/h5/member?from=menu"


# -- the signature --------------------------------------------------------------------------


def test_signature_of_wechats_documented_example() -> None:
    # The JS-SDK documentation, Appendix 1.
    ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
    assert jsapi_signature(ticket, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value") \
        == "0f9de62fce790f9a083d5c99e95740ceb90c27ed"


def test_signature_refuses_a_url_with_a_fragment() -> None:
    with pytest.raises(ValueError):
        jsapi_signature("t", "n", 1, "https://shop.example.com/h5/member#top")


def test_config_verifies_for_its_page_and_no_other(oa: OfficialAccount, sandbox: SandboxServer) -> None:
    config = oa.jssdk_config(PAGE + "#section").as_dict()
    assert config["appId"] == APPID and config["jsApiList"] == list(SHARE_JS_APIS)
    assert isinstance(config["timestamp"], int) and abs(config["timestamp"] - time.time()) < 5
    assert config["nonceStr"].isalnum()
    # The JS-SDK signs location.href without its fragment, whatever the fragment is.
    assert verify(sandbox, PAGE, config) == "config:ok"
    assert verify(sandbox, PAGE + "#other", config) == "config:ok"
    assert verify(sandbox, PAGE + "&x=1", config) == "config:invalid signature"
    assert verify(sandbox, "https://shop.example.com/h5/member?from=menu".replace("menu", "MENU"), config) \
        == "config:invalid signature"
    assert verify(sandbox, PAGE, {**config, "timestamp": config["timestamp"] + 1}) == "config:invalid signature"
    assert verify(sandbox, PAGE, {**config, "appId": "wxsomeoneelse0001"}) == "config:invalid appid"


def test_the_url_is_signed_as_is_not_encoded(oa: OfficialAccount, sandbox: SandboxServer) -> None:
    page = "https://shop.example.com/h5/member?name=%E5%BA%97&a=b c"
    config = oa.jssdk_config(page).as_dict()
    assert verify(sandbox, page, config) == "config:ok"
    assert verify(sandbox, "https://shop.example.com/h5/member?name=店&a=b%20c", config) == "config:invalid signature"


# -- the ticket ---------------------------------------------------------------------------


def test_ticket_fetched_once_and_reused(oa: OfficialAccount, state: SandboxState) -> None:
    configs = [oa.jssdk_config(PAGE) for _ in range(3)]
    assert ticket_calls(state) == 1 and state.token_requests == 1
    assert len({c.nonce_str for c in configs}) == 3


def test_ticket_shared_through_storage(make_oa: Callable[..., OfficialAccount], state: SandboxState) -> None:
    storage = MemoryStorage()
    make_oa(session=storage).jssdk_config(PAGE)
    make_oa(session=storage).jssdk_config(PAGE)
    assert ticket_calls(state) == 1


def test_ticket_near_its_expiry_is_refreshed_first(oa: OfficialAccount, sandbox: SandboxServer, state: SandboxState) -> None:
    oa.jssdk_config(PAGE)
    key = oa.client._ticket_key("jsapi")
    entry = oa.client.session.get(key)
    oa.client.session.set(key, {**entry, "expires_at": time.time() + 200})  # inside the five-minute margin
    config = oa.jssdk_config(PAGE).as_dict()
    assert ticket_calls(state) == 2
    assert oa.client.session.get(key)["ticket"] != entry["ticket"]
    assert verify(sandbox, PAGE, config) == "config:ok"


def test_an_older_ticket_stays_valid_after_a_new_one(oa: OfficialAccount, sandbox: SandboxServer) -> None:
    old = oa.jssdk_config(PAGE).as_dict()
    oa.client.refresh_ticket("jsapi", stale=oa.client.ticket("jsapi"))
    new = oa.jssdk_config(PAGE).as_dict()
    assert verify(sandbox, PAGE, old) == verify(sandbox, PAGE, new) == "config:ok"
    requests.post(sandbox.base_url + "sandbox/jssdk/expire", timeout=10)
    assert verify(sandbox, PAGE, new) == "config:invalid signature"


@pytest.mark.parametrize("invalidate", ["revoke_tokens", "expire_tokens"])
def test_an_invalid_access_token_is_refreshed_and_the_ticket_fetch_retried(
    oa: OfficialAccount, sandbox: SandboxServer, state: SandboxState, invalidate: str
) -> None:
    oa.client.access_token  # a token, but no ticket yet
    getattr(state, invalidate)()
    config = oa.jssdk_config(PAGE).as_dict()
    assert verify(sandbox, PAGE, config) == "config:ok"
    assert state.token_requests == 2 and ticket_calls(state) == 2  # one refused, one retried


def test_a_persistent_token_error_surfaces(oa: OfficialAccount, state: SandboxState, monkeypatch: pytest.MonkeyPatch) -> None:
    def always_stale(token: str | None) -> str:
        raise WeChatFault(40001, "invalid credential, access_token is invalid or not latest")

    monkeypatch.setattr(state, "check_token", always_stale)
    with pytest.raises(WeChatError) as raised:
        oa.jssdk_config(PAGE)
    assert raised.value.errcode == 40001 and ticket_calls(state) == 2
    assert oa.client._stored_ticket("jsapi") is None


def test_concurrent_configs_fetch_one_ticket(make_oa: Callable[..., OfficialAccount], sandbox: SandboxServer,
                                             state: SandboxState) -> None:
    storage = MemoryStorage()
    locks: dict[str, threading.Lock] = {}
    guard = threading.Lock()

    def shared_lock(name: str) -> threading.Lock:
        with guard:
            return locks.setdefault(name, threading.Lock())

    workers = [make_oa(session=storage, lock_factory=shared_lock) for _ in range(2)]
    workers[0].client.access_token
    requests.post(sandbox.base_url + "sandbox/stall",
                  json={"path": "/cgi-bin/ticket/getticket", "seconds": 0.3, "times": 10}, timeout=10)
    barrier = threading.Barrier(6)
    results: list[Any] = []

    def call(worker: OfficialAccount) -> None:
        barrier.wait()
        try:
            results.append(worker.jssdk_config(PAGE).as_dict())
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=call, args=(w,)) for w in workers for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(results) == 6 and all(isinstance(r, dict) for r in results)
    assert ticket_calls(state) == 1
    assert all(verify(sandbox, PAGE, r) == "config:ok" for r in results)


def test_the_ticket_is_never_logged(oa: OfficialAccount, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        oa.jssdk_config(PAGE)
    ticket = oa.client.ticket("jsapi")
    assert caplog.records
    assert all(ticket not in record.getMessage() for record in caplog.records)
    assert ticket not in repr(oa.jssdk_config(PAGE))
    assert redact_url(f"jsapi_ticket=x&url=https://a/?jsapi_ticket={ticket}") .endswith("jsapi_ticket=***")


def test_card_tickets_are_kept_apart(oa: OfficialAccount, state: SandboxState) -> None:
    jsapi, card = oa.client.ticket("jsapi"), oa.client.ticket("wx_card")
    assert jsapi != card and ticket_calls(state) == 2
    with pytest.raises(ValueError):
        oa.client.refresh_ticket("wx_pay")


def test_workers_share_one_ticket_through_real_redis(sandbox: SandboxServer, state: SandboxState, redis_url: str) -> None:
    # The worker\'s own Redis database: another worker flushes its own between tests.
    url = redis_url
    with redis.Redis.from_url(url) as r:
        r.delete(f"wechat:{APPID}_jsapi_ticket_entry", f"wechat:{APPID}_access_token_entry")
    apps = []
    for _ in range(2):
        app = Flask("worker")
        settings = config.TestingConfig()
        settings.REDIS_URL = url
        settings.WECHAT_OA_APPID, settings.WECHAT_OA_SECRET = APPID, SECRET
        settings.WECHAT_API_BASE = sandbox.base_url
        app.config.from_mapping(vars(settings))
        cache.init_app(app)
        wechat.init_app(app)
        apps.append(app)
    try:
        configs = [app.extensions["wechat_official_account"].jssdk_config(PAGE).as_dict() for app in apps for _ in range(2)]
        assert ticket_calls(state) == 1
        assert all(verify(sandbox, PAGE, c) == "config:ok" for c in configs)
    finally:
        with redis.Redis.from_url(url) as r:
            r.delete(f"wechat:{APPID}_jsapi_ticket_entry", f"wechat:{APPID}_access_token_entry")
        for app in apps:
            app.extensions["wechat_official_account"].close()
            app.extensions["wechat_miniprogram"].close()
