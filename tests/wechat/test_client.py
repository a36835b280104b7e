"""The WeChat adapter against the sandbox: ids, errors, the shared single-flight token, images."""
from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from typing import Any, Callable, ContextManager, Iterator

import pytest
import redis
from flask import Flask, jsonify
from PIL import Image
from wechatpy.client.api import WeChatWxa
from wechatpy.session.memorystorage import MemoryStorage

from server import cache, config, wechat
from server.wechat.client import (
    MiniProgram,
    PhoneInfo,
    SessionInfo,
    SharedTokenStorage,
    WeChatApiClient,
    WeChatError,
    WeChatUnavailableError,
)
from wechat_sandbox import (
    SandboxServer,
    SandboxState,
    WeChatFault,
    create_sandbox_app,
    render_code,
    serve_in_thread,
)

APPID, SECRET = "wxclienttest00001", "client-secret-one"
OTHER_APPID, OTHER_SECRET = "wxclienttest00002", "client-secret-two"
PHONE = "sandbox-phone:13800138000"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    app = create_sandbox_app({APPID: SECRET, OTHER_APPID: OTHER_SECRET}, seed="client-seed",
                             pages=frozenset({"pages/index/index"}))
    server = serve_in_thread(app)
    yield server
    server.shutdown()


@pytest.fixture
def state(sandbox: SandboxServer) -> SandboxState:
    return sandbox.app.extensions["sandbox_state"]


@pytest.fixture
def make_mp(sandbox: SandboxServer) -> Iterator[Callable[..., MiniProgram]]:
    """Builds MiniPrograms against the sandbox; each keeps its own MemoryStorage unless given one."""
    built: list[MiniProgram] = []

    def make(appid: str = APPID, secret: str = SECRET, *, base: str | None = None, timeout: float = 5,
             session: Any = None, lock_factory: Callable[[str], ContextManager[Any]] | None = None) -> MiniProgram:
        client = WeChatApiClient(appid, secret, api_base=base or sandbox.base_url, session=session or MemoryStorage(),
                                 timeout=timeout, lock_factory=lock_factory)
        mp = MiniProgram(client)
        built.append(mp)
        return mp

    yield make
    for mp in built:
        mp.close()


@pytest.fixture
def mp(make_mp: Callable[..., MiniProgram]) -> MiniProgram:
    return make_mp()


def stored_token(mp: MiniProgram) -> str:
    return mp.client.session.get(mp.client.access_token_key)["token"]


# -- sign-in -------------------------------------------------------------------


def test_sign_in_is_stable_per_name(mp: MiniProgram) -> None:
    alice, again, bob = mp.code_to_session("sandbox:alice"), mp.code_to_session("sandbox:alice"), \
        mp.code_to_session("sandbox:bob")
    assert isinstance(alice, SessionInfo)
    assert (alice.openid, alice.unionid) == (again.openid, again.unionid)
    assert alice.openid != bob.openid and alice.unionid != bob.unionid
    assert alice.session_key != again.session_key
    assert len(alice.openid) == 28 and alice.openid.startswith("o")
    assert alice.session_key not in repr(alice)


def test_openid_per_app_unionid_shared(make_mp: Callable[..., MiniProgram]) -> None:
    here = make_mp().code_to_session("sandbox:alice")
    there = make_mp(OTHER_APPID, OTHER_SECRET).code_to_session("sandbox:alice")
    assert here.openid != there.openid
    assert here.unionid == there.unionid is not None


def test_bad_code(mp: MiniProgram) -> None:
    with pytest.raises(WeChatError) as raised:
        mp.code_to_session("081aBc000xyz")
    assert raised.value.errcode == 40029
    assert not isinstance(raised.value, WeChatUnavailableError)


def test_bad_secret_is_surfaced(make_mp: Callable[..., MiniProgram]) -> None:
    mp = make_mp(secret="not-the-secret")
    with pytest.raises(WeChatError) as raised:
        mp.code_to_session("sandbox:alice")
    assert raised.value.errcode == 40125
    with pytest.raises(WeChatError) as raised:
        mp.get_phone_number(PHONE)  # fails fetching the token
    assert raised.value.errcode == 40125


def test_sign_in_fetches_no_token(mp: MiniProgram, state: SandboxState) -> None:
    for name in ("alice", "bob", "carol"):
        mp.code_to_session(f"sandbox:{name}")
    assert state.token_requests == 0
    assert state.calls["/sns/jscode2session"] == 3


def test_wechatpy_code_to_session_fetches_no_token_either(mp: MiniProgram, state: SandboxState) -> None:
    result = mp.client.wxa.code_to_session("sandbox:alice")
    assert result["openid"] == mp.code_to_session("sandbox:alice").openid
    assert state.token_requests == 0


# -- the access token ------------------------------------------------------------


def test_token_fetched_once_and_reused(mp: MiniProgram, state: SandboxState) -> None:
    phones = [mp.get_phone_number(PHONE) for _ in range(4)]
    assert phones[0] == PhoneInfo("13800138000", "13800138000", "86")
    assert len(set(phones)) == 1
    mp.get_unlimited_code("s=1")
    assert state.token_requests == 1


def test_foreign_phone_number(mp: MiniProgram) -> None:
    assert mp.get_phone_number("sandbox-phone:+852-51234567") == PhoneInfo("+85251234567", "51234567", "852")


def test_bad_phone_code(mp: MiniProgram) -> None:
    with pytest.raises(WeChatError) as raised:
        mp.get_phone_number("not-a-phone-code")
    assert raised.value.errcode == 40029


@pytest.mark.parametrize("invalidate", ["revoke_tokens", "expire_tokens"])
def test_invalidated_token_is_refreshed_once(mp: MiniProgram, state: SandboxState, invalidate: str) -> None:
    mp.get_phone_number(PHONE)
    old = stored_token(mp)
    getattr(state, invalidate)()
    assert mp.get_phone_number(PHONE).pure_phone_number == "13800138000"
    assert state.token_requests == 2
    # One refused call, one retry: no more.
    assert state.calls["/wxa/business/getuserphonenumber"] == 3
    assert stored_token(mp) != old


def test_token_error_that_persists_is_retried_only_once(mp: MiniProgram, state: SandboxState,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def always_stale(token: str | None) -> str:
        raise WeChatFault(40001, "invalid credential, access_token is invalid or not latest")

    monkeypatch.setattr(state, "check_token", always_stale)
    with pytest.raises(WeChatError) as raised:
        mp.get_phone_number(PHONE)
    assert raised.value.errcode == 40001
    assert state.token_requests == 2
    assert state.calls["/wxa/business/getuserphonenumber"] == 2


def test_stale_token_already_replaced_by_another_worker(make_mp: Callable[..., MiniProgram],
                                                        state: SandboxState) -> None:
    storage = MemoryStorage()
    first, second = make_mp(session=storage), make_mp(session=storage)
    first.get_phone_number(PHONE)
    stale = stored_token(first)
    state.revoke_tokens()
    fresh = first.client.refresh_access_token(stale=stale)
    # The second worker saw the same stale token fail: it takes the fresh one, fetching nothing.
    assert second.client.refresh_access_token(stale=stale) == fresh
    assert state.token_requests == 2
    assert second.get_phone_number(PHONE).pure_phone_number == "13800138000"
    assert state.token_requests == 2


def test_token_shared_through_storage(make_mp: Callable[..., MiniProgram], state: SandboxState) -> None:
    storage = MemoryStorage()
    make_mp(session=storage).get_phone_number(PHONE)
    make_mp(session=storage).get_phone_number(PHONE)
    assert state.token_requests == 1


def test_concurrent_refreshes_make_one_token_request(make_mp: Callable[..., MiniProgram],
                                                     state: SandboxState) -> None:
    storage = MemoryStorage()
    locks: dict[str, threading.Lock] = {}
    guard = threading.Lock()

    def shared_lock(name: str) -> threading.Lock:
        with guard:
            return locks.setdefault(name, threading.Lock())

    # Two "workers" (clients) sharing storage and lock; the token endpoint stalls to widen the race.
    workers = [make_mp(session=storage, lock_factory=shared_lock) for _ in range(2)]
    state.token_delay = 0.3
    threads_per_worker = 4
    barrier = threading.Barrier(len(workers) * threads_per_worker)
    results: list[Any] = []

    def call(worker: MiniProgram) -> None:
        barrier.wait()
        try:
            results.append(worker.get_phone_number(PHONE))
        except Exception as exc:  # collected and asserted below, not lost in the thread
            results.append(exc)

    threads = [threading.Thread(target=call, args=(w,)) for w in workers for _ in range(threads_per_worker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert all(isinstance(r, PhoneInfo) for r in results) and len(results) == len(threads)
    assert state.token_requests == 1


def test_token_stored_in_redis_storage_is_shared(sandbox: SandboxServer, state: SandboxState) -> None:
    class FakeRedis:
        """Just what RedisStorage uses."""

        def __init__(self) -> None:
            self.data: dict[str, Any] = {}
            self.ttls: dict[str, Any] = {}

        def get(self, key: str) -> Any:
            return self.data.get(key)

        def set(self, key: str, value: Any, ex: Any = None) -> None:
            self.data[key], self.ttls[key] = value, ex

        def delete(self, key: str) -> None:
            self.data.pop(key, None)

    redis = FakeRedis()
    conf = {"WECHAT_APPID": APPID, "WECHAT_SECRET": SECRET, "WECHAT_API_BASE": sandbox.base_url,
            "WECHAT_TIMEOUT": 3}
    workers = [MiniProgram.from_config(conf, redis) for _ in range(2)]
    try:
        assert isinstance(workers[0].client.session, SharedTokenStorage)
        for worker in workers:
            worker.get_phone_number(PHONE)
        assert state.token_requests == 1
        (key,) = redis.data
        assert key.startswith("wechat:") and 0 < redis.ttls[key] <= 7200
    finally:
        for worker in workers:
            worker.close()


# -- base URL --------------------------------------------------------------------


def test_every_api_points_at_the_sandbox(mp: MiniProgram, sandbox: SandboxServer) -> None:
    assert mp.client.API_BASE_URL == sandbox.base_url + "cgi-bin/"
    assert mp.client.wxa.API_BASE_URL == sandbox.base_url
    assert mp.client.datacube.API_BASE_URL == sandbox.base_url + "datacube/"
    # Per instance: the class and a production client are untouched.
    assert WeChatWxa.API_BASE_URL == "https://api.weixin.qq.com/"
    production = WeChatApiClient(APPID, SECRET)
    try:
        assert production.wxa.API_BASE_URL == "https://api.weixin.qq.com/"
    finally:
        production._http.close()


def test_wechatpy_api_methods_reach_the_sandbox(mp: MiniProgram, state: SandboxState) -> None:
    res = mp.client.wxa.get_wxa_code_unlimited("via-wechatpy")
    assert res.headers["Content-Type"] == "image/jpeg"
    assert state.token_requests == 1


# -- the code image ---------------------------------------------------------------


@pytest.mark.parametrize("scene", ["s=Xy7", "a=1&b=2", "!#$&'()*+,/:;=?@-._~0123456789ab"])
def test_unlimited_code_is_the_sandbox_image(mp: MiniProgram, scene: str) -> None:
    # What the image holds is tested on the sandbox (tests/wechat/test_sandbox.py); here the
    # client must hand back that image byte for byte.
    jpeg = mp.get_unlimited_code(scene, page="pages/index/index", width=300, check_path=True)
    assert jpeg == render_code(scene, 300, image_format="JPEG")
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.size) == ("JPEG", (300, 300))


def test_unlimited_code_decodes_to_the_scene(mp: MiniProgram) -> None:
    zxingcpp = pytest.importorskip("zxingcpp")
    for scene in ("inv=Q2xk9", "c=7&s=r.Tz~", "x" * 32):
        png = mp.get_unlimited_code(scene)
        assert [b.text for b in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))] == [scene]


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"scene": "x" * 33}, 40169),
        ({"scene": ""}, 40169),
        ({"scene": "has space"}, 40129),
        ({"scene": "ok", "page": "pages/nowhere/index", "check_path": True}, 41030),
        ({"scene": "ok", "env_version": "nightly"}, 40097),
    ],
)
def test_unlimited_code_refusals(mp: MiniProgram, kwargs: dict[str, Any], code: int) -> None:
    with pytest.raises(WeChatError) as raised:
        mp.get_unlimited_code(**kwargs)
    assert raised.value.errcode == code


def test_unchecked_page_is_allowed(mp: MiniProgram) -> None:
    assert mp.get_unlimited_code("ok", page="pages/nowhere/index", check_path=False, env_version="trial")


# -- WeChat unreachable or broken --------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_closed_port_is_unavailable_fast(make_mp: Callable[..., MiniProgram]) -> None:
    mp = make_mp(base=f"http://127.0.0.1:{closed_port()}/", timeout=2)
    started = time.monotonic()
    for call in (lambda: mp.code_to_session("sandbox:alice"), lambda: mp.get_phone_number(PHONE)):
        with pytest.raises(WeChatUnavailableError) as raised:
            call()
        assert raised.value.errcode is None
        # The requests error names the full URL, secret included: it must not ride along.
        assert raised.value.__cause__ is None and raised.value.__suppress_context__
        assert SECRET not in str(raised.value)
    assert time.monotonic() - started < 2


def test_timeout_is_honoured() -> None:
    # A socket that accepts connections (the kernel does) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        mp = MiniProgram(WeChatApiClient(APPID, SECRET, api_base=f"http://127.0.0.1:{port}/", timeout=0.3))
        try:
            started = time.monotonic()
            with pytest.raises(WeChatUnavailableError) as raised:
                mp.code_to_session("sandbox:alice")
            assert time.monotonic() - started < 2
            assert "timed out" in raised.value.errmsg
        finally:
            mp.close()


@pytest.fixture
def broken_wechat() -> Iterator[SandboxServer]:
    app = Flask("broken")

    @app.get("/sns/jscode2session")
    def down() -> Any:
        return "<html>502 Bad Gateway</html>", 502

    @app.route("/cgi-bin/token")
    def html() -> Any:
        return "<html>maintenance</html>", 200

    @app.post("/wxa/business/getuserphonenumber")
    def busy() -> Any:
        return jsonify(errcode=-1, errmsg="system error")

    server = serve_in_thread(app)
    yield server
    server.shutdown()


def test_broken_answers_are_unavailable(make_mp: Callable[..., MiniProgram], broken_wechat: SandboxServer) -> None:
    mp = make_mp(base=broken_wechat.base_url)
    with pytest.raises(WeChatUnavailableError, match="HTTP 502"):
        mp.code_to_session("sandbox:alice")
    with pytest.raises(WeChatUnavailableError, match="not JSON"):
        mp.get_phone_number(PHONE)
    mp.client.session.set(mp.client.access_token_key, {"token": "t", "expires_at": time.time() + 7200})
    with pytest.raises(WeChatUnavailableError) as raised:
        mp.get_phone_number(PHONE)
    assert raised.value.errcode == -1


def test_client_errors_are_not_unavailability(make_mp: Callable[..., MiniProgram], sandbox: SandboxServer) -> None:
    mp = make_mp(base=sandbox.base_url + "no-such-prefix/")
    with pytest.raises(WeChatError, match="HTTP 404") as raised:
        mp.code_to_session("sandbox:alice")
    assert not isinstance(raised.value, WeChatUnavailableError)


# -- secrets stay out of logs --------------------------------------------------------


def test_nothing_secret_is_logged(make_mp: Callable[..., MiniProgram], state: SandboxState,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    mp = make_mp()
    session = mp.code_to_session("sandbox:alice")
    mp.get_phone_number(PHONE)
    first_token = stored_token(mp)
    state.revoke_tokens()
    mp.get_phone_number(PHONE)
    with pytest.raises(WeChatError):
        make_mp(secret="wrong-secret-value").get_phone_number(PHONE)
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "urllib3" in text  # DEBUG logging really was on
    for secret in (SECRET, "wrong-secret-value", session.session_key, first_token, stored_token(mp)):
        assert secret not in text


# -- the app wiring --------------------------------------------------------------------


@pytest.fixture
def flask_app(sandbox: SandboxServer) -> Iterator[Flask]:
    app = Flask("wechat-test")
    settings = config.TestingConfig()
    settings.REDIS_URL = None
    settings.WECHAT_APPID, settings.WECHAT_SECRET = APPID, SECRET
    settings.WECHAT_API_BASE = sandbox.base_url
    app.config.from_mapping(vars(settings))
    cache.init_app(app)
    wechat.init_app(app)
    yield app
    app.extensions["wechat_miniprogram"].close()


def test_init_app_builds_one_miniprogram(flask_app: Flask, state: SandboxState) -> None:
    with flask_app.app_context():
        mp = wechat.miniprogram()
        assert mp is wechat.miniprogram() and mp.appid == APPID
        assert isinstance(mp.client.session, MemoryStorage)
        assert mp.get_phone_number(PHONE).country_code == "86"

    # A thread with no app context (a job, a side effect) can still take the app's lock.
    outcome: list[Any] = []
    state.revoke_tokens()
    thread = threading.Thread(target=lambda: outcome.append(mp.get_phone_number(PHONE)))
    thread.start()
    thread.join(timeout=10)
    assert outcome and isinstance(outcome[0], PhoneInfo)
    assert state.token_requests == 2
    with flask_app.test_request_context():
        state.revoke_tokens()
        assert wechat.miniprogram().get_phone_number(PHONE).pure_phone_number == "13800138000"
    assert state.token_requests == 3


def test_init_app_uses_the_app_lock(flask_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[str] = []
    real_lock = cache.lock

    @contextlib.contextmanager
    def spy(name: str, timeout: float = 10.0) -> Iterator[None]:
        taken.append(name)
        with real_lock(name, timeout):
            yield

    monkeypatch.setattr(cache, "lock", spy)
    with flask_app.app_context():
        wechat.miniprogram().get_phone_number(PHONE)
    assert taken == [f"wechat-token:{APPID}"]


def test_workers_share_one_token_through_real_redis(sandbox: SandboxServer, state: SandboxState, redis_url: str) -> None:
    # The worker\'s own Redis database: another worker flushes its own between tests.
    url = redis_url
    key = f"wechat:{APPID}_access_token_entry"
    with redis.Redis.from_url(url) as r:
        r.delete(key)
    # Three "workers": separate apps, separate clients, one Redis for the token and the lock.
    apps = []
    for _ in range(3):
        app = Flask("worker")
        settings = config.TestingConfig()
        settings.REDIS_URL = url
        settings.WECHAT_APPID, settings.WECHAT_SECRET = APPID, SECRET
        settings.WECHAT_API_BASE = sandbox.base_url
        app.config.from_mapping(vars(settings))
        cache.init_app(app)
        wechat.init_app(app)
        apps.append(app)
    state.token_delay = 0.3
    barrier = threading.Barrier(len(apps) * 2)
    results: list[Any] = []

    def call(app: Flask) -> None:
        barrier.wait()
        try:
            results.append(app.extensions["wechat_miniprogram"].get_phone_number(PHONE))
        except Exception as exc:  # collected and asserted below, not lost in the thread
            results.append(exc)

    threads = [threading.Thread(target=call, args=(app,)) for app in apps for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=15)
        assert all(isinstance(r, PhoneInfo) for r in results) and len(results) == len(threads)
        assert state.token_requests == 1
        with redis.Redis.from_url(url) as r:
            assert r.ttl(key) > 0
    finally:
        for app in apps:
            app.extensions["wechat_miniprogram"].close()
            app.extensions["redis"].delete(key)
            app.extensions["redis"].close()
