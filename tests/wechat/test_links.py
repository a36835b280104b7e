"""The mini-program adapter's URL Link and URL Scheme against the sandbox."""
from __future__ import annotations

import time
from typing import Iterator

import pytest
import requests
from wechatpy.session.memorystorage import MemoryStorage

from server.wechat.client import LINK_MAX_SECONDS, MiniProgram, WeChatApiClient, WeChatError
from wechat_sandbox import SandboxServer, create_sandbox_app, serve_in_thread

APPID, SECRET = "wxlinkstest000001", "links-secret-one"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = serve_in_thread(create_sandbox_app({APPID: SECRET}, seed="links-seed", pages=frozenset({"pages/index/index"})))
    yield server
    server.shutdown()


@pytest.fixture
def mp(sandbox: SandboxServer) -> Iterator[MiniProgram]:
    program = MiniProgram(WeChatApiClient(APPID, SECRET, api_base=sandbox.base_url, session=MemoryStorage()))
    yield program
    program.close()


def opened(sandbox: SandboxServer, url: str) -> dict[str, object]:
    return requests.get(sandbox.base_url + "sandbox/links/open", params={"url": url}, timeout=10).json()


def test_url_link_and_scheme_open_the_page_with_the_query(mp: MiniProgram, sandbox: SandboxServer) -> None:
    expire_time = int(time.time()) + 7 * 86400
    link = mp.generate_url_link("pages/index/index", "scene=Ab12", expire_time=expire_time)
    scheme = mp.generate_scheme("pages/index/index", "scene=Ab12", expire_time=expire_time)
    assert link.url.startswith("https://wxaurl.cn/") and scheme.url.startswith("weixin://dl/business/?t=")
    assert link.expires_at == scheme.expires_at == expire_time
    for url in (link.url, scheme.url):
        assert opened(sandbox, url) | {"kind": None} == {
            "appid": APPID, "kind": None, "path": "pages/index/index", "query": "scene=Ab12",
            "env_version": "release", "expires_at": expire_time,
        }


def test_wechats_refusal_is_a_wechat_error(mp: MiniProgram) -> None:
    with pytest.raises(WeChatError) as raised:
        mp.generate_url_link("pages/unknown/index", "scene=Ab12", expire_time=int(time.time()) + 3600)
    assert raised.value.errcode == 40165
    with pytest.raises(WeChatError) as raised:
        mp.generate_scheme("pages/index/index", "scene=店", expire_time=int(time.time()) + 3600)
    assert raised.value.errcode == 40212


@pytest.mark.parametrize(
    ("path", "query", "seconds"),
    [
        ("pages/index/index?scene=1", "", 3600),
        ("pages/index/index", "q" * 1025, 3600),
        ("pages/index/index", "scene=1", 30),
        ("pages/index/index", "scene=1", LINK_MAX_SECONDS + 60),
    ],
)
def test_what_wechat_would_refuse_is_not_sent(mp: MiniProgram, sandbox: SandboxServer, path: str, query: str, seconds: int) -> None:
    state = sandbox.app.extensions["sandbox_state"]
    for make in (mp.generate_url_link, mp.generate_scheme):
        with pytest.raises(ValueError):
            make(path, query, expire_time=int(time.time()) + seconds)
    assert state.calls["/wxa/generate_urllink"] == state.calls["/wxa/generatescheme"] == 0
