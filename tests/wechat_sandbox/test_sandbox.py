"""The sandbox speaks WeChat's wire formats and refuses what WeChat refuses."""
from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
from typing import Any, Iterator

import pytest
import qrcode
import requests
from flask.testing import FlaskClient
from PIL import Image

from server import config
from wechat_sandbox import (
    QR_ERROR_CORRECTION,
    SandboxState,
    WeChatFault,
    create_sandbox_app,
    sandbox_apps_from_config,
    serve_in_thread,
)

APPID, SECRET = "wxsandboxtest0001", "secret-one"
OTHER_APPID, OTHER_SECRET = "wxsandboxtest0002", "secret-two"
PAGES = frozenset({"pages/index/index", "pages/goods/detail"})
OPENID = re.compile(r"o[A-Za-z0-9_\-]{27}")


@pytest.fixture
def sandbox() -> Any:
    return create_sandbox_app({APPID: SECRET, OTHER_APPID: OTHER_SECRET}, seed="test-seed", pages=PAGES)


@pytest.fixture
def wx(sandbox: Any) -> FlaskClient:
    return sandbox.test_client()


@pytest.fixture
def state(sandbox: Any) -> SandboxState:
    return sandbox.extensions["sandbox_state"]


def token_for(wx: FlaskClient, appid: str = APPID, secret: str = SECRET) -> str:
    res = wx.get("/cgi-bin/token", query_string={"grant_type": "client_credential", "appid": appid, "secret": secret})
    return res.get_json()["access_token"]


def login(wx: FlaskClient, code: str, appid: str = APPID, secret: str = SECRET) -> dict[str, Any]:
    query = {"appid": appid, "secret": secret, "js_code": code, "grant_type": "authorization_code"}
    return wx.get("/sns/jscode2session", query_string=query).get_json()


def errcode(res: Any) -> int:
    """WeChat answers errors with HTTP 200 and an errcode."""
    assert res.status_code == 200
    return res.get_json()["errcode"]


def wxacode(wx: FlaskClient, token: str, body: Any) -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return wx.post("/wxa/getwxacodeunlimit", query_string={"access_token": token}, data=data)


def expected_matrix(scene: str) -> list[list[bool]]:
    """The module grid the ``qrcode`` library makes for ``scene``, without a border."""
    qr = qrcode.QRCode(error_correction=QR_ERROR_CORRECTION, border=0)
    qr.add_data(scene)
    qr.make(fit=True)
    return qr.get_matrix()


def assert_code_carries(png: bytes, scene: str) -> None:
    """The image is exactly the QR code of ``scene``: whole pixels per module, a quiet zone around."""
    image = Image.open(io.BytesIO(png)).convert("L")
    expected = expected_matrix(scene)
    modules = len(expected)
    left, top, right, bottom = image.point(lambda v: 255 if v < 128 else 0).getbbox()
    assert right - left == bottom - top and (right - left) % modules == 0
    box = (right - left) // modules
    sampled = [[image.getpixel((left + c * box + box // 2, top + r * box + box // 2)) < 128 for c in range(modules)]
               for r in range(modules)]
    assert sampled == expected
    assert min(left, top, image.width - right, image.height - bottom) >= 4 * box


# -- access token ------------------------------------------------------------


def test_token_is_issued_in_wechat_format(wx: FlaskClient, state: SandboxState) -> None:
    res = wx.get("/cgi-bin/token", query_string={"grant_type": "client_credential", "appid": APPID, "secret": SECRET})
    body = res.get_json()
    assert res.status_code == 200 and set(body) == {"access_token", "expires_in"}
    assert body["expires_in"] == 7200 and len(body["access_token"]) >= 64
    assert state.check_token(body["access_token"]) == APPID
    assert state.token_requests == 1


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"grant_type": "client_credential", "appid": "wxnobody", "secret": SECRET}, 40013),
        ({"grant_type": "client_credential", "appid": APPID, "secret": "wrong"}, 40125),
        ({"grant_type": "client_credential", "appid": APPID, "secret": OTHER_SECRET}, 40125),
        ({"grant_type": "password", "appid": APPID, "secret": SECRET}, 40002),
        ({"grant_type": "client_credential", "secret": SECRET}, 41002),
        ({"grant_type": "client_credential", "appid": APPID}, 41004),
    ],
)
def test_token_refusals(wx: FlaskClient, query: dict[str, str], code: int) -> None:
    res = wx.get("/cgi-bin/token", query_string=query)
    assert errcode(res) == code
    assert "access_token" not in res.get_json()


def test_token_endpoint_requires_get(wx: FlaskClient) -> None:
    res = wx.post("/cgi-bin/token", query_string={"grant_type": "client_credential", "appid": APPID, "secret": SECRET})
    assert errcode(res) == 43001


def test_stable_token_is_stable_until_forced(wx: FlaskClient, state: SandboxState) -> None:
    body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    first = wx.post("/cgi-bin/stable_token", json=body).get_json()
    again = wx.post("/cgi-bin/stable_token", json=body).get_json()
    forced = wx.post("/cgi-bin/stable_token", json={**body, "force_refresh": True}).get_json()
    assert first["access_token"] == again["access_token"] != forced["access_token"]
    assert 0 < again["expires_in"] <= 7200
    # The replaced token keeps working for a grace period, as on WeChat.
    assert state.check_token(first["access_token"]) == APPID
    assert state.check_token(forced["access_token"]) == APPID


def test_stable_token_refusals(wx: FlaskClient) -> None:
    assert errcode(wx.post("/cgi-bin/stable_token", data="not json")) == 47001
    bad_secret = {"grant_type": "client_credential", "appid": APPID, "secret": "nope"}
    assert errcode(wx.post("/cgi-bin/stable_token", json=bad_secret)) == 40125
    assert errcode(wx.get("/cgi-bin/stable_token")) == 43002


def test_token_checks(wx: FlaskClient, state: SandboxState) -> None:
    def phone(token: str | None) -> int:
        query = {} if token is None else {"access_token": token}
        res = wx.post("/wxa/business/getuserphonenumber", query_string=query, json={"code": "sandbox-phone:13800138000"})
        return errcode(res)

    assert phone(None) == 41001
    assert phone("made-up") == 40001
    token = token_for(wx)
    assert phone(token) == 0
    state.expire_tokens()
    assert phone(token) == 42001
    token = token_for(wx)
    assert state.revoke_tokens() >= 1
    assert phone(token) == 40001


def test_a_new_token_leaves_the_old_one_working_for_a_while(wx: FlaskClient, state: SandboxState) -> None:
    old, new = token_for(wx), token_for(wx)
    assert old != new
    assert state.check_token(old) == state.check_token(new) == APPID


def test_revoke_only_one_app(wx: FlaskClient, state: SandboxState) -> None:
    mine, theirs = token_for(wx), token_for(wx, OTHER_APPID, OTHER_SECRET)
    assert wx.post("/sandbox/tokens/revoke", query_string={"appid": APPID}).get_json() == {"revoked": 1}
    assert state.check_token(theirs) == OTHER_APPID
    with pytest.raises(WeChatFault) as raised:
        state.check_token(mine)
    assert raised.value.errcode == 40001


# -- jscode2session ----------------------------------------------------------


def test_sign_in_is_stable_per_name(wx: FlaskClient) -> None:
    first, again, bob = login(wx, "sandbox:alice"), login(wx, "sandbox:alice"), login(wx, "sandbox:bob")
    assert set(first) == {"openid", "session_key", "unionid"}
    assert OPENID.fullmatch(first["openid"]) and OPENID.fullmatch(first["unionid"])
    assert (first["openid"], first["unionid"]) == (again["openid"], again["unionid"])
    assert first["openid"] != bob["openid"] and first["unionid"] != bob["unionid"]
    # A fresh session key every time, 16 random bytes in base64.
    assert first["session_key"] != again["session_key"]
    assert len(base64.b64decode(first["session_key"], validate=True)) == 16


def test_openid_differs_per_app_unionid_does_not(wx: FlaskClient) -> None:
    here, there = login(wx, "sandbox:alice"), login(wx, "sandbox:alice", OTHER_APPID, OTHER_SECRET)
    assert here["openid"] != there["openid"]
    assert here["unionid"] == there["unionid"]


def test_ids_depend_on_the_seed() -> None:
    apps = {APPID: SECRET}
    a = create_sandbox_app(apps, seed="one").test_client()
    b = create_sandbox_app(apps, seed="two").test_client()
    assert login(a, "sandbox:alice")["openid"] != login(b, "sandbox:alice")["openid"]
    assert login(a, "sandbox:alice")["openid"] == login(create_sandbox_app(apps, seed="one").test_client(),
                                                      "sandbox:alice")["openid"]


@pytest.mark.parametrize(
    "code", ["0a1b2c3d4e5f", "sandbox:", "sandbox:" + "x" * 65, "sandbox:al ice", "sandbox:alice/x", "Sandbox:alice"]
)
def test_other_codes_are_invalid(wx: FlaskClient, code: str) -> None:
    body = login(wx, code)
    assert set(body) == {"errcode", "errmsg"}
    assert body["errcode"] == 40029 and body["errmsg"].startswith("invalid code")


def test_name_charset_and_length(wx: FlaskClient) -> None:
    assert "openid" in login(wx, "sandbox:" + "x" * 64)
    assert "openid" in login(wx, "sandbox:A-z_0.9")


def test_sign_in_refusals(wx: FlaskClient, state: SandboxState) -> None:
    assert login(wx, "sandbox:alice", secret="wrong")["errcode"] == 40125
    assert login(wx, "sandbox:alice", appid="wxnobody")["errcode"] == 40013
    assert login(wx, "")["errcode"] == 41008
    res = wx.get("/sns/jscode2session", query_string={"appid": APPID, "secret": SECRET, "js_code": "sandbox:a"})
    assert errcode(res) == 40002
    assert errcode(wx.post("/sns/jscode2session")) == 43001
    assert state.token_requests == 0


# -- phone number ------------------------------------------------------------


def test_phone_number_mainland(wx: FlaskClient) -> None:
    token = token_for(wx, OTHER_APPID, OTHER_SECRET)
    # WeChat reads the body as JSON whatever the Content-Type says.
    res = wx.post(
        "/wxa/business/getuserphonenumber",
        query_string={"access_token": token},
        data='{"code": "sandbox-phone:13800138000"}',
        content_type="text/plain",
    )
    body = res.get_json()
    assert body["errcode"] == 0 and body["errmsg"] == "ok"
    info = body["phone_info"]
    assert (info["phoneNumber"], info["purePhoneNumber"], info["countryCode"]) == ("13800138000", "13800138000", "86")
    assert info["watermark"]["appid"] == OTHER_APPID
    assert isinstance(info["watermark"]["timestamp"], int)


def test_phone_number_elsewhere(wx: FlaskClient) -> None:
    res = wx.post("/wxa/business/getuserphonenumber", query_string={"access_token": token_for(wx)},
                  json={"code": "sandbox-phone:+852-51234567"})
    info = res.get_json()["phone_info"]
    assert (info["phoneNumber"], info["purePhoneNumber"], info["countryCode"]) == ("+85251234567", "51234567", "852")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"code": "e31968a7f94cc5ee25fafc2aef2773f0"}, 40029),
        ({"code": "sandbox-phone:12345"}, 40029),
        ({"code": "sandbox-phone:1380013800a"}, 40029),
        ({}, 47001),
        ("not json", 47001),
    ],
)
def test_phone_number_refusals(wx: FlaskClient, body: Any, code: int) -> None:
    data = body if isinstance(body, str) else json.dumps(body)
    res = wx.post("/wxa/business/getuserphonenumber", query_string={"access_token": token_for(wx)}, data=data)
    assert errcode(res) == code


# -- getwxacodeunlimit --------------------------------------------------------


@pytest.mark.parametrize("scene", ["a", "s=Ab3_x", "0123456789abcdefghijABCDEFGHIJ-.", "!#$&'()*+,/:;=?@-._~"])
def test_code_image_carries_the_scene(wx: FlaskClient, scene: str) -> None:
    res = wxacode(wx, token_for(wx), {"scene": scene, "page": "pages/index/index"})
    # WeChat answers a JPEG (a PNG only for a transparent code).
    assert res.status_code == 200 and res.mimetype == "image/jpeg"
    image = Image.open(io.BytesIO(res.data))
    assert image.format == "JPEG" and image.size == (430, 430)
    assert_code_carries(res.data, scene)


def test_code_image_decodes_with_a_real_scanner(wx: FlaskClient) -> None:
    zxingcpp = pytest.importorskip("zxingcpp")
    token = token_for(wx)
    for scene in ("a=1&b=2", "R7x-Q2.p~k", "!#$&'()*+,/:;=?@-._~0123456789ab"):
        png = wxacode(wx, token, {"scene": scene, "width": 280}).data
        found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
        assert [b.text for b in found] == [scene]


@pytest.mark.parametrize(("width", "size"), [(100, 280), (280, 280), (430, 430), (1000, 1000), (5000, 1280)])
def test_code_width_is_clamped_like_wechat(wx: FlaskClient, width: int, size: int) -> None:
    res = wxacode(wx, token_for(wx), {"scene": "w", "width": width})
    assert Image.open(io.BytesIO(res.data)).size == (size, size)
    assert_code_carries(res.data, "w")


def test_code_colours(wx: FlaskClient) -> None:
    token = token_for(wx)
    hyaline = wxacode(wx, token, {"scene": "x", "is_hyaline": True})
    clear = Image.open(io.BytesIO(hyaline.data))
    assert hyaline.mimetype == "image/png" and clear.mode == "RGBA" and clear.getpixel((0, 0))[3] == 0
    red = Image.open(io.BytesIO(wxacode(wx, token, {"scene": "x", "line_color": {"r": 200, "g": 0, "b": 0}}).data))
    # A JPEG only comes close to the colour asked for; the centre of a dark module is the test.
    colours = red.convert("RGB").getcolors(maxcolors=1 << 16) or []
    assert any(abs(r - 200) <= 8 and g <= 8 and b <= 8 for _count, (r, g, b) in colours)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, 40169),
        ({"scene": ""}, 40169),
        ({"scene": "x" * 33}, 40169),
        ({"scene": 12345}, 40169),
        ("scene=abc", 40169),
        ({"scene": "a b"}, 40129),
        ({"scene": "a%20b"}, 40129),
        ({"scene": "中文"}, 40129),
        ({"scene": "abc\n"}, 40129),
        ({"scene": "ok", "page": "pages/missing/index", "check_path": True}, 41030),
        ({"scene": "ok", "page": "/pages/index/index"}, 41030),
        ({"scene": "ok", "page": "pages/index/index?id=1"}, 41030),
        ({"scene": "ok", "env_version": "beta"}, 40097),
        ({"scene": "ok", "width": "430"}, 47001),
        ({"scene": "ok", "check_path": "false"}, 47001),
        ({"scene": "ok", "line_color": {"r": 300, "g": 0, "b": 0}}, 47001),
    ],
)
def test_code_refusals(wx: FlaskClient, body: Any, code: int) -> None:
    res = wxacode(wx, token_for(wx), body)
    assert res.mimetype == "application/json"
    assert errcode(res) == code


def test_unchecked_path_may_be_unpublished(wx: FlaskClient) -> None:
    res = wxacode(wx, token_for(wx), {"scene": "ok", "page": "pages/new/index", "check_path": False,
                                      "env_version": "develop"})
    assert res.mimetype == "image/jpeg"


def test_code_needs_a_token(wx: FlaskClient) -> None:
    assert errcode(wx.post("/wxa/getwxacodeunlimit", json={"scene": "ok"})) == 41001
    assert errcode(wx.get("/wxa/getwxacodeunlimit", query_string={"access_token": token_for(wx)})) == 43002


# -- the server and configuration ------------------------------------------------


@pytest.fixture
def served(sandbox: Any) -> Iterator[Any]:
    server = serve_in_thread(sandbox)
    yield server
    server.shutdown()


def test_served_over_http(served: Any) -> None:
    assert served.base_url == f"http://127.0.0.1:{served.port}/" and served.port > 0
    with requests.Session() as http:
        assert http.get(served.base_url + "sandbox/health", timeout=5).json() == {"ok": True}
        res = http.get(served.base_url + "cgi-bin/token", params={"grant_type": "client_credential", "appid": APPID,
                                                                   "secret": "wrong"}, timeout=5)
    assert res.status_code == 200 and res.json()["errcode"] == 40125


def test_access_log_shows_no_secret(served: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="werkzeug")
    with requests.Session() as http:
        token = http.get(served.base_url + "cgi-bin/token", params={"grant_type": "client_credential", "appid": APPID,
                                                                     "secret": SECRET}, timeout=5).json()["access_token"]
        http.post(served.base_url + "wxa/getwxacodeunlimit", params={"access_token": token}, json={"scene": "s"},
                  timeout=5)
    access_log = "\n".join(r.getMessage() for r in caplog.records if r.name == "werkzeug")
    assert "cgi-bin/token" in access_log and "getwxacodeunlimit" in access_log
    assert SECRET not in access_log and token not in access_log


def test_apps_from_config() -> None:
    apps = sandbox_apps_from_config(vars(config.TestingConfig()))
    assert apps == {
        config.SANDBOX_DEFAULTS["WECHAT_APPID"]: config.SANDBOX_DEFAULTS["WECHAT_SECRET"],
        config.SANDBOX_DEFAULTS["WECHAT_OA_APPID"]: config.SANDBOX_DEFAULTS["WECHAT_OA_SECRET"],
    }
    assert sandbox_apps_from_config({"WECHAT_APPID": "wx1", "WECHAT_SECRET": "s"}) == {"wx1": "s"}


def test_needs_an_app() -> None:
    with pytest.raises(ValueError):
        create_sandbox_app({}, seed="x")


def test_stall_holds_a_route_until_released(sandbox: Any, state: SandboxState) -> None:
    import threading
    import time

    server = serve_in_thread(sandbox)
    try:
        base = server.base_url.rstrip("/")
        assert requests.post(f"{base}/sandbox/stall", json={"path": "/sandbox/health", "seconds": 0}).status_code == 400
        assert requests.post(f"{base}/sandbox/stall", json={"path": "/sandbox/health", "seconds": 20}).json()["times"] == 1
        done: list[float] = []
        started = time.monotonic()
        worker = threading.Thread(target=lambda: (requests.get(f"{base}/sandbox/health"), done.append(time.monotonic() - started)))
        worker.start()
        for _ in range(100):
            if requests.get(f"{base}/sandbox/stall").json()["/sandbox/health"]["waiting"] == 1:
                break
            time.sleep(0.02)
        assert requests.get(f"{base}/sandbox/stall").json()["/sandbox/health"]["waiting"] == 1
        assert not done
        assert requests.delete(f"{base}/sandbox/stall", params={"path": "/sandbox/health"}).json() == {"released": 1}
        worker.join(5)
        assert done and done[0] < 10
        # Only the next call was held: the one after it answers at once.
        assert requests.get(f"{base}/sandbox/health", timeout=2).json() == {"ok": True}
    finally:
        server.shutdown()


def test_deeply_nested_json_is_refused_like_any_bad_body(wx: FlaskClient) -> None:
    """The control routes read their bodies with get_json too; nesting cannot make them fail."""
    body = b'{"appid": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = wx.put("/sandbox/oa/push", data=body, content_type="application/json")
    assert response.status_code == 400


# -- one-time login codes ---------------------------------------------------------------------


def test_login_codes_the_sandbox_issues_work_once(wx: FlaskClient, state: SandboxState) -> None:
    issued = wx.post("/sandbox/users/carol/code")
    assert issued.status_code == 200
    code = issued.get_json()["code"]
    assert "carol" not in code and issued.get_json()["expires_in"] == 300
    query = {"appid": APPID, "secret": SECRET, "js_code": code, "grant_type": "authorization_code"}
    first = wx.get("/sns/jscode2session", query_string=query).get_json()
    assert first["openid"] == state.openid(APPID, "carol")
    assert errcode(wx.get("/sns/jscode2session", query_string=query)) == 40163  # "code been used"
    # The developer code stays reusable.
    again = query | {"js_code": "sandbox:carol"}
    assert wx.get("/sns/jscode2session", query_string=again).get_json()["openid"] == first["openid"]
    assert wx.get("/sns/jscode2session", query_string=again).get_json()["openid"] == first["openid"]
    assert errcode(wx.get("/sns/jscode2session", query_string=query | {"js_code": "0nevergiven"})) == 40029
    assert wx.post("/sandbox/users/bad name/code").status_code == 400


def test_a_login_code_expires_after_five_minutes(wx: FlaskClient, state: SandboxState) -> None:
    code = wx.post("/sandbox/users/carol/code").get_json()["code"]
    state.login_codes[code].expires_at = time.time() - 1
    query = {"appid": APPID, "secret": SECRET, "js_code": code, "grant_type": "authorization_code"}
    assert errcode(wx.get("/sns/jscode2session", query_string=query)) == 40029
