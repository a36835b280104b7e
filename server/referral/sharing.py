"""Sharing outside the mini-program: the member zone's JS-SDK ``wx.config``, and links back into the
mini-program (URL Link and URL Scheme) for a scene.

Both ask WeChat (through a ticket or a link cached for every worker), so callers hold no database
transaction open: the landing page commits its visit first. A WeChat failure costs the page its
share menu or its "open the mini-program" button, never the page.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from flask import current_app, request

from server.cache import get_value, lock, set_value
from server.referral.errors import ForeignPageError
from server.wechat import miniprogram, official_account
from server.wechat.client import LINK_MAX_SECONDS, SHARE_JS_APIS, MiniProgram, WeChatError

logger = logging.getLogger(__name__)

#: A link is asked for this long: WeChat's 30 days, less a margin for the clocks' difference.
LINK_LIFETIME = LINK_MAX_SECONDS - 600
#: A cached link is replaced this long before it expires, so no visitor is handed a dying one.
LINK_RENEW_BEFORE = 86400
#: How long a visit waits for another worker making the same scene's links (two WeChat calls).
LINK_LOCK_SECONDS = 15.0


# -- the JS-SDK -------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def public_page_url(path: str, query_string: bytes | str = b"", *, query_mark: bool = False) -> str:
    """The URL a browser shows for ``path?query`` on this site (PUBLIC_BASE_URL), as the JS-SDK signs it.

    Browsers percent-encode a path's non-ASCII characters and leave the query as sent. ``query_mark``:
    the address ends in a bare ``?`` (an empty query), which ``location.href`` keeps and so the signature must.
    """
    query = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    base = current_app.config["PUBLIC_BASE_URL"]
    encoded = quote(path, safe="/:@!$&'()*+,;=-._~%")
    return f"{base}{encoded}" + (f"?{query}" if query or query_mark else "")


def requested_page_url() -> str:
    """``public_page_url`` of the request being served, a bare trailing ``?`` included.

    WSGI's ``QUERY_STRING`` is empty both for ``/page`` and ``/page?``; the request line as the browser
    sent it (gunicorn's ``RAW_URI``, werkzeug's ``REQUEST_URI``) tells them apart.
    """
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
    return public_page_url(request.path, request.query_string, query_mark="?" in raw.split("#", 1)[0])


def wx_config(page_url: str, js_api_list: tuple[str, ...] = SHARE_JS_APIS) -> dict[str, Any]:
    """The ``wx.config`` object for the page at ``page_url`` (a page of PUBLIC_BASE_URL, else 42266).

    Raises WeChatError when WeChat gives no ticket; ``wx_config_or_none`` is the page's version.
    """
    parts = urlsplit(page_url)
    if parts.scheme not in ("http", "https") or _origin(page_url) != _origin(current_app.config["PUBLIC_BASE_URL"]):
        raise ForeignPageError(data={"url": page_url[:200]})
    return official_account().jssdk_config(page_url, js_api_list).as_dict()


def wx_config_or_none(page_url: str, js_api_list: tuple[str, ...] = SHARE_JS_APIS) -> dict[str, Any] | None:
    """``wx_config``, or None (logged) when WeChat gives no ticket: the page then goes without the share menu."""
    try:
        return wx_config(page_url, js_api_list)
    except WeChatError as error:
        logger.warning("no JS-SDK config for a member-zone page: WeChat errcode=%s", error.errcode)
        return None


# -- back to the mini-program ---------------------------------------------------------------


@dataclass(frozen=True)
class SceneLinks:
    """What opens the mini-program's page with a scene from outside it."""

    #: ``https://wxaurl.cn/…``: opens the mini-program directly inside WeChat, and through a page elsewhere.
    url_link: str
    #: ``weixin://dl/business/?t=…``: a phone's browser hands it to WeChat.
    scheme: str
    #: Unix time both stop working.
    expires_at: int


def scene_page() -> str:
    """The mini-program page a scene opens (``WECHAT_MINIPROGRAM_PAGE``); it reads ``scene`` from its query."""
    return str(current_app.config["WECHAT_MINIPROGRAM_PAGE"])


def _links_key(appid: str, page: str, scene_code: str) -> str:
    return f"mp-links:{appid}:{page}:{scene_code}"


def scene_links(scene_code: str) -> SceneLinks | None:
    """The URL Link and URL Scheme of ``scene_code``'s page with ``scene=<code>``, cached for every worker
    until a day before they expire; None (logged) when WeChat makes none. Call with no transaction open.
    """
    mp = miniprogram()
    page = scene_page()
    key = _links_key(mp.appid, page, scene_code)
    found = _cached_links(key)
    if found is not None:
        return found
    try:
        # Workers that find the cache cold at once take turns, so WeChat's daily quota pays for one link.
        with lock(key, timeout=LINK_LOCK_SECONDS):
            return _cached_links(key) or _make_links(mp, page, scene_code, key)
    except TimeoutError:
        logger.warning("no mini-program link for scene %s: another worker is still making it", scene_code)
        return None


def _cached_links(key: str) -> SceneLinks | None:
    cached = get_value(key)
    if isinstance(cached, dict) and cached.get("expires_at", 0) - time.time() > LINK_RENEW_BEFORE:
        return SceneLinks(url_link=cached["url_link"], scheme=cached["scheme"], expires_at=int(cached["expires_at"]))
    return None


def _make_links(mp: MiniProgram, page: str, scene_code: str, key: str) -> SceneLinks | None:
    now = time.time()
    expire_time = int(now) + LINK_LIFETIME
    query = f"scene={scene_code}"
    try:
        url_link = mp.generate_url_link(page, query, expire_time=expire_time)
        scheme = mp.generate_scheme(page, query, expire_time=expire_time)
    except WeChatError as error:
        logger.warning("no mini-program link for scene %s: WeChat errcode=%s", scene_code, error.errcode)
        return None
    except ValueError as error:  # WECHAT_MINIPROGRAM_PAGE carries a query, or the scene makes too long a one
        logger.warning("no mini-program link for scene %s: %s", scene_code, error)
        return None
    links = SceneLinks(url_link=url_link.url, scheme=scheme.url, expires_at=expire_time)
    set_value(key, {"url_link": links.url_link, "scheme": links.scheme, "expires_at": links.expires_at},
              expire_time - LINK_RENEW_BEFORE - now)
    return links
