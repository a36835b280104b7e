"""Members' posters and poster templates, through the API, against the sandbox."""
from __future__ import annotations

import base64
import contextlib
import io
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import func, select, update

from server import db
from server.db import utcnow
from server.accounts.models import AuditEntry
from server.posters import render, services
from server.posters.models import PosterImage, PosterTemplate
from server.referral.models import Scene
from server.referral.services import revoke_scene
from server.wechat.formats import SCENE_MAX_LENGTH, SCENE_RE
from tests.statements import statements_sent

POSTERS = "/api/v1/referral/posters"
TEMPLATES = "/admin/api/v1/poster-templates"
CODE_CALLS = "/wxa/getwxacodeunlimit"


# -- helpers ---------------------------------------------------------------------


def png_bytes(color: str, size: tuple[int, int] = (96, 96), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def scanned(image: Image.Image) -> list[str]:
    return [result.text for result in zxingcpp.read_barcodes(image)]


def dark_pixels(image: Image.Image, box: dict[str, int]) -> int:
    region = image.convert("L").crop((box["x"], box["y"], box["x"] + box["w"], box["y"] + box["h"]))
    return sum(region.histogram()[:128])


def avatar_centre(image: Image.Image) -> tuple[int, int, int]:
    box = render.DEFAULT_LAYOUT["avatar"]
    return image.getpixel((box["x"] + box["size"] // 2, box["y"] + box["size"] // 2))  # type: ignore[return-value]


def code_calls(sandbox: Any) -> int:
    return sandbox.app.extensions["sandbox_state"].calls[CODE_CALLS]


def count(app: Any, model: Any) -> int:
    with app.app_context():
        return db.session().scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def alice(client, wx_login) -> dict[str, Any]:
    member = wx_login("alice")
    response = client.patch("/api/v1/me", headers=member["headers"], json={"nickname": "爱丽丝"})
    assert response.status_code == 200, response.get_json()
    return member


@pytest.fixture
def request_poster(client) -> Callable[..., dict[str, Any]]:
    """``request_poster(member, **body)``: the response data, asserting success."""

    def post(member: dict[str, Any], **body: Any) -> dict[str, Any]:
        response = client.post(POSTERS, headers=member["headers"], json=body)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]

    return post


@pytest.fixture
def fetch_image(app, client) -> Callable[[str], Image.Image]:
    """The poster behind an ``image_url``, fetched with no credentials."""

    def fetch(url: str) -> Image.Image:
        base = app.config["PUBLIC_BASE_URL"]
        assert url.startswith(base + POSTERS + "/") and url.endswith(".png")
        response = client.get(url[len(base):])
        assert response.status_code == 200
        assert response.mimetype == "image/png"
        return decode(response.data)

    return fetch


@pytest.fixture
def ops(staff_login) -> dict[str, str]:
    return staff_login("operations")


@pytest.fixture
def avatar_server() -> Iterator[tuple[str, dict[str, tuple[int, dict[str, str], bytes]], list[str]]]:
    """A local HTTP server: (base URL, {path: (status, headers, body)}, paths requested)."""
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            status, headers, body = routes.get(self.path, (404, {}, b""))
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", routes, hits
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def fake_products() -> Iterator[None]:
    """A content type "product" with one item, as the catalog will register it."""
    items = {"12": services.ContentInfo(title="有机草莓礼盒 500g", subtitle="限时特惠 ¥39.9", page_query="id=12")}
    services.register_content("product", lambda sess, content_id: items.get(content_id))
    yield
    services.unregister_content("product")


# -- a member's poster ---------------------------------------------------------------


def test_alice_gets_a_poster_whose_code_is_her_scene_and_shows_her_name(app, alice, request_poster, fetch_image, sandbox):
    before = code_calls(sandbox)
    data = request_poster(alice)

    scene = data["scene"]
    assert SCENE_RE.fullmatch(scene) and len(scene) <= SCENE_MAX_LENGTH
    assert data["channel"] == "miniprogram_code"
    assert data["cached"] is False
    assert data["page"] == f"pages/index/index?scene={scene}"
    assert data["h5_url"] == f"{app.config['PUBLIC_BASE_URL']}/s/{scene}"
    assert code_calls(sandbox) == before + 1

    image = fetch_image(data["image_url"])
    assert image.size == (750, 1334)
    assert scanned(image) == [scene]
    assert dark_pixels(image, render.DEFAULT_LAYOUT["nickname"]) > 200

    with app.app_context():
        template = db.session().get(PosterTemplate, data["template_id"])
        assert template.is_default and template.version == data["template_version"]
        stored = db.session().get(Scene, scene)
        assert stored.sharer_id == alice["user"]["id"] and stored.channel.value == "miniprogram_code"


def test_h5_poster_carries_a_qr_of_the_landing_link_and_needs_no_wechat(app, alice, request_poster, fetch_image, sandbox):
    before = code_calls(sandbox)
    data = request_poster(alice, channel="moments_poster")
    assert data["channel"] == "moments_poster"
    assert data["h5_url"] == f"{app.config['PUBLIC_BASE_URL']}/s/{data['scene']}"
    assert scanned(fetch_image(data["image_url"])) == [data["h5_url"]]
    assert code_calls(sandbox) == before


def test_second_request_is_served_from_the_cache_without_wechat(app, alice, request_poster, sandbox):
    first = request_poster(alice)
    before = code_calls(sandbox)
    second = request_poster(alice)
    assert second["cached"] is True
    assert second["image_url"] == first["image_url"] and second["scene"] == first["scene"]
    assert code_calls(sandbox) == before
    assert count(app, PosterImage) == 1


def test_variants_and_contents_are_cached_apart(app, alice, request_poster, fake_products):
    shop = request_poster(alice)
    h5 = request_poster(alice, channel="h5_link")
    product = request_poster(alice, content_type="product", content_id="12")
    assert len({shop["image_url"], h5["image_url"], product["image_url"]}) == 3
    assert len({shop["scene"], h5["scene"], product["scene"]}) == 3
    assert product["page"] == f"pages/index/index?scene={product['scene']}&id=12"
    assert count(app, PosterImage) == 3


def test_product_poster_shows_the_product(alice, request_poster, fetch_image, fake_products):
    data = request_poster(alice, content_type="product", content_id="12")
    image = fetch_image(data["image_url"])
    assert dark_pixels(image, render.DEFAULT_LAYOUT["title"]) > 500
    assert scanned(image) == [data["scene"]]


def test_image_responses_are_cacheable_and_conditional(app, client, alice, request_poster):
    url = request_poster(alice)["image_url"][len(app.config["PUBLIC_BASE_URL"]):]
    response = client.get(url)
    assert response.headers["Cache-Control"] == "public, max-age=86400, immutable"
    etag = response.headers["ETag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize("token", ["A" * 32, "short", "a" * 31 + "!"])
def test_unknown_image_token_is_a_404_envelope(client, token):
    response = client.get(f"{POSTERS}/{token}.png")
    assert response.status_code == 404
    assert response.get_json() == {"code": 40452, "message": "no such poster image", "data": None}


def test_a_template_change_draws_a_new_poster(client, alice, ops, request_poster, fetch_image):
    first = request_poster(alice)
    response = client.patch(f"{TEMPLATES}/{first['template_id']}", headers=ops, json={"headline": "春季上新"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["version"] == first["template_version"] + 1

    second = request_poster(alice)
    assert second["cached"] is False
    assert second["template_version"] == first["template_version"] + 1
    assert second["image_url"] != first["image_url"]
    assert second["scene"] == first["scene"]  # printed codes keep working
    assert scanned(fetch_image(second["image_url"])) == [second["scene"]]
    old = client.get(first["image_url"].removeprefix(client.application.config["PUBLIC_BASE_URL"]))
    assert old.status_code == 404


def test_renaming_a_template_keeps_its_posters(client, alice, ops, request_poster):
    first = request_poster(alice)
    response = client.patch(f"{TEMPLATES}/{first['template_id']}", headers=ops, json={"name": "主海报"})
    assert response.get_json()["data"]["version"] == first["template_version"]
    assert request_poster(alice)["cached"] is True


def test_a_profile_change_draws_a_new_poster(app, client, alice, request_poster):
    first = request_poster(alice)
    assert request_poster(alice)["cached"] is True
    client.patch("/api/v1/me", headers=alice["headers"], json={"nickname": "Alice"})
    second = request_poster(alice)
    assert second["cached"] is False
    assert second["image_url"] != first["image_url"]
    assert second["scene"] == first["scene"]


def test_a_revoked_scene_gets_a_new_poster_with_a_new_scene(app, alice, request_poster, fetch_image):
    first = request_poster(alice)
    with app.app_context():
        revoke_scene(db.session(), first["scene"])
        db.commit()
    second = request_poster(alice)
    assert second["cached"] is False and second["scene"] != first["scene"]
    assert scanned(fetch_image(second["image_url"])) == [second["scene"]]


@pytest.mark.slow
def test_concurrent_identical_requests_draw_once(app, alice, sandbox):
    before = code_calls(sandbox)
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def worker() -> None:
        local = app.test_client()
        barrier.wait()
        response = local.post(POSTERS, headers=alice["headers"], json={})
        results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [status for status, _ in results] == [200] * 8, results
    assert len({body["data"]["image_url"] for _, body in results}) == 1
    assert sorted(body["data"]["cached"] for _, body in results) == [False] + [True] * 7
    assert code_calls(sandbox) == before + 1
    assert count(app, PosterImage) == 1
    assert count(app, PosterTemplate) == 1


def test_wechat_down_is_a_502_and_nothing_is_kept(app, app_factory, alice):
    broken = app_factory(WECHAT_API_BASE="http://127.0.0.1:9/")
    response = broken.test_client().post(POSTERS, headers=alice["headers"], json={})
    assert response.status_code == 502
    assert response.get_json()["code"] == 50200
    assert count(app, PosterImage) == 0
    # The member's share scene was issued (and committed) before WeChat was asked; the next try uses it.
    assert count(app, Scene) == 1
    drawn = app.test_client().post(POSTERS, headers=alice["headers"], json={})
    assert drawn.status_code == 200 and count(app, Scene) == 1 and count(app, PosterImage) == 1


def test_wechat_refusing_the_code_is_a_502_with_its_errcode(app, alice, monkeypatch):
    from server.wechat.client import MiniProgram, WeChatError

    def refuse(self: Any, *args: Any, **kwargs: Any) -> bytes:
        raise WeChatError(40129, "invalid scene")

    monkeypatch.setattr(MiniProgram, "get_unlimited_code", refuse)
    response = app.test_client().post(POSTERS, headers=alice["headers"], json={})
    assert response.status_code == 502
    assert response.get_json()["data"] == {"errcode": 40129}
    assert count(app, PosterImage) == 0


# -- what a poster may show ------------------------------------------------------------


def test_unknown_content_is_refused(client, alice, fake_products):
    def post(**body: Any) -> Any:
        return client.post(POSTERS, headers=alice["headers"], json=body)

    unknown_type = post(content_type="lesson", content_id="1")
    assert unknown_type.status_code == 422 and unknown_type.get_json()["code"] == 42250
    assert unknown_type.get_json()["data"]["errors"][0]["field"] == "content_type"
    assert post(content_type="product", content_id="99").get_json()["code"] == 40451
    assert post(content_type="product").status_code == 422
    assert post(content_id="12").status_code == 422
    assert post(content_type="Product!", content_id="12").get_json()["code"] == 42200


def test_each_h5_channel_gets_its_own_scene_and_poster(app, alice, request_poster):
    h5 = request_poster(alice, channel="h5_link")
    moments = request_poster(alice, channel="moments_poster")
    assert (h5["channel"], moments["channel"]) == ("h5_link", "moments_poster")
    assert h5["scene"] != moments["scene"] and h5["image_url"] != moments["image_url"]
    with app.app_context():
        assert db.session().get(Scene, moments["scene"]).channel.value == "moments_poster"
    assert request_poster(alice, channel="h5_link")["scene"] == h5["scene"]


def test_a_poster_cached_under_another_channels_scene_is_drawn_again(app, alice, request_poster):
    """Posters drawn while the H5 channels shared one drawing may carry the other channel's scene."""
    moments = request_poster(alice, channel="moments_poster")
    with app.app_context():
        db.session().execute(update(PosterImage).values(variant="h5"))
        db.commit()
    h5 = request_poster(alice, channel="h5_link")
    assert h5["channel"] == "h5_link" and h5["scene"] != moments["scene"] and h5["cached"] is False


def oa_code(sandbox: Any, url: str) -> Any:
    codes = sandbox.app.extensions["sandbox_oa"].qrcodes
    return next(entry for entry in codes.values() if entry.url == url)


def test_official_account_poster_carries_the_accounts_qr_code_for_her_scene(app, alice, request_poster, fetch_image, sandbox):
    data = request_poster(alice, channel="official_account_qr")
    assert data["channel"] == "official_account_qr"
    [url] = scanned(fetch_image(data["image_url"]))
    # Following the account through it binds to alice's scene, as the account's own QR image would.
    assert oa_code(sandbox, url).scene == data["scene"]
    with app.app_context():
        stored = db.session().get(Scene, data["scene"])
        assert stored.sharer_id == alice["user"]["id"] and stored.channel.value == "official_account_qr"
    assert request_poster(alice, channel="official_account_qr")["cached"] is True


def test_a_temporary_official_account_poster_is_drawn_again_before_its_code_expires(app, alice, request_poster, fetch_image, sandbox):
    from server.settings.services import set_setting

    with app.app_context():
        set_setting(db.session(), "oa_qr_expire_days", 2, by="test")
        db.commit()
    first = request_poster(alice, channel="official_account_qr")
    assert request_poster(alice, channel="official_account_qr")["cached"] is True
    with app.app_context():
        # A day later, half of the code's two days are gone: a fresh code is put on a new poster.
        db.session().execute(update(PosterImage).values(created_at=utcnow() - timedelta(days=1)))
        db.commit()
    second = request_poster(alice, channel="official_account_qr")
    assert second["cached"] is False and second["scene"] == first["scene"]
    assert oa_code(sandbox, scanned(fetch_image(second["image_url"]))[0]).scene == first["scene"]
    assert count(app, PosterImage) == 1


def test_an_official_account_poster_follows_a_change_to_permanent_codes(app, alice, request_poster, fetch_image, sandbox):
    from server.settings.services import set_setting

    def expire_days(days):
        with app.app_context():
            set_setting(db.session(), "oa_qr_expire_days", days, by="test")
            db.commit()

    expire_days(7)
    temporary = request_poster(alice, channel="official_account_qr")
    expire_days(0)
    permanent = request_poster(alice, channel="official_account_qr")
    assert permanent["cached"] is False and permanent["image_url"] != temporary["image_url"]
    code = oa_code(sandbox, scanned(fetch_image(permanent["image_url"]))[0])
    assert code.expires_at is None and code.scene == temporary["scene"]


def test_channels_without_a_poster_are_refused(client, alice):
    partner = client.post(POSTERS, headers=alice["headers"], json={"channel": "partner"})
    assert partner.status_code == 422 and partner.get_json()["code"] == 42200


def test_posters_need_a_member_token(client, ops):
    assert client.post(POSTERS, json={}).status_code == 401
    assert client.post(POSTERS, headers=ops, json={}).status_code == 401
    assert client.get("/api/v1/referral/poster-templates", headers=ops).status_code == 401


def test_members_see_and_use_only_active_templates_for_everyone(client, alice, ops, request_poster):
    everyone = client.post(TEMPLATES, headers=ops, json={"name": "春节", "headline": "新春快乐"}).get_json()["data"]
    tier_one = client.post(TEMPLATES, headers=ops, json={"name": "一级专享", "audience": 1}).get_json()["data"]
    retired = client.post(TEMPLATES, headers=ops, json={"name": "旧版"}).get_json()["data"]
    client.post(f"{TEMPLATES}/{retired['id']}/deactivate", headers=ops)

    request_poster(alice)  # creates the built-in default
    listed = client.get("/api/v1/referral/poster-templates", headers=alice["headers"]).get_json()["data"]["items"]
    assert [t["name"] for t in listed] == ["默认海报", "春节"]
    assert listed[0]["is_default"] is True

    chosen = request_poster(alice, template_id=everyone["id"])
    assert chosen["template_id"] == everyone["id"] and chosen["cached"] is False
    for template_id in (tier_one["id"], retired["id"], 999999):
        response = client.post(POSTERS, headers=alice["headers"], json={"template_id": template_id})
        assert response.status_code == 404 and response.get_json()["code"] == 40450


# -- avatars -------------------------------------------------------------------------------


def test_the_members_avatar_appears_on_the_poster(client, alice, request_poster, fetch_image, avatar_server, monkeypatch):
    monkeypatch.setattr(services, "AVATAR_TIMEOUT", 10.0)  # a busy test machine is no reason to fail here
    base, routes, hits = avatar_server
    routes["/red.png"] = (200, {"Content-Type": "image/png"}, png_bytes("#FF0000"))
    client.patch("/api/v1/me", headers=alice["headers"], json={"avatar_url": f"{base}/red.png"})
    image = fetch_image(request_poster(alice)["image_url"])
    assert avatar_centre(image) == (255, 0, 0)
    assert hits == ["/red.png"]


@pytest.mark.parametrize("path", ["/missing.png", "/junk.png", "/big.png", "/moved.png"])
def test_an_avatar_that_cannot_be_used_falls_back_to_the_initial(client, alice, request_poster, fetch_image, avatar_server, path):
    base, routes, _ = avatar_server
    routes["/junk.png"] = (200, {"Content-Type": "image/png"}, b"<html>not an image</html>")
    routes["/big.png"] = (200, {"Content-Type": "image/png"}, b"\0" * (services.AVATAR_MAX_BYTES + 1))
    routes["/moved.png"] = (302, {"Location": f"{base}/red.png"}, b"")
    routes["/red.png"] = (200, {}, png_bytes("#FF0000"))
    client.patch("/api/v1/me", headers=alice["headers"], json={"avatar_url": f"{base}{path}"})
    data = request_poster(alice)
    image = fetch_image(data["image_url"])
    assert avatar_centre(image) != (255, 0, 0)
    assert scanned(image) == [data["scene"]]


def test_an_unreachable_avatar_falls_back_to_the_initial(client, alice, request_poster, fetch_image):
    client.patch("/api/v1/me", headers=alice["headers"], json={"avatar_url": "http://127.0.0.1:9/a.png"})
    data = request_poster(alice)
    assert avatar_centre(fetch_image(data["image_url"])) != (255, 0, 0)


def test_avatar_fetch_refuses_internal_addresses(avatar_server):
    base, routes, hits = avatar_server
    routes["/red.png"] = (200, {}, png_bytes("#FF0000"))
    assert services.fetch_avatar(f"{base}/red.png", allow_loopback=True, timeout=10) is not None
    hits.clear()
    assert services.fetch_avatar(f"{base}/red.png") is None  # production: never loopback
    assert services.fetch_avatar(base.replace("127.0.0.1", "localhost") + "/red.png") is None
    assert hits == []
    for url in (
        "http://10.0.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://0.0.0.0/a.png",
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        f"http://user:pw@{base[7:]}/red.png",
    ):
        assert services.fetch_avatar(url, allow_loopback=False, timeout=0.5) is None, url


# -- the console -------------------------------------------------------------------------


def test_staff_manage_templates(app, client, ops, alice, request_poster):
    created = client.post(
        TEMPLATES,
        headers=ops,
        json={"name": "双十一", "headline": "全场五折", "body_text": "仅限今日", "layout": {"header": {"color": "#1A73E8"}}},
    )
    assert created.status_code == 201, created.get_json()
    template = created.get_json()["data"]
    assert template["version"] == 1 and template["active"] is True and template["is_default"] is False
    assert template["layout"] == {"header": {"color": "#1A73E8"}} and template["has_background_image"] is False

    tid = template["id"]
    assert client.get(f"{TEMPLATES}/{tid}", headers=ops).get_json()["data"] == template
    patched = client.patch(f"{TEMPLATES}/{tid}", headers=ops, json={"body_text": "限时三天"}).get_json()["data"]
    assert patched["version"] == 2 and patched["body_text"] == "限时三天" and patched["headline"] == "全场五折"

    request_poster(alice)  # the built-in default exists from here on
    made_default = client.post(f"{TEMPLATES}/{tid}/default", headers=ops).get_json()["data"]
    assert made_default["is_default"] is True
    items = client.get(TEMPLATES, headers=ops).get_json()["data"]["items"]
    assert [(t["name"], t["is_default"]) for t in items] == [("双十一", True), ("默认海报", False)]
    assert request_poster(alice)["template_id"] == tid

    refused = client.post(f"{TEMPLATES}/{tid}/deactivate", headers=ops)
    assert refused.status_code == 409 and refused.get_json()["code"] == 40950
    builtin = items[1]["id"]
    assert client.post(f"{TEMPLATES}/{builtin}/deactivate", headers=ops).get_json()["data"]["active"] is False
    assert client.post(f"{TEMPLATES}/{builtin}/activate", headers=ops).get_json()["data"]["active"] is True

    with app.app_context():
        actions = db.session().scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert [a for a in actions if a.startswith("poster_template.")] == [
        "poster_template.create",
        "poster_template.update",
        "poster_template.set_default",
        "poster_template.deactivate",
        "poster_template.activate",
    ]


def test_only_templates_for_everyone_can_be_the_default(client, ops):
    tid = client.post(TEMPLATES, headers=ops, json={"name": "分销专享", "audience": 2}).get_json()["data"]["id"]
    response = client.post(f"{TEMPLATES}/{tid}/default", headers=ops)
    assert response.status_code == 422 and response.get_json()["data"]["errors"][0]["field"] == "audience"


def test_preview_draws_the_template_without_storing_or_calling_wechat(app, client, ops, sandbox):
    tid = client.post(TEMPLATES, headers=ops, json={"name": "方形", "width": 800, "height": 800}).get_json()["data"]["id"]
    before = code_calls(sandbox)
    response = client.get(f"{TEMPLATES}/{tid}/preview.png", headers=ops)
    assert response.status_code == 200 and response.mimetype == "image/png"
    image = decode(response.data)
    assert image.size == (800, 800)
    assert scanned(image) == [f"{app.config['PUBLIC_BASE_URL']}/s/PREVIEW0000000000"]
    assert code_calls(sandbox) == before
    assert count(app, PosterImage) == 0 and count(app, Scene) == 0
    assert client.get(f"{TEMPLATES}/999999/preview.png", headers=ops).status_code == 404


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "", None),
        ("post", "", {"name": "x"}),
        ("get", "/1", None),
        ("patch", "/1", {"name": "x"}),
        ("post", "/1/default", None),
        ("post", "/1/deactivate", None),
        ("post", "/1/activate", None),
        ("get", "/1/preview.png", None),
    ],
)
def test_template_console_is_for_operations_and_the_owner(client, staff_login, wx_login, method, path, body):
    call = getattr(client, method)
    assert call(TEMPLATES + path, json=body).status_code == 401
    assert call(TEMPLATES + path, headers=wx_login("alice")["headers"], json=body).status_code == 401
    finance = call(TEMPLATES + path, headers=staff_login("finance"), json=body)
    assert finance.status_code == 403 and finance.get_json()["code"] == 40311
    owner = call(TEMPLATES + path, headers=staff_login("owner"), json=body)
    assert owner.status_code in (200, 201, 404), owner.get_json()


@pytest.mark.parametrize(
    "background, reason",
    [
        (base64.b64encode(b"hello, not an image").decode(), "not a PNG or JPEG"),
        ("%%% not base64 %%%", "not base64"),
        (base64.b64encode(png_bytes("#00FF00", fmt="GIF")).decode(), "not a PNG or JPEG"),
        (base64.b64encode(png_bytes("#00FF00")[:40]).decode(), "not a PNG or JPEG"),
        (base64.b64encode(b"\x89PNG" + b"\0" * services.BACKGROUND_MAX_BYTES).decode(), "larger than"),
    ],
)
def test_background_uploads_must_be_small_png_or_jpeg(client, ops, background, reason):
    response = client.post(TEMPLATES, headers=ops, json={"name": "bg", "background_image": background})
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["code"] in (42252, 42200)
    if body["code"] == 42252:
        assert body["data"]["errors"][0]["field"] == "background_image"
        assert reason in body["data"]["errors"][0]["error"]


def test_an_uploaded_background_is_drawn_and_can_be_removed(app, client, ops, alice, request_poster, fetch_image):
    upload = "data:image/jpeg;base64," + base64.b64encode(png_bytes("#0000FF", (400, 700), "JPEG")).decode()
    created = client.post(TEMPLATES, headers=ops, json={"name": "蓝", "background_image": upload})
    assert created.status_code == 201, created.get_json()
    template = created.get_json()["data"]
    assert template["has_background_image"] is True

    image = fetch_image(request_poster(alice, template_id=template["id"])["image_url"])
    r, g, b = image.getpixel((5, 1330))
    assert b > 200 and r < 40 and g < 40

    removed = client.patch(f"{TEMPLATES}/{template['id']}", headers=ops, json={"background_image": ""}).get_json()["data"]
    assert removed["has_background_image"] is False and removed["version"] == 2
    with app.app_context():
        assert db.session().get(PosterTemplate, template["id"]).background_image is None


@pytest.mark.parametrize(
    "body, field",
    [
        ({"layout": {"code": {"x": 700}}}, "layout.code.size"),
        ({"layout": {"title": {"color": "blue"}}}, "layout.title.color"),
        ({"layout": {"balloon": {}}}, "layout.balloon"),
        ({"width": 400, "layout": {"title": {"w": 590}}}, "layout.title.w"),
    ],
)
def test_layouts_outside_the_canvas_are_refused(client, ops, body, field):
    response = client.post(TEMPLATES, headers=ops, json={"name": "bad", **body})
    assert response.status_code == 422
    assert response.get_json()["code"] == 42253
    assert field in [e["field"] for e in response.get_json()["data"]["errors"]]


def test_template_bodies_are_checked(client, ops):
    for body in ({}, {"name": ""}, {"name": "x", "background_color": "red"}, {"name": "x", "audience": 4},
                 {"name": "x", "width": 100}, {"name": "x", "width": "750"}, {"name": "x", "colour": "#FFFFFF"}):
        response = client.post(TEMPLATES, headers=ops, json=body)
        assert response.status_code == 422 and response.get_json()["code"] == 42200, body
    assert client.patch(f"{TEMPLATES}/999999", headers=ops, json={"name": "x"}).get_json()["code"] == 40450


def test_ids_beyond_bigint_are_not_found_not_errors(client, ops, alice):
    for template_id in (2**63 - 1, 2**63):
        assert client.get(f"{TEMPLATES}/{template_id}", headers=ops).status_code == 404
        assert client.post(f"{TEMPLATES}/{template_id}/default", headers=ops).status_code == 404
    response = client.post(POSTERS, headers=alice["headers"], json={"template_id": 2**63})
    assert response.status_code == 422 and response.get_json()["code"] == 42200


def test_default_template_is_created_once(app):
    with app.app_context(), contextlib.ExitStack() as locks:
        first = services.default_template(db.session(), locks=locks)
        db.commit()
    with app.app_context(), contextlib.ExitStack() as locks:
        again = services.default_template(db.session(), locks=locks)
        assert again.id == first.id
    assert count(app, PosterTemplate) == 1


def test_redis_keeps_the_png_so_serving_skips_the_database(app_factory, redis_url):
    app = app_factory(REDIS_URL=redis_url)
    client = app.test_client()
    login = client.post("/api/v1/auth/wx-login", json={"code": "sandbox:alice"}).get_json()["data"]
    data = client.post(POSTERS, headers={"Authorization": f"Bearer {login['token']}"}, json={}).get_json()["data"]
    token = data["image_url"].rsplit("/", 1)[1].removesuffix(".png")
    r = app.extensions["redis"]
    assert r.ttl(f"poster:png:{token}") > 0
    with app.app_context():
        db.session().execute(PosterImage.__table__.update().values(image=b"stale"))
        db.commit()
    served = client.get(f"{POSTERS}/{token}.png")
    assert decode(served.data).size == (750, 1334)  # from Redis, not the (overwritten) row
    with app.app_context():
        services.invalidate_member_posters(db.session(), login["user"]["id"])
        db.commit()
    assert r.exists(f"poster:png:{token}") == 0


def test_no_transaction_is_open_while_a_poster_is_rendered(app, alice, monkeypatch):
    """Rendering takes tens of milliseconds; on SQLite an open transaction would block every writer meanwhile."""
    from server import db
    from server.posters import render

    seen: list[bool] = []
    original = render.render_poster

    def spy(spec: Any) -> bytes:
        seen.append(db.session().in_transaction())
        return original(spec)

    monkeypatch.setattr(render, "render_poster", spy)
    response = app.test_client().post(POSTERS, headers=alice["headers"], json={})
    assert response.status_code == 200, response.get_json()
    assert seen == [False]


# -- what a cached poster costs --------------------------------------------------------


def test_a_cached_default_poster_is_read_with_its_template_in_one_statement(app, client, alice, request_poster, fake_products):
    from tests.statements import is_mysql, round_trips

    for body in ({}, {"content_type": "product", "content_id": "12"}, {"channel": "h5_link"}):
        drawn = request_poster(alice, **body)
        with round_trips(app) as sent:
            again = request_poster(alice, **body)
        assert again["cached"] is True and again["image_url"] == drawn["image_url"] and again["template_id"] == drawn["template_id"]
        # The token with its member, then the poster with its scene and the current default template.
        assert sent.count("SELECT") == 2, sent
        assert "INSERT" not in sent and "DELETE" not in sent
        if is_mysql(app):
            assert sent == ["SELECT", "SELECT", "COMMIT"]


def test_a_new_default_template_or_version_is_drawn_anew_after_the_one_read(app, client, alice, ops, request_poster):
    first = request_poster(alice)
    template_id = first["template_id"]
    response = client.patch(f"/admin/api/v1/poster-templates/{template_id}", headers=ops, json={"headline": "新标题"})
    assert response.status_code == 200, response.get_json()
    redrawn = request_poster(alice)
    assert redrawn["cached"] is False and redrawn["template_version"] == first["template_version"] + 1
    assert request_poster(alice)["cached"] is True


def test_a_cold_poster_looks_for_itself_once_before_the_lock_and_reads_the_background_with_the_template(app, client, alice, ops, request_poster):
    response = client.patch(f"{TEMPLATES}/{request_poster(alice)['template_id']}", headers=ops,
                            json={"background_image": base64.b64encode(png_bytes("#0000FF")).decode()})
    assert response.status_code == 200, response.get_json()
    with statements_sent(app) as sent:
        drawn = request_poster(alice)
    assert drawn["cached"] is False
    poster_reads = [s for s in sent if s.startswith("SELECT poster_images.id")]
    # The cached-poster read, then once more under the render lock.
    assert len(poster_reads) == 2, poster_reads
    template_reads = [s for s in sent if s.startswith("SELECT") and "FROM poster_templates" in s and "poster_images" not in s]
    assert len(template_reads) == 1 and "poster_templates.background_image" in template_reads[0], template_reads


def test_a_members_first_poster_reads_the_settings_once(app, alice, request_poster):
    """Issuing the poster's scene checks the daily quota and scores the request for risk: both read
    merchant settings, and both are served by one read of them in the transaction."""
    with statements_sent(app) as sent:
        drawn = request_poster(alice)
    assert drawn["cached"] is False
    settings_reads = [s for s in sent if s.startswith("SELECT") and "FROM settings" in s]
    assert len(settings_reads) == 1, settings_reads
    # No savepoint: the scene's risk scoring found nothing, and the new poster's row is the transaction's only
    # write (a poster drawn meanwhile is served instead, the transaction rolled back).
    assert not [s for s in sent if s.startswith("SAVEPOINT")], sent


def test_a_poster_drawn_meanwhile_by_a_worker_that_did_not_wait_for_the_lock_is_served(app, client, alice, request_poster, monkeypatch):
    """The render lock was not taken in time by either request: both draw, the second row breaks the cache key,
    and its request serves the first one's poster instead, with nothing of its own left behind."""
    request_poster(alice, channel="h5_link")  # the default template and the member's scenes exist beforehand

    @contextlib.contextmanager
    def not_taken(name: str) -> Iterator[bool]:
        yield False

    monkeypatch.setattr(services, "_lock", not_taken)
    original = render.render_poster
    inner: list[Any] = []

    def render_after_another_worker(spec: Any) -> bytes:
        if not inner:
            # Another worker draws and commits the same poster while this one renders.
            inner.append(None)
            other = threading.Thread(target=lambda: inner.append(app.test_client().post(POSTERS, headers=alice["headers"], json={})))
            other.start()
            other.join(30)
        return original(spec)

    monkeypatch.setattr(render, "render_poster", render_after_another_worker)
    served = request_poster(alice)
    first = inner[1].get_json()["data"]
    assert inner[1].status_code == 200 and first["cached"] is False
    assert served["cached"] is True and served["image_url"] == first["image_url"]
    assert count(app, PosterImage) == 2  # the h5 poster and the one drawn meanwhile
    # The session goes on after the refused row: the same request again is an ordinary cached read.
    assert request_poster(alice)["image_url"] == first["image_url"]
