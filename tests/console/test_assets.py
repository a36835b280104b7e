"""The vendored browser libraries are the pinned npm builds, untouched, with their licences."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "server" / "console" / "static" / "vendor"


def test_vendored_files_match_the_manifest_of_the_pinned_tarballs() -> None:
    manifest = json.loads((VENDOR / "MANIFEST.json").read_text(encoding="utf-8"))
    assert set(manifest) == {"htmx.org", "echarts"}
    for name, entry in manifest.items():
        assert entry["integrity"].startswith("sha512-")
        assert "LICENSE" in entry["files"], f"{name} is vendored without its licence"
        for file_name, sha256 in entry["files"].items():
            content = (VENDOR / name / file_name).read_bytes()
            assert hashlib.sha256(content).hexdigest() == sha256, f"{name}/{file_name} differs from the pinned build: run scripts/vendor-assets"


def test_the_vendor_script_pins_what_the_manifest_records() -> None:
    script = (ROOT / "scripts" / "vendor-assets").read_text(encoding="utf-8")
    manifest = json.loads((VENDOR / "MANIFEST.json").read_text(encoding="utf-8"))
    for name, entry in manifest.items():
        assert f'"{entry["version"]}"' in script and entry["integrity"] in script, name


def test_static_files_are_served_with_their_types(client) -> None:  # type: ignore[no-untyped-def]
    for path, mimetype in (
        ("/console/static/console.css", "text/css"),
        ("/console/static/console.js", "text/javascript"),
        ("/console/static/vendor/htmx.org/htmx.min.js", "text/javascript"),
    ):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == mimetype, path
        response.close()
