# Sourced by scripts/run and scripts/test: a virtualenv in .venv with the pinned requirements.
# Reinstalls only when a requirements file changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat "$@" requirements.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  for req in "$@"; do .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"; done
  rm -f .venv/.installed-* && touch "$stamp"
fi
