"""The benchmark entry point (bench/run.py) still runs: its smoke mode, on SQLite, end to end; and the figures
of the rounds it shares with the other benchmarks (bench/servers.py).

The smoke run starts the app and the bare baseline under gunicorn and drives them with wrk, so it runs
where both are installed and is skipped elsewhere.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")



def _bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module  # its dataclasses look their module up while they are built
    spec.loader.exec_module(module)
    return module


def _cells(markdown: str, path: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {path} "))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
@pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed beside this Python")
def test_the_smoke_run_measures_every_path_against_its_baseline_and_writes_the_table(tmp_path: Path) -> None:
    table = tmp_path / "bench.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "DATABASE_URL", "REDIS_URL"))}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--markdown", str(table)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = table.read_text(encoding="utf-8")
    assert "load average (1, 5, 15 min) at the start" in text

    me = _cells(text, "GET /api/v1/me")
    assert me[1].endswith("req/s") and me[2].endswith("req/s") and me[3].endswith("×"), me
    assert me[6] == "≥ 0.60×"
    fresh = _cells(text, "POST /wechat/pay/v3/notify (fresh)")
    assert fresh[1].endswith("req/s") and fresh[3].endswith("×"), fresh
    assert "failed" not in next(line for line in text.splitlines() if line.startswith("- POST /wechat/pay/v3/notify (fresh):"))
    points = _cells(text, "points processed (fresh notifications)")
    assert points[1].endswith("orders/s"), points
    team = next(line for line in text.splitlines() if line.startswith("| GET /api/v1/referral/team (60 + 240, cursors)"))
    assert "req/s" in team
    assert _cells(text, "GET /api/v1/referral/team one at a time (in-process)")[1].endswith(" ms")
    # The in-process cases are timed before the servers start and any load is put on them.
    out = done.stdout
    assert out.index("team-page …") < out.index("settle …") < out.index("gunicorn -w") < out.index("me …") < out.index("team …"), out
    assert _cells(text, "settlement (20 members, 200 matured rewards)")[1].endswith("rewards/s")
    assert "passed" in next(line for line in text.splitlines() if line.startswith("- ledger-check ("))


def test_the_job_backlog_is_read_from_a_jobs_table_and_shown_only_when_there_is_one() -> None:
    run = _bench("run")
    engine = create_engine("sqlite://")
    bench = SimpleNamespace(flask=SimpleNamespace(extensions={"db_engine": engine}))
    assert run.queued_jobs(bench) is None
    without = run.table([run.Row(path="GET /x", target="≥ 1×", app=10.0, bare=20.0, ratio=0.5)])
    assert without[0][-1] == "load (1 min)" and without[1][1:4] == ["10.0 req/s", "20.0 req/s", "0.50×"]

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE jobs (id INTEGER PRIMARY KEY, state VARCHAR(10))"))
        conn.execute(text("INSERT INTO jobs (state) VALUES ('queued'), ('queued'), ('running'), ('failed')"))
    assert run.queued_jobs(bench) == 3
    rows = [run.Row(path="points", target="t", app=5.0, unit="orders/s", backlog=3), run.Row(path="me", target="t")]
    cells = run.table(rows)
    assert cells[0][-1] == "jobs backlog" and cells[1][-1] == "3" and cells[2][-1] == ""


def test_the_shared_rounds_give_the_median_of_each_rounds_ratio_and_the_apps_latencies() -> None:
    servers = _bench("servers")

    def wrk(rate: float, p50: float, load: float, errors: int = 0) -> Any:
        return servers.Wrk(rate=rate, p50=p50, p99=p50 * 3, mean=p50, requests=int(rate), errors=errors, non_2xx=errors, sent=int(rate), load=load)

    apps = [wrk(100, 10, 1.0), wrk(300, 30, 2.0, errors=4), wrk(200, 20, 3.0, errors=1)]
    bares = [wrk(1000, 1, 4.0), wrk(1000, 2, 5.0), wrk(500, 3, 6.0)]
    found = servers.summarize(apps, bares)
    # The rounds' ratios are 0.1, 0.3 and 0.4: their median, not the ratio of the medians (200 / 1000).
    assert found.ratio == pytest.approx(0.3)
    assert (found.app, found.bare, found.p50, found.p99, found.errors) == (200, 1000, 20, 60, 5)
    assert found.load == pytest.approx(3.5)
    assert [servers.round_order(n) for n in range(3)] == [("bare", "app"), ("app", "bare"), ("bare", "app")]


def test_a_prepared_request_is_sent_as_written_with_its_own_length() -> None:
    servers = _bench("servers")
    assert servers.raw_request("GET", "/api/v1/me", {"Authorization": "Bearer t", "Host": "example.com"}) == (
        b"GET /api/v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer t\r\n\r\n"
    )
    posted = servers.raw_request("POST", "/n", {"Content-Type": "application/json", "Content-Length": "99"}, b"{}")
    assert posted == b"POST /n HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_the_floor_app_reads_the_member_on_every_route_of_every_layer(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/floor.py's routes (PyMySQL itself, SQLAlchemy Core on the app's engine, the ORM) each read the member."""
    if app.extensions["db_engine"].dialect.name != "mysql":
        pytest.skip("the floor app reads MariaDB/MySQL through PyMySQL")
    from server import db
    from server.accounts.models import Member

    floor = _bench("floor")
    with app.app_context():
        db.session().add(Member(id=floor.MEMBER_ID, openid="floor-member", nickname="floor"))
        db.commit()
    monkeypatch.setenv("FLOOR_DATABASE_URL", app.config["DATABASE_URL"])
    floor_app = floor.create_app()
    client = floor_app.test_client()
    try:
        assert client.get("/bare").get_json()["data"] == {"ok": True}
        for route in floor.ROUTES[1:]:
            response = client.get(route)
            assert response.status_code == 200 and response.get_json()["data"] == {"id": floor.MEMBER_ID}, (route, response.data)
    finally:
        floor.close(floor_app)
