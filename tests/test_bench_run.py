"""The benchmark entry point (bench/run.py) still runs: its smoke mode, on SQLite, end to end.

It starts the app and the bare baseline under gunicorn and drives them with wrk, so it runs where
both are installed and is skipped elsewhere.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"),
    pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed beside this Python"),
]


def _cells(markdown: str, path: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {path} "))
    return [cell.strip() for cell in line.strip("|").split("|")]


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
    assert _cells(text, "settlement (20 members, 200 matured rewards)")[1].endswith("rewards/s")
    assert "passed" in next(line for line in text.splitlines() if line.startswith("- ledger-check ("))
