"""How fast posters are: drawn cold, served from the cache, and the image itself.

Everything runs in this process: a temporary SQLite database migrated with Alembic,
the WeChat sandbox on a local port (so mini-program codes cross real HTTP, as in
production), and the app driven through its test client. It prints figures only.

    .venv/bin/python bench/poster_bench.py [--n 30] [--redis redis://127.0.0.1:6379/15]
"""
from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import create_app, migrate  # noqa: E402
from server.config import TestingConfig  # noqa: E402
from server.posters import render  # noqa: E402
from wechat_sandbox import create_sandbox_app, render_code, sandbox_apps_from_config, serve_in_thread  # noqa: E402

POSTERS = "/api/v1/referral/posters"


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def timed(n: int, call: Callable[[int], Any]) -> list[float]:
    """Milliseconds of ``call(i)`` for i in range(n)."""
    samples = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def report(label: str, samples: list[float]) -> float:
    median = statistics.median(samples)
    rate = len(samples) / (sum(samples) / 1000)
    p95 = percentile(samples, 0.95)
    print(f"{label:<46} n={len(samples):<4} median {median:8.2f} ms   p95 {p95:8.2f} ms   {rate:8.1f} req/s")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=30, help="requests per measurement (default 30)")
    parser.add_argument("--redis", default=None, help="a Redis URL to cache PNGs in (flushed!); default none")
    args = parser.parse_args()
    n = max(2, args.n)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the sandbox's access log

    with tempfile.TemporaryDirectory() as tmp:
        sandbox = serve_in_thread(create_sandbox_app(sandbox_apps_from_config(vars(TestingConfig())), seed="bench"))
        config = TestingConfig()
        config.DATABASE_URL = f"sqlite:///{tmp}/bench.db"
        config.REDIS_URL = args.redis
        config.WECHAT_API_BASE = sandbox.base_url
        config.LOGIN_RATE_LIMIT = 1_000_000
        app = create_app(config)
        migrate.upgrade(app)
        if app.extensions["redis"] is not None:
            app.extensions["redis"].flushdb()
        client = app.test_client()
        base = app.config["PUBLIC_BASE_URL"]

        def sign_in(name: str) -> dict[str, str]:
            token = client.post("/api/v1/auth/wx-login", json={"code": f"sandbox:{name}"}).get_json()["data"]["token"]
            headers = {"Authorization": f"Bearer {token}"}
            client.patch("/api/v1/me", headers=headers, json={"nickname": f"会员{name[-3:]}"})
            return headers

        def poster(headers: dict[str, str], cached: bool, **body: Any) -> dict[str, Any]:
            response = client.post(POSTERS, headers=headers, json=body)
            data = response.get_json()["data"]
            assert response.status_code == 200 and data["cached"] is cached, response.get_json()
            return data

        members = [sign_in(f"bench-{i:03d}") for i in range(n)]
        urls: list[str] = []

        print(f"posters: {n} members, SQLite, Redis {'on' if args.redis else 'off'}, WeChat sandbox over HTTP")
        first = timed(1, lambda _: poster(sign_in("bench-first"), False))
        print(f"{'first request (fonts, WeChat token, template)':<46} {first[0]:8.2f} ms")

        cold_samples = timed(n, lambda i: urls.append(poster(members[i], False)["image_url"]))
        cold = report("cold, mini-program code (WeChat + draw)", cold_samples)
        report("cold, H5 QR code (draw only)", timed(n, lambda i: poster(members[i], False, channel="moments_poster")))
        cached = report("cached request (no draw, no WeChat)", timed(n, lambda i: poster(members[i], True)))
        # The PNG goes to Redis when the poster is drawn, so with Redis on both rounds read it from there.
        report("image GET (from Redis if on, else database)", timed(n, lambda i: client.get(urls[i][len(base):]).data))
        report("image GET, same images again", timed(n, lambda i: client.get(urls[i][len(base):]).data))

        spec = render.PosterSpec(code_png=render_code("AbCdEfGhIjKlMnOp", 300), nickname="爱丽丝", headline="好物分享",
                                 body_text="精选好物 · 品质保障", title="我发现了一家好店，推荐给你", subtitle="精选好物 · 会员专享")
        report("render_poster alone (draw + PNG)", timed(n, lambda _: render.render_poster(spec)))
        print(f"cold / cached (medians): {cold / cached:.1f}x")

        app.extensions["db_engine"].dispose()
        sandbox.shutdown()


if __name__ == "__main__":
    main()
