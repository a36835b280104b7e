"""Configuration: one class reading the environment, one for tests.

Secrets come only from the environment. ``APP_ENV`` says where the app runs:

- ``production`` (also when ``APP_ENV`` is unset, so a bare ``gunicorn 'server:create_app()'``
  can never fall back to the sandbox): the WeChat sandbox, demo data and any default secret are
  refused at start, naming every variable that is missing;
- ``development`` (what ``scripts/run`` sets): sandbox mode unless ``WECHAT_APPID`` is given, and
  in sandbox mode every WeChat credential has a public, non-secret default that the sandbox also
  knows, so a fresh checkout runs with nothing else set.
"""
from __future__ import annotations

import ipaddress
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Credentials the sandbox accepts when none are configured. They open nothing real.
SANDBOX_DEFAULTS = {
    "WECHAT_APPID": "wx5a0d5a4d5b0c0001",
    "WECHAT_SECRET": "sandbox-miniprogram-secret-000000",
    "WECHAT_OA_APPID": "wx5a0d5a4d5b0c0002",
    "WECHAT_OA_SECRET": "sandbox-official-account-secret-0",
    "WECHAT_OA_TOKEN": "sandbox-token",
    # An EncodingAESKey is 43 characters: 32 bytes in base64 without the padding.
    "WECHAT_OA_AES_KEY": "c2FuZGJveC1hZXMta2V5LWZvci10aGUtb2ZmaWNpYWw",
    "WECHAT_PAY_MCH_ID": "1900000109",
    "WECHAT_PAY_API_KEY": "sandboxpayapikey00000000000000000",
    "WECHAT_PAY_API_V3_KEY": "sandboxpayapiv3key00000000000000",
}


#: How WeChat Pay v3 answers and notifications are verified (``WECHAT_PAY_V3_VERIFY``): platform certificates
#: downloaded from /v3/certificates, the WeChat Pay public key (微信支付公钥), or both during the switch-over.
PAY_VERIFY_MODES = ("certificates", "public_key", "both")
#: How the id of a WeChat Pay public key starts.
PAY_PUBLIC_KEY_ID_PREFIX = "PUB_KEY_ID_"

#: The values of APP_ENV; unset means production.
APP_ENVS = ("development", "production")

#: The values of LOG_FORMAT.
LOG_FORMATS = ("json", "text")

#: The SECRET_KEY a development run in sandbox mode falls back to when none is set.
SANDBOX_SECRET_KEY = "sandbox-only-secret-key-do-not-use-in-production"

#: Secret keys written in this repository or its docs (or too obvious to be secret): never accepted in production.
KNOWN_SECRET_KEYS = frozenset(
    {SANDBOX_SECRET_KEY, "test-secret-key", "bench-only-secret", "secret", "changeme", "change-me", "dev", "development"}
)

#: A production SECRET_KEY is at least this long (``python -c 'import secrets; print(secrets.token_urlsafe(48))'``).
MIN_SECRET_KEY_LENGTH = 32


class ConfigError(RuntimeError):
    """The environment cannot start the app; the message names every variable to set or change."""


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


class Config:
    """Production configuration, read from the environment when instantiated."""

    TESTING = False
    #: An APP_ENV that wins over the environment's (the tests run as development whatever is set).
    _app_env: str | None = None
    # The names of SANDBOX_DEFAULTS: from the environment, or in development's sandbox mode those defaults.
    WECHAT_APPID: str
    WECHAT_SECRET: str
    WECHAT_OA_APPID: str
    WECHAT_OA_SECRET: str
    WECHAT_OA_TOKEN: str
    WECHAT_OA_AES_KEY: str
    WECHAT_PAY_MCH_ID: str
    WECHAT_PAY_API_KEY: str
    WECHAT_PAY_API_V3_KEY: str

    def __init__(self) -> None:
        env = os.environ
        app_env = self._app_env or (env.get("APP_ENV") or "").strip().lower()
        #: "development" or "production" (see the module's docstring); unset means production.
        self.APP_ENV = app_env or "production"
        #: Whether APP_ENV was given, so a refusal can say that production was assumed.
        self.APP_ENV_SET = bool(app_env)
        self.SECRET_KEY = env.get("SECRET_KEY") or ""
        self.DATABASE_URL = env.get("DATABASE_URL") or f"sqlite:///{ROOT / 'var' / 'app.db'}"
        #: Whether DATABASE_URL was given; production does not use the SQLite file in var/.
        self.DATABASE_URL_SET = bool(env.get("DATABASE_URL"))
        self.REDIS_URL = env.get("REDIS_URL") or None
        #: Seconds a Redis connection or command may take before Redis counts as away.
        self.REDIS_TIMEOUT = float(env.get("REDIS_TIMEOUT") or 1.0)
        #: Seconds Redis is skipped after it failed to answer, before it is tried again.
        self.REDIS_RETRY_SECONDS = float(env.get("REDIS_RETRY_SECONDS") or 5.0)
        self.PUBLIC_BASE_URL = (env.get("PUBLIC_BASE_URL") or "http://127.0.0.1:5000").rstrip("/")
        #: Whether PUBLIC_BASE_URL was given; if not, ``python -m server run`` sets it to the address it serves.
        self.PUBLIC_BASE_URL_SET = bool(env.get("PUBLIC_BASE_URL"))

        # In development, the sandbox unless real credentials are given, or WECHAT_SANDBOX says otherwise.
        # In production never by default, and check() refuses WECHAT_SANDBOX=1.
        self.WECHAT_SANDBOX = _env_bool("WECHAT_SANDBOX", not env.get("WECHAT_APPID") and not self.production)
        self.WECHAT_SANDBOX_PORT = _env_int("WECHAT_SANDBOX_PORT", 5100)
        sandbox_base = f"http://127.0.0.1:{self.WECHAT_SANDBOX_PORT}/"
        default_api = sandbox_base if self.WECHAT_SANDBOX else "https://api.weixin.qq.com/"
        default_pay = sandbox_base if self.WECHAT_SANDBOX else "https://api.mch.weixin.qq.com/"
        self.WECHAT_API_BASE = env.get("WECHAT_API_BASE") or default_api
        self.WECHAT_PAY_API_BASE = env.get("WECHAT_PAY_API_BASE") or default_pay
        # The official account's QR images (mp.weixin.qq.com) and OAuth pages (open.weixin.qq.com)
        # live on their own hosts; empty means the host of WECHAT_API_BASE, where the sandbox serves them.
        self.WECHAT_MP_BASE = env.get("WECHAT_MP_BASE") or ("" if self.WECHAT_SANDBOX else "https://mp.weixin.qq.com/")
        self.WECHAT_OPEN_BASE = env.get("WECHAT_OPEN_BASE") or ("" if self.WECHAT_SANDBOX else "https://open.weixin.qq.com/")

        for name, sandbox_value in SANDBOX_DEFAULTS.items():
            value = env.get(name) or (sandbox_value if self.WECHAT_SANDBOX and not self.production else "")
            setattr(self, name, value)
        self.WECHAT_PAY_MCH_CERT_SERIAL = env.get("WECHAT_PAY_MCH_CERT_SERIAL", "")
        self.WECHAT_PAY_MCH_PRIVATE_KEY = env.get("WECHAT_PAY_MCH_PRIVATE_KEY", "")
        self.WECHAT_PAY_PLATFORM_PUBLIC_KEY = env.get("WECHAT_PAY_PLATFORM_PUBLIC_KEY", "")
        self.WECHAT_PAY_PLATFORM_SERIAL = env.get("WECHAT_PAY_PLATFORM_SERIAL", "")
        #: The WeChat Pay public key (pub_key.pem from the merchant platform) and its id, ``PUB_KEY_ID_…``.
        self.WECHAT_PAY_PUBLIC_KEY = env.get("WECHAT_PAY_PUBLIC_KEY", "")
        self.WECHAT_PAY_PUBLIC_KEY_ID = env.get("WECHAT_PAY_PUBLIC_KEY_ID", "").strip()
        #: One of PAY_VERIFY_MODES; unset: ``public_key`` once a public key id is given, else ``certificates``.
        self.WECHAT_PAY_V3_VERIFY = (env.get("WECHAT_PAY_V3_VERIFY") or ("public_key" if self.WECHAT_PAY_PUBLIC_KEY_ID else "certificates")).strip().lower()
        #: "v3" or "v2": the WeChat Pay API new prepays go through (an order keeps the one it used).
        self.WECHAT_PAY_API = (env.get("WECHAT_PAY_API") or "v3").lower()
        #: v2 signatures: "HMAC-SHA256" or "MD5".
        self.WECHAT_PAY_V2_SIGN_TYPE = env.get("WECHAT_PAY_V2_SIGN_TYPE") or "HMAC-SHA256"
        #: PEM paths of the merchant's client certificate and its key (apiclient_cert.pem, apiclient_key.pem):
        #: the v2 refund API refuses calls without them.
        self.WECHAT_PAY_MCH_CERT = env.get("WECHAT_PAY_MCH_CERT", "")
        self.WECHAT_PAY_MCH_KEY = env.get("WECHAT_PAY_MCH_KEY", "")
        #: In sandbox mode without the v3 PEM paths, the merchant and platform key pairs are generated here once.
        self.WECHAT_PAY_SANDBOX_KEY_DIR = env.get("WECHAT_PAY_SANDBOX_KEY_DIR") or str(ROOT / "var" / "sandbox-pay")
        #: Seconds a WeChat HTTP call may take before it fails.
        self.WECHAT_TIMEOUT = float(env.get("WECHAT_TIMEOUT") or 5)
        #: The mini-program page a poster's code opens; the page reads the scene from its query.
        self.WECHAT_MINIPROGRAM_PAGE = env.get("WECHAT_MINIPROGRAM_PAGE") or "pages/index/index"
        #: Which version of the mini-program a subscribe message opens: formal, trial or developer.
        self.WECHAT_MINIPROGRAM_STATE = env.get("WECHAT_MINIPROGRAM_STATE") or "formal"
        #: Seconds a poster's PNG stays in Redis after it was drawn or last read from the database.
        self.POSTER_CACHE_TTL = _env_int("POSTER_CACHE_TTL", 24 * 3600)
        #: Where images staff upload (materials' pictures and covers) are kept, served under /media/.
        self.MEDIA_DIR = env.get("MEDIA_DIR") or str(ROOT / "var" / "media")
        #: Where console exports written in the background are kept until they expire (never served statically).
        self.EXPORT_DIR = env.get("EXPORT_DIR") or str(ROOT / "var" / "exports")
        #: A console export of at most this many rows streams straight to the browser; a larger one is
        #: written in the background and downloaded from /console/exports/<id>.
        self.EXPORT_STREAM_MAX_ROWS = _env_int("EXPORT_STREAM_MAX_ROWS", 20_000)
        #: Hours a background export stays downloadable.
        self.EXPORT_TTL_HOURS = _env_int("EXPORT_TTL_HOURS", 24)
        #: Rows read from the database per query while exporting (keyset batches: memory stays flat).
        self.EXPORT_BATCH_ROWS = _env_int("EXPORT_BATCH_ROWS", 1000)
        #: Threads per process that drain the job queue (server/jobs): each web worker and the scheduler run them.
        self.JOB_DRAINERS = _env_int("JOB_DRAINERS", 1)
        #: Seconds a drainer waits between looks at the queue when no commit in its process woke it.
        self.JOB_POLL_SECONDS = _env_int("JOB_POLL_SECONDS", 2)
        #: 0 turns the queue's back-pressure off: requests never run a job themselves, however far behind the drainers are.
        self.JOB_BACKPRESSURE = _env_int("JOB_BACKPRESSURE", 1)

        #: Lifetime of a member's or staff member's bearer token.
        self.TOKEN_TTL_SECONDS = _env_int("TOKEN_TTL_SECONDS", 7 * 24 * 3600)
        #: Sign-in attempts allowed per client address, and per openid, in one window.
        self.LOGIN_RATE_LIMIT = _env_int("LOGIN_RATE_LIMIT", 20)
        self.LOGIN_RATE_WINDOW = _env_int("LOGIN_RATE_WINDOW", 60)
        #: Console sign-in attempts for one username from one client address in one window (the
        #: address as a whole has LOGIN_RATE_LIMIT); never per username alone, or anyone could lock staff out.
        self.STAFF_LOGIN_RATE_LIMIT = _env_int("STAFF_LOGIN_RATE_LIMIT", 5)
        #: Landing-page requests (GET /s/<scene>) allowed per client address and minute. Generous:
        #: a carrier's NAT puts many phones behind one address.
        self.LANDING_RATE_LIMIT = _env_int("LANDING_RATE_LIMIT", 120)
        #: Hosts (and their subdomains) a training video's https link may point at, comma-separated.
        self.TRAINING_VIDEO_HOSTS = [h.strip().lower() for h in (env.get("TRAINING_VIDEO_HOSTS") or "v.qq.com,mp.weixin.qq.com,channels.weixin.qq.com").split(",") if h.strip()]
        #: Feedback and reports one member may send per hour.
        self.FEEDBACK_RATE_LIMIT = _env_int("FEEDBACK_RATE_LIMIT", 5)
        #: Minutes without a request after which a console session ends.
        self.CONSOLE_IDLE_MINUTES = _env_int("CONSOLE_IDLE_MINUTES", 30)
        #: Set behind a reverse proxy so the client address comes from X-Forwarded-For.
        self.TRUSTED_PROXIES = _env_int("TRUSTED_PROXIES", 0)
        self.LOG_LEVEL = env.get("LOG_LEVEL", "INFO")
        #: "json" (one object per line, for journald and log shippers) or "text"; production defaults to json.
        self.LOG_FORMAT = (env.get("LOG_FORMAT") or ("json" if self.production else "text")).strip().lower()
        #: Client addresses or networks (comma-separated) that may read GET /metrics; empty: none.
        #: Behind nginx the address is the one TRUSTED_PROXIES gives, so the public never matches the loopback.
        self.METRICS_ALLOWED_IPS = tuple(part.strip() for part in env.get("METRICS_ALLOWED_IPS", "127.0.0.1,::1").split(",") if part.strip())
        #: A bearer token that opens GET /metrics from any address (``Authorization: Bearer …``); empty: none.
        self.METRICS_TOKEN = env.get("METRICS_TOKEN", "")

    @property
    def production(self) -> bool:
        return self.APP_ENV == "production"

    def check(self) -> None:
        """Refuse to start without the settings the environment needs; ConfigError says which."""
        if self.APP_ENV not in APP_ENVS:
            raise ConfigError(f"APP_ENV must be development or production, not {self.APP_ENV!r}")
        if self.LOG_FORMAT not in LOG_FORMATS:
            raise ConfigError(f"LOG_FORMAT must be json or text, not {self.LOG_FORMAT!r}")
        for network in self.METRICS_ALLOWED_IPS:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"METRICS_ALLOWED_IPS: {network!r} is not an address or network") from None
        if self.WECHAT_MINIPROGRAM_STATE not in ("formal", "trial", "developer"):
            raise ConfigError(f"WECHAT_MINIPROGRAM_STATE must be formal, trial or developer, not {self.WECHAT_MINIPROGRAM_STATE!r}")
        if self.production:
            missing = self.production_problems()
            if missing:
                assumed = "" if self.APP_ENV_SET else " (APP_ENV is unset, so production is assumed)"
                raise ConfigError(
                    f"APP_ENV=production{assumed} needs: {', '.join(missing)}. "
                    "To run against the WeChat sandbox with demo data, set APP_ENV=development (scripts/run does)."
                )
            return
        if not self.SECRET_KEY:
            if self.WECHAT_SANDBOX:
                # A sandbox run without a key still needs stable signatures across restarts.
                self.SECRET_KEY = SANDBOX_SECRET_KEY
            else:
                raise ConfigError("SECRET_KEY must be set when WeChat is not the sandbox")
        if not self.WECHAT_SANDBOX:
            missing = [n for n in ("WECHAT_APPID", "WECHAT_SECRET") if not getattr(self, n)]
            if missing:
                raise ConfigError(f"missing WeChat configuration: {', '.join(missing)}")

    def production_problems(self) -> list[str]:
        """Every variable production needs set or changed, each with what is wrong when unset is not all."""
        problems: list[str] = []
        if not self.SECRET_KEY:
            problems.append("SECRET_KEY")
        elif self.SECRET_KEY in KNOWN_SECRET_KEYS:
            problems.append("SECRET_KEY (not a default written in the repository)")
        elif len(self.SECRET_KEY) < MIN_SECRET_KEY_LENGTH:
            problems.append(f"SECRET_KEY (at least {MIN_SECRET_KEY_LENGTH} characters)")
        if self.WECHAT_SANDBOX:
            problems.append("WECHAT_SANDBOX (unset or 0: the sandbox is for development)")
        required = ["WECHAT_APPID", "WECHAT_SECRET"]
        if self.WECHAT_OA_APPID:
            required += ["WECHAT_OA_SECRET"]
        if self.WECHAT_PAY_MCH_ID:
            # Pay is expected once a merchant is named: the keys of the API new prepays go through.
            if self.WECHAT_PAY_API == "v2":
                required += ["WECHAT_PAY_API_KEY", "WECHAT_PAY_MCH_CERT", "WECHAT_PAY_MCH_KEY"]
            else:
                required += ["WECHAT_PAY_API_V3_KEY", "WECHAT_PAY_MCH_CERT_SERIAL", "WECHAT_PAY_MCH_PRIVATE_KEY"]
                required += self._pay_key_problems(problems)
        problems += [name for name in required if not getattr(self, name)]
        problems += [
            f"{name} (not the sandbox's public default)"
            for name, sandbox_value in SANDBOX_DEFAULTS.items()
            if getattr(self, name) == sandbox_value
        ]
        if not self.DATABASE_URL_SET:
            problems.append("DATABASE_URL (the SQLite file in var/ is for development)")
        if not self.PUBLIC_BASE_URL_SET:
            problems.append("PUBLIC_BASE_URL (the https:// origin of this service)")
        elif not self.PUBLIC_BASE_URL.startswith("https://"):
            problems.append("PUBLIC_BASE_URL (https://: WeChat Pay and OAuth call back there)")
        return problems


    def _pay_key_problems(self, problems: list[str]) -> list[str]:
        """The WeChat Pay keys v3 verifies with, for the mode chosen: what is required; wrong values go to ``problems``."""
        mode = self.WECHAT_PAY_V3_VERIFY
        if mode not in PAY_VERIFY_MODES:
            problems.append(f"WECHAT_PAY_V3_VERIFY ({', '.join(PAY_VERIFY_MODES)})")
            return []
        required: list[str] = []
        if mode in ("public_key", "both"):
            required += ["WECHAT_PAY_PUBLIC_KEY", "WECHAT_PAY_PUBLIC_KEY_ID"]
            if self.WECHAT_PAY_PUBLIC_KEY_ID and not self.WECHAT_PAY_PUBLIC_KEY_ID.startswith(PAY_PUBLIC_KEY_ID_PREFIX):
                problems.append(f"WECHAT_PAY_PUBLIC_KEY_ID (starts with {PAY_PUBLIC_KEY_ID_PREFIX})")
        if mode in ("certificates", "both") and (self.WECHAT_PAY_PLATFORM_PUBLIC_KEY or self.WECHAT_PAY_PLATFORM_SERIAL):
            # Downloaded by themselves; a certificate pinned by hand needs its serial, and the serial its file.
            required += ["WECHAT_PAY_PLATFORM_PUBLIC_KEY", "WECHAT_PAY_PLATFORM_SERIAL"]
        return required


class TestingConfig(Config):
    """Sandbox WeChat, the test database and no real secrets."""

    TESTING = True
    _app_env = "development"

    def __init__(self) -> None:
        super().__init__()
        self.SECRET_KEY = "test-secret-key"
        self.DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or "sqlite://"
        self.REDIS_URL = os.environ.get("TEST_REDIS_URL") or None
        self.WECHAT_SANDBOX = True
        for name, sandbox_value in SANDBOX_DEFAULTS.items():
            setattr(self, name, sandbox_value)
        self.LOGIN_RATE_LIMIT = 1000
        self.STAFF_LOGIN_RATE_LIMIT = 1000
        # GET /metrics for the test client's loopback address only, whatever the environment says.
        self.METRICS_ALLOWED_IPS = ("127.0.0.1", "::1")
        self.METRICS_TOKEN = ""
        #: Background tasks run inline after the commit, so tests see their effects at once.
        self.TASKS_EAGER = True
        # Tests generate their own WeChat Pay key pairs, outside the checkout, and never read real ones.
        self.WECHAT_PAY_SANDBOX_KEY_DIR = os.environ.get("TEST_WECHAT_PAY_SANDBOX_KEY_DIR") or str(
            Path(tempfile.gettempdir()) / f"referral-test-sandbox-pay-{getattr(os, 'getuid', lambda: 0)()}"
        )
        for name in (
            "WECHAT_PAY_MCH_PRIVATE_KEY",
            "WECHAT_PAY_PLATFORM_PUBLIC_KEY",
            "WECHAT_PAY_MCH_CERT",
            "WECHAT_PAY_MCH_KEY",
            "WECHAT_PAY_PUBLIC_KEY",
            "WECHAT_PAY_PUBLIC_KEY_ID",
        ):
            setattr(self, name, "")
        self.WECHAT_PAY_V3_VERIFY = "certificates"
        self.WECHAT_PAY_API = "v3"
        self.WECHAT_PAY_V2_SIGN_TYPE = "HMAC-SHA256"
        # Background exports go outside the checkout; their names carry a random part, so runs may share it.
        self.EXPORT_DIR = os.environ.get("TEST_EXPORT_DIR") or str(Path(tempfile.gettempdir()) / f"referral-test-exports-{getattr(os, 'getuid', lambda: 0)()}")
        # Uploaded test images go outside the checkout; names are content hashes, so runs may share it.
        self.MEDIA_DIR = os.environ.get("TEST_MEDIA_DIR") or str(Path(tempfile.gettempdir()) / f"referral-test-media-{getattr(os, 'getuid', lambda: 0)()}")
