"""Adapters around wechatpy: one API base for every call, a shared token, typed errors.

wechatpy 1.8 hard-codes ``https://api.weixin.qq.com`` in the token fetch and in
each API class, caches the token per process and retries a token error forever.
``WeChatApiClient`` fixes those; ``MiniProgram`` is what the rest of the app uses.
No business rules live here.
"""
from __future__ import annotations

import contextlib
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Mapping
from urllib.parse import quote, urlencode, urlsplit

import redis
import requests
from wechatpy import WeChatClient
from wechatpy.client.api.base import BaseWeChatAPI
from wechatpy.client.api.jsapi import WeChatJSAPI
from wechatpy.session import SessionStorage
from wechatpy.session.memorystorage import MemoryStorage
from wechatpy.session.redisstorage import RedisStorage
from wechatpy.utils import json

from server import metrics
from server.cache import RedisLink

logger = logging.getLogger(__name__)

#: Where wechatpy sends everything unless told otherwise.
PRODUCTION_API_BASE = "https://api.weixin.qq.com/"

#: Errcodes meaning "this access token is no good": refresh once and retry.
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})

#: WeChat's "system busy, try again later".
BUSY_ERRCODE = -1

#: Paths WeChat authenticates with appid and secret (or a user's token), never an access token.
TOKENLESS_PATHS = frozenset({
    "cgi-bin/token",
    "cgi-bin/stable_token",
    "sns/jscode2session",
    "sns/oauth2/access_token",
    "sns/oauth2/refresh_token",
})

#: A token this close to its expiry is refreshed before use, so no call races the expiry.
TOKEN_EXPIRY_MARGIN = 300

#: Query parameters whose values never reach a log line.
_SECRET_PARAMS = (
    "secret", "appsecret", "access_token", "js_code", "code", "session_key", "refresh_token", "ticket", "jsapi_ticket",
)
_SECRET_QUERY = re.compile(r"(?i)([?&](?:%s)=)[^&\s\"']*" % "|".join(_SECRET_PARAMS))

#: Ticket types ``cgi-bin/ticket/getticket`` issues: the JS-SDK's and the card API's.
TICKET_TYPES = ("jsapi", "wx_card")

LockFactory = Callable[[str], ContextManager[Any]]


class WeChatError(Exception):
    """WeChat answered with a non-zero errcode, or with something that is not an answer."""

    #: How an answer without an errcode is counted in the metrics (http_5xx, not_json …).
    label = "other"

    def __init__(self, errcode: int | None, errmsg: str) -> None:
        super().__init__(f"WeChat error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg

    @property
    def metrics_label(self) -> str:
        """The errcode as a metrics label (a known number or ``other``), or how an answer without one failed."""
        return metrics.errcode_label(self.errcode) if self.errcode is not None else self.label


class WeChatUnavailableError(WeChatError):
    """WeChat could not be reached or answered garbage: network, timeout, HTTP 5xx, non-JSON, busy."""


@dataclass(frozen=True)
class SessionInfo:
    """What ``jscode2session`` returns for one sign-in."""

    openid: str
    #: Decrypts the mini-program's encrypted data; kept out of repr so it is never logged.
    session_key: str = field(repr=False)
    unionid: str | None = None


@dataclass(frozen=True)
class PhoneInfo:
    """A member's phone number as WeChat vouches for it."""

    #: With the country code for numbers outside mainland China ("+852…"), bare for +86.
    phone_number: str
    pure_phone_number: str
    country_code: str


def redact_url(text: str) -> str:
    """``text`` with the values of secret query parameters replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1***", text)


class _RedactingFilter(logging.Filter):
    """Rewrites a record so URLs in it carry no secret (urllib3 logs full URLs at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_redaction_installed = False
_redaction_guard = threading.Lock()


def _install_log_redaction() -> None:
    # jscode2session and cgi-bin/token take the secret in the query string, which urllib3
    # would otherwise print whenever someone turns on DEBUG logging.
    global _redaction_installed
    with _redaction_guard:
        if not _redaction_installed:
            logging.getLogger("urllib3.connectionpool").addFilter(_RedactingFilter())
            _redaction_installed = True


class SharedTokenStorage(SessionStorage):
    """Tokens in Redis for every worker, with a copy in this process for when Redis is away.

    Reads ask Redis while its breaker is closed (its answer wins, a missing token included, so a
    token another worker replaced is not used); when Redis does not answer, the process's copy is
    used, and a missing one is fetched from WeChat directly. Writes go to both.
    """

    def __init__(self, link: RedisLink, prefix: str = "wechat") -> None:
        self.link = link
        self.shared = RedisStorage(link.client, prefix=prefix)
        self.local = MemoryStorage()

    def get(self, key: str, default: Any = None) -> Any:
        if self.link.usable() is not None:
            try:
                value = self.shared.get(key)
            except redis.RedisError as error:
                self.link.failed(error)
            else:
                self.link.answered()
                return default if value is None else value
        value = self.local.get(key)
        return default if value is None else value

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        self.local.set(key, value, ttl)
        if self.link.usable() is not None:
            try:
                self.shared.set(key, value, ttl)
            except redis.RedisError as error:
                self.link.failed(error)
            else:
                self.link.answered()

    def delete(self, key: str) -> None:
        self.local.delete(key)
        if self.link.usable() is not None:
            try:
                self.shared.delete(key)
            except redis.RedisError as error:
                self.link.failed(error)


def make_token_storage(redis_client: RedisLink | redis.Redis | None, prefix: str = "wechat") -> SessionStorage:
    """Redis storage so every worker shares one access token (with a process copy), or process memory without Redis."""
    if redis_client is None:
        return MemoryStorage()
    link = redis_client if isinstance(redis_client, RedisLink) else RedisLink(redis_client)
    return SharedTokenStorage(link, prefix=prefix)


def _thread_lock_factory() -> LockFactory:
    locks: dict[str, threading.Lock] = {}
    guard = threading.Lock()

    def factory(name: str) -> ContextManager[Any]:
        with guard:
            return locks.setdefault(name, threading.Lock())

    return factory


def _normalize_base(api_base: str) -> str:
    return api_base if api_base.endswith("/") else api_base + "/"


class WeChatApiClient(WeChatClient):
    """A wechatpy client whose every URL starts at ``api_base`` and whose token is single-flight."""

    #: wechatpy's class attribute (wechatpy has no types), set per instance in ``__init__``.
    API_BASE_URL: str

    def __init__(
        self,
        appid: str,
        secret: str,
        *,
        api_base: str = PRODUCTION_API_BASE,
        session: SessionStorage | None = None,
        timeout: float = 5.0,
        lock_factory: LockFactory | None = None,
    ) -> None:
        super().__init__(appid, secret, session=session or MemoryStorage(), timeout=timeout, auto_retry=True)
        self.api_base = _normalize_base(api_base)
        self._lock_factory = lock_factory or _thread_lock_factory()
        # wechatpy keeps the base on the classes; set it on this client's instances only,
        # so a sandbox client and a production client can live in one process.
        self.API_BASE_URL = self._rebase(type(self).API_BASE_URL)
        # wechatpy's __new__ put one bound API object per class attribute in the instance dict.
        # Read that dict, not inspect.getmembers: getmembers evaluates every property, and
        # ``access_token`` would fetch a token while the client is still being built.
        for api in list(vars(self).values()):
            class_base = getattr(type(api), "API_BASE_URL", "") if isinstance(api, BaseWeChatAPI) else ""
            if class_base:
                api.API_BASE_URL = self._rebase(class_base)
        _install_log_redaction()

    def _rebase(self, url: str) -> str:
        if url.startswith(PRODUCTION_API_BASE):
            return self.api_base + url[len(PRODUCTION_API_BASE):]
        return url

    def _endpoint(self, url: str) -> str:
        """``url`` relative to the API base and without its query: safe to log and to match on."""
        path = url.split("?", 1)[0]
        if path.startswith(self.api_base):
            return path[len(self.api_base):]
        return urlsplit(path).path.lstrip("/")

    # -- the access token -------------------------------------------------

    @property
    def access_token_key(self) -> str:
        # Not wechatpy's key: the value here is {"token", "expires_at"}, because
        # MemoryStorage ignores TTLs and the expiry must be shared with other workers.
        return f"{self.appid}_access_token_entry"

    def _stored_token(self) -> str | None:
        entry = self.session.get(self.access_token_key)
        if isinstance(entry, dict) and entry.get("expires_at", 0) - time.time() > TOKEN_EXPIRY_MARGIN:
            return str(entry["token"])
        return None

    @property
    def access_token(self) -> str:
        """A valid access token from the shared storage, fetched (once for all workers) when missing."""
        return self._stored_token() or self.refresh_access_token()

    def refresh_access_token(self, stale: str | None = None) -> str:
        """Fetch a new token unless another worker already replaced ``stale`` (or the missing one)."""
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self._lock_factory(f"wechat-token:{self.appid}"))
            except Exception as exc:  # the lock backend's own error: Redis LockError, TimeoutError
                raise WeChatUnavailableError(None, f"token lock not taken: {type(exc).__name__}") from exc
            current = self._stored_token()
            if current is not None and current != stale:
                return current
            result = self.fetch_access_token()
            return str(result["access_token"])

    def fetch_access_token(self) -> dict[str, Any]:
        """Unconditionally fetch a token from ``cgi-bin/token`` and store it; callers hold the lock."""
        logger.info("fetching a WeChat access token for appid %s", self.appid)
        result = self._send(
            "get",
            self.api_base + "cgi-bin/token",
            {"params": {"grant_type": "client_credential", "appid": self.appid, "secret": self.secret}},
        )
        if not isinstance(result, dict) or not result.get("access_token"):
            raise WeChatUnavailableError(None, "cgi-bin/token returned no access_token")
        expires_in = int(result.get("expires_in") or 7200)
        self.session.set(
            self.access_token_key,
            {"token": result["access_token"], "expires_at": time.time() + expires_in},
            expires_in,
        )
        self.expires_at = int(time.time()) + expires_in
        return result

    # -- tickets (the JS-SDK's jsapi_ticket) ----------------------------------

    def _ticket_key(self, kind: str) -> str:
        return f"{self.appid}_{kind}_ticket_entry"

    def _stored_ticket(self, kind: str) -> str | None:
        entry = self.session.get(self._ticket_key(kind))
        if isinstance(entry, dict) and entry.get("expires_at", 0) - time.time() > TOKEN_EXPIRY_MARGIN:
            return str(entry["ticket"])
        return None

    def ticket(self, kind: str = "jsapi") -> str:
        """A valid ticket of ``kind`` from the shared storage, fetched (once for all workers) when missing."""
        return self._stored_ticket(kind) or self.refresh_ticket(kind)

    def refresh_ticket(self, kind: str = "jsapi", stale: str | None = None) -> str:
        """Fetch a new ticket unless another worker already replaced ``stale`` (or the missing one).

        Stored and locked like the access token; an access token WeChat calls invalid is refreshed
        and the fetch retried once by ``_request``.
        """
        if kind not in TICKET_TYPES:
            raise ValueError(f"ticket type must be one of {', '.join(TICKET_TYPES)}")
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self._lock_factory(f"wechat-ticket:{self.appid}:{kind}"))
            except Exception as exc:  # the lock backend's own error: Redis LockError, TimeoutError
                raise WeChatUnavailableError(None, f"ticket lock not taken: {type(exc).__name__}") from exc
            current = self._stored_ticket(kind)
            if current is not None and current != stale:
                return current
            logger.info("fetching a WeChat %s ticket for appid %s", kind, self.appid)
            result = self.jsapi.get_ticket(kind)
            if not isinstance(result, dict) or not isinstance(result.get("ticket"), str) or not result["ticket"]:
                raise WeChatUnavailableError(None, "cgi-bin/ticket/getticket returned no ticket")
            try:
                expires_in = int(result.get("expires_in") or 7200)
            except (TypeError, ValueError):
                raise WeChatUnavailableError(None, "cgi-bin/ticket/getticket: expires_in is not a number") from None
            self.session.set(self._ticket_key(kind), {"ticket": result["ticket"], "expires_at": time.time() + expires_in}, expires_in)
            return str(result["ticket"])

    # -- requests ---------------------------------------------------------

    def _request(self, method: str, url_or_endpoint: str, **kwargs: Any) -> Any:
        """Every wechatpy call lands here: build the URL, add the token, retry once on a token error."""
        retried = kwargs.pop("_token_retried", False)
        api_base_url = kwargs.pop("api_base_url", self.API_BASE_URL)
        if url_or_endpoint.startswith(("http://", "https://")):
            url = self._rebase(url_or_endpoint)
        else:
            url = api_base_url + url_or_endpoint
        params = kwargs.get("params")
        if params is None:
            params = kwargs["params"] = {}
        sends_token = (
            isinstance(params, dict)
            and "access_token" not in params
            and self._endpoint(url) not in TOKENLESS_PATHS
        )
        if sends_token:
            params["access_token"] = self.access_token
        if isinstance(kwargs.get("data"), dict):
            kwargs["data"] = json.dumps(kwargs["data"], ensure_ascii=False).encode("utf-8")
        result_processor = kwargs.pop("result_processor", None)
        try:
            result = self._send(method, url, kwargs)
        except WeChatError as exc:
            if sends_token and self.auto_retry and not retried and exc.errcode in TOKEN_ERRCODES:
                logger.info("WeChat rejected the access token (%s); refreshing once", exc.errcode)
                params["access_token"] = self.refresh_access_token(stale=params["access_token"])
                return self._request(method, url, _token_retried=True, result_processor=result_processor, **kwargs)
            raise
        return result_processor(result) if result_processor and isinstance(result, dict) else result

    def _send(self, method: str, url: str, kwargs: dict[str, Any]) -> dict[str, Any] | requests.Response:
        """One HTTP exchange: a JSON dict, or the raw response for an image; errors become WeChatError.

        Each exchange is counted by its path template and errcode (``server.metrics``), never with its query.
        """
        kwargs.setdefault("timeout", self.timeout)
        path = self._endpoint(url)
        began = time.perf_counter()
        try:
            res = self._http.request(method=method, url=url, **kwargs)
        except requests.Timeout:
            metrics.count_wechat(path, "timeout", None)
            # Never chain the requests exception: its message holds the full URL, secret included.
            raise with_label(WeChatUnavailableError(None, f"{path}: timed out"), "timeout") from None
        except requests.RequestException as exc:
            metrics.count_wechat(path, "network", None)
            raise with_label(WeChatUnavailableError(None, f"{path}: {type(exc).__name__}"), "network") from None
        answered = time.perf_counter() - began
        outcome = "0"
        try:
            return self._answer(path, res)
        except WeChatError as error:
            outcome = error.metrics_label
            raise
        finally:
            metrics.count_wechat(path, outcome, answered)

    def _answer(self, path: str, res: requests.Response) -> dict[str, Any] | requests.Response:
        """WeChat's answer to one exchange: a JSON dict, or the raw response for an image; errors become WeChatError."""
        if res.status_code >= 500:
            raise with_label(WeChatUnavailableError(None, f"{path}: HTTP {res.status_code}"), "http_5xx")
        if res.status_code >= 400:
            raise with_label(WeChatError(None, f"{path}: HTTP {res.status_code}"), "http_4xx")
        if res.headers.get("Content-Type", "").split(";")[0].strip().startswith("image/"):
            return res
        try:
            result = json.loads(res.content.decode("utf-8"), strict=False)
        except ValueError:
            raise with_label(WeChatUnavailableError(None, f"{path}: response is not JSON"), "not_json") from None
        if not isinstance(result, dict):
            raise with_label(WeChatUnavailableError(None, f"{path}: response is not a JSON object"), "not_json")
        try:
            errcode = int(result.get("errcode") or 0)
        except (TypeError, ValueError):
            raise with_label(WeChatUnavailableError(None, f"{path}: errcode is not a number"), "not_json") from None
        if errcode != 0:
            errmsg = str(result.get("errmsg") or "")
            # A token error is usually healed by one refresh: not worth a warning.
            level = logging.INFO if errcode in TOKEN_ERRCODES else logging.WARNING
            logger.log(level, "WeChat %s answered errcode %s: %s", path, errcode, errmsg)
            error_type = WeChatUnavailableError if errcode == BUSY_ERRCODE else WeChatError
            raise error_type(errcode, errmsg)
        return result


def with_label(error: WeChatError, label: str) -> WeChatError:
    """``error`` carrying the metrics label of a call that ended without an errcode (timeout, http_5xx …)."""
    error.label = label
    return error


def _json(result: Any, path: str) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise WeChatUnavailableError(None, f"{path}: an image instead of JSON")
    return result


def _required(result: Mapping[str, Any], key: str, path: str) -> str:
    value = result.get(key)
    if not isinstance(value, (str, int)) or value == "":
        raise WeChatUnavailableError(None, f"{path}: response lacks {key}")
    return str(value)


def _msgid(result: Mapping[str, Any]) -> int | None:
    msgid = result.get("msgid")
    return msgid if isinstance(msgid, int) and not isinstance(msgid, bool) else None


#: WeChat's limit on a URL Link's or URL Scheme's query.
LINK_QUERY_MAX = 1024
#: Since 2023 every URL Link and URL Scheme expires, within 30 days of being generated.
LINK_MAX_SECONDS = 30 * 86400


@dataclass(frozen=True)
class MiniProgramLink:
    """A URL Link (``https://wxaurl.cn/…``) or URL Scheme (``weixin://dl/business/?t=…``) opening one page."""

    url: str
    #: Unix time it stops working, as asked of WeChat.
    expires_at: int


class MiniProgram:
    """The mini-program's server-side WeChat APIs, typed and with WeChat's errors as WeChatError."""

    def __init__(self, client: WeChatApiClient) -> None:
        self.client = client

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        redis_client: Any | None = None,
        lock_factory: LockFactory | None = None,
    ) -> MiniProgram:
        """Build from ``WECHAT_APPID``, ``WECHAT_SECRET``, ``WECHAT_API_BASE`` and ``WECHAT_TIMEOUT``."""
        client = WeChatApiClient(
            config["WECHAT_APPID"],
            config["WECHAT_SECRET"],
            api_base=config.get("WECHAT_API_BASE") or PRODUCTION_API_BASE,
            session=make_token_storage(redis_client),
            timeout=float(config.get("WECHAT_TIMEOUT") or 5),
            lock_factory=lock_factory,
        )
        return cls(client)

    @property
    def appid(self) -> str:
        return str(self.client.appid)

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self.client._http.close()

    def code_to_session(self, js_code: str) -> SessionInfo:
        """Exchange a ``wx.login()`` code for the member's openid, unionid and session key."""
        path = "sns/jscode2session"
        # A tokenless path: the client sends appid and secret, and no access token is fetched.
        result = _json(self.client.get(
            path,
            api_base_url=self.client.api_base,
            params={
                "appid": self.client.appid,
                "secret": self.client.secret,
                "js_code": js_code,
                "grant_type": "authorization_code",
            },
        ), path)
        return SessionInfo(
            openid=_required(result, "openid", path),
            session_key=_required(result, "session_key", path),
            unionid=result.get("unionid") or None,
        )

    def get_phone_number(self, code: str) -> PhoneInfo:
        """Exchange a ``getPhoneNumber`` button code for the member's phone number."""
        path = "wxa/business/getuserphonenumber"
        result = _json(self.client.post(path, api_base_url=self.client.api_base, data={"code": code}), path)
        info = result.get("phone_info")
        if not isinstance(info, dict):
            raise WeChatUnavailableError(None, f"{path}: response lacks phone_info")
        return PhoneInfo(
            phone_number=_required(info, "phoneNumber", path),
            pure_phone_number=_required(info, "purePhoneNumber", path),
            country_code=_required(info, "countryCode", path),
        )

    def get_unlimited_code(
        self,
        scene: str,
        page: str | None = None,
        width: int = 430,
        check_path: bool = False,
        env_version: str = "release",
    ) -> bytes:
        """The image of a mini-program code carrying ``scene`` (``wxacode.getUnlimited``)."""
        path = "wxa/getwxacodeunlimit"
        body: dict[str, Any] = {"scene": scene, "width": width, "check_path": check_path, "env_version": env_version}
        if page is not None:
            body["page"] = page
        result = self.client.post(path, api_base_url=self.client.api_base, data=body)
        if not isinstance(result, requests.Response):
            # errcode 0 with no image: WeChat documents no such answer.
            raise WeChatUnavailableError(None, f"{path}: JSON instead of an image")
        return result.content

    @staticmethod
    def _link_expiry(path: str, query: str, expire_time: int) -> None:
        if "?" in path:
            raise ValueError("the page path carries no query; pass it as query")
        if len(query) > LINK_QUERY_MAX:
            raise ValueError(f"query must be at most {LINK_QUERY_MAX} characters")
        if not 60 < expire_time - time.time() <= LINK_MAX_SECONDS:
            raise ValueError("a link expires between one minute and 30 days from now")

    def generate_url_link(self, path: str, query: str, *, expire_time: int, env_version: str = "release") -> MiniProgramLink:
        """A URL Link (``wxa/generate_urllink``): an https link that opens ``path?query`` in the mini-program."""
        self._link_expiry(path, query, expire_time)
        api = "wxa/generate_urllink"
        body = {"path": path, "query": query, "env_version": env_version, "expire_type": 0, "expire_time": expire_time}
        result = _json(self.client.post(api, api_base_url=self.client.api_base, data=body), api)
        return MiniProgramLink(_required(result, "url_link", api), expire_time)

    def generate_scheme(self, path: str, query: str, *, expire_time: int, env_version: str = "release") -> MiniProgramLink:
        """A URL Scheme (``wxa/generatescheme``): ``weixin://dl/business/?t=…``, which a phone's browser hands to WeChat."""
        self._link_expiry(path, query, expire_time)
        api = "wxa/generatescheme"
        body = {
            "jump_wxa": {"path": path, "query": query, "env_version": env_version},
            "is_expire": True,
            "expire_type": 0,
            "expire_time": expire_time,
        }
        result = _json(self.client.post(api, api_base_url=self.client.api_base, data=body), api)
        return MiniProgramLink(_required(result, "openlink", api), expire_time)

    def send_subscribe_message(
        self,
        openid: str,
        template_id: str,
        data: Mapping[str, str],
        *,
        page: str | None = None,
        miniprogram_state: str = "formal",
        lang: str = "zh_CN",
    ) -> int | None:
        """Send a subscribe message (``subscribeMessage.send``); WeChat's msgid, where it gives one.

        ``data`` maps each keyword (``thing1``) to its value. WeChat answers 43101 when the member has
        no acceptance of the template left, 47003 naming a keyword whose value breaks its type's rules.
        """
        path = "cgi-bin/message/subscribe/send"
        body: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
            "miniprogram_state": miniprogram_state,
            "lang": lang,
        }
        if page:
            body["page"] = page
        result = _json(self.client.post(path, api_base_url=self.client.api_base, data=body), path)
        return _msgid(result)


# -- the official account (公众号) ---------------------------------------------------

#: WeChat's host for official-account QR images (``showqrcode``).
PRODUCTION_MP_BASE = "https://mp.weixin.qq.com/"
#: WeChat's host for the OAuth page a user's browser is sent to.
PRODUCTION_OPEN_BASE = "https://open.weixin.qq.com/"
#: A temporary parametric QR code lives at least a minute and at most 30 days.
QR_MIN_EXPIRE_SECONDS, QR_MAX_EXPIRE_SECONDS = 60, 2_592_000
#: WeChat's limit on ``scene_str``.
QR_SCENE_STR_MAX = 64
OAUTH_SCOPES = ("snsapi_base", "snsapi_userinfo")


@dataclass(frozen=True)
class SceneQR:
    """A parametric QR code of the official account."""

    ticket: str
    #: What the code encodes (``http://weixin.qq.com/q/…``); any QR renderer can draw it.
    url: str
    #: Seconds it stays valid; None for a permanent code.
    expire_seconds: int | None


#: The JS-SDK calls a page asks for unless told otherwise: the new share menus (JS-SDK 1.4+).
SHARE_JS_APIS = ("updateAppMessageShareData", "updateTimelineShareData")


@dataclass(frozen=True)
class JsSdkConfig:
    """What a page passes to ``wx.config`` (``as_dict``): the signature binds it to one page URL."""

    app_id: str
    timestamp: int
    nonce_str: str
    signature: str
    js_api_list: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The object ``wx.config`` takes, in the JS-SDK's key names."""
        return {
            "appId": self.app_id,
            "timestamp": self.timestamp,
            "nonceStr": self.nonce_str,
            "signature": self.signature,
            "jsApiList": list(self.js_api_list),
        }


def jsapi_signature(ticket: str, nonce_str: str, timestamp: int, url: str) -> str:
    """WeChat's JS-SDK signature: sha1 of ``jsapi_ticket=…&noncestr=…&timestamp=…&url=…``.

    ``url`` is the page's full URL as the browser has it, without the ``#`` fragment and not
    re-encoded; wechatpy sorts the pairs (their keys' ASCII order) and hashes them.
    """
    if "#" in url:
        raise ValueError("the signed URL must not carry a #fragment")
    # wechatpy's helper uses no instance state: called on the class.
    return str(WeChatJSAPI.get_jsapi_signature(None, nonce_str, ticket, timestamp, url))


@dataclass(frozen=True)
class OAUser:
    """What ``cgi-bin/user/info`` tells about a user of the official account."""

    openid: str
    #: Null when the account is not bound to an open-platform account, or for a non-follower.
    unionid: str | None
    subscribed: bool


@dataclass(frozen=True)
class OAuthResult:
    """Who came back from the official account's web OAuth."""

    openid: str
    #: WeChat sends it for ``snsapi_userinfo`` only; ask ``user_info`` otherwise.
    unionid: str | None
    #: ``is_snapshotuser`` 1: a Moments snapshot page's virtual user, whose openid every such viewer shares.
    snapshot: bool = False


class OfficialAccount:
    """The official account's server-side WeChat APIs: parametric QR codes, users, menu and web OAuth."""

    def __init__(
        self,
        client: WeChatApiClient,
        *,
        mp_base: str = PRODUCTION_MP_BASE,
        open_base: str = PRODUCTION_OPEN_BASE,
    ) -> None:
        self.client = client
        self.mp_base = _normalize_base(mp_base)
        self.open_base = _normalize_base(open_base)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        redis_client: Any | None = None,
        lock_factory: LockFactory | None = None,
    ) -> OfficialAccount:
        """Build from ``WECHAT_OA_APPID``, ``WECHAT_OA_SECRET``, ``WECHAT_API_BASE``, ``WECHAT_MP_BASE`` and
        ``WECHAT_OPEN_BASE``; an empty host key means the host of ``WECHAT_API_BASE`` (one sandbox serves all)."""
        api_base = _normalize_base(config.get("WECHAT_API_BASE") or PRODUCTION_API_BASE)
        production = api_base == PRODUCTION_API_BASE
        client = WeChatApiClient(
            config["WECHAT_OA_APPID"],
            config["WECHAT_OA_SECRET"],
            api_base=api_base,
            session=make_token_storage(redis_client),
            timeout=float(config.get("WECHAT_TIMEOUT") or 5),
            lock_factory=lock_factory,
        )
        return cls(
            client,
            mp_base=config.get("WECHAT_MP_BASE") or (PRODUCTION_MP_BASE if production else api_base),
            open_base=config.get("WECHAT_OPEN_BASE") or (PRODUCTION_OPEN_BASE if production else api_base),
        )

    @property
    def appid(self) -> str:
        return str(self.client.appid)

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self.client._http.close()

    def create_scene_qr(self, scene: str, expire_seconds: int | None = None) -> SceneQR:
        """A QR code carrying ``scene``: permanent when ``expire_seconds`` is None, else temporary."""
        if not 1 <= len(scene) <= QR_SCENE_STR_MAX:
            raise ValueError(f"scene must be 1-{QR_SCENE_STR_MAX} characters")
        path = "cgi-bin/qrcode/create"
        body: dict[str, Any] = {"action_info": {"scene": {"scene_str": scene}}}
        if expire_seconds is None:
            # Permanent codes are capped at 100,000 per account; callers should reuse them.
            body["action_name"] = "QR_LIMIT_STR_SCENE"
        else:
            if not QR_MIN_EXPIRE_SECONDS <= expire_seconds <= QR_MAX_EXPIRE_SECONDS:
                raise ValueError(f"expire_seconds must be {QR_MIN_EXPIRE_SECONDS}-{QR_MAX_EXPIRE_SECONDS}")
            body["action_name"] = "QR_STR_SCENE"
            body["expire_seconds"] = expire_seconds
        result = _json(self.client.post(path, api_base_url=self.client.api_base, data=body), path)
        expires: int | None = None
        if expire_seconds is not None:
            try:
                expires = int(result.get("expire_seconds") or expire_seconds)
            except (TypeError, ValueError):
                raise WeChatUnavailableError(None, f"{path}: expire_seconds is not a number") from None
        return SceneQR(ticket=_required(result, "ticket", path), url=_required(result, "url", path), expire_seconds=expires)

    def qrcode_image_url(self, ticket: str) -> str:
        """Where the QR image of ``ticket`` is served; tickets hold ``+``, ``/`` and ``=``, hence the quoting."""
        return f"{self.mp_base}cgi-bin/showqrcode?ticket={quote(ticket, safe='')}"

    def user_info(self, openid: str) -> OAUser:
        """Whether ``openid`` follows the account, and their unionid where WeChat gives it."""
        path = "cgi-bin/user/info"
        result = _json(
            self.client.get(path, api_base_url=self.client.api_base, params={"openid": openid, "lang": "zh_CN"}), path
        )
        return OAUser(
            openid=_required(result, "openid", path),
            unionid=result.get("unionid") or None,
            subscribed=result.get("subscribe") in (1, "1"),
        )

    def create_menu(self, menu: Mapping[str, Any]) -> None:
        """Replace the account's custom menu (``{"button": [...]}``)."""
        path = "cgi-bin/menu/create"
        _json(self.client.post(path, api_base_url=self.client.api_base, data=dict(menu)), path)

    def get_menu(self) -> dict[str, Any]:
        """The menu in force (``is_menu_open`` and ``selfmenu_info``), however it was set."""
        path = "cgi-bin/get_current_selfmenu_info"
        result = _json(self.client.get(path, api_base_url=self.client.api_base), path)
        return {k: v for k, v in result.items() if k not in ("errcode", "errmsg")}

    def send_template_message(
        self,
        openid: str,
        template_id: str,
        data: Mapping[str, str],
        *,
        miniprogram: tuple[str, str] | None = None,
        url: str | None = None,
    ) -> int | None:
        """Send a template message to a follower (``cgi-bin/message/template/send``); WeChat's msgid.

        ``miniprogram`` is (appid, pagepath) of the page it opens; WeChat answers 43004 when
        ``openid`` does not follow the account.
        """
        path = "cgi-bin/message/template/send"
        body: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
        }
        if miniprogram is not None:
            body["miniprogram"] = {"appid": miniprogram[0], "pagepath": miniprogram[1]}
        if url:
            body["url"] = url
        result = _json(self.client.post(path, api_base_url=self.client.api_base, data=body), path)
        return _msgid(result)

    def jssdk_config(self, url: str, js_api_list: tuple[str, ...] = SHARE_JS_APIS) -> JsSdkConfig:
        """The ``wx.config`` of the page at ``url`` (its fragment is dropped, as the JS-SDK does)."""
        page = url.split("#", 1)[0]
        # The nonce is any string of letters and digits; 16 of them, like WeChat's example.
        nonce = secrets.token_hex(8)
        timestamp = int(time.time())
        signature = jsapi_signature(self.client.ticket("jsapi"), nonce, timestamp, page)
        return JsSdkConfig(self.appid, timestamp, nonce, signature, tuple(js_api_list))

    def oauth_url(self, redirect_uri: str, state: str, scope: str = "snsapi_base") -> str:
        """The page to send a browser to; WeChat sends it back to ``redirect_uri`` with ``code`` and ``state``."""
        if scope not in OAUTH_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(OAUTH_SCOPES)}")
        # WeChat wants exactly this parameter order, and the fragment, or it shows an error page.
        query = urlencode(
            [("appid", self.appid), ("redirect_uri", redirect_uri), ("response_type", "code"), ("scope", scope), ("state", state)]
        )
        return f"{self.open_base}connect/oauth2/authorize?{query}#wechat_redirect"

    def oauth_exchange(self, code: str) -> OAuthResult:
        """Exchange the ``code`` OAuth sent back for the user's openid (and unionid, if WeChat gives it)."""
        path = "sns/oauth2/access_token"
        # A tokenless path: authenticated by appid and secret, no access token is fetched.
        result = _json(self.client.get(
            path,
            api_base_url=self.client.api_base,
            params={"appid": self.client.appid, "secret": self.client.secret, "code": code, "grant_type": "authorization_code"},
        ), path)
        return OAuthResult(
            openid=_required(result, "openid", path),
            unionid=result.get("unionid") or None,
            snapshot=result.get("is_snapshotuser") == 1,
        )
