#!/usr/bin/env bash
# Creates .venv with Python 3.11 and installs Tidal with the extras named in $TIDAL_EXTRAS (default: dev).
# Reinstalls only when pyproject.toml changes. Sourced by the quick-start scripts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(command -v python3.11 || command -v python3)"
if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  else
    echo "bootstrap: python3-venv is missing (sudo apt-get install python3-venv)" >&2; exit 1
  fi
fi
extras="${TIDAL_EXTRAS:-dev}"
stamp="$root/.venv/.tidal-installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)-$extras"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$py" -m venv "$root/.venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$root/.venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$root/.venv/bin/python" -m pip install -q -e "$root[$extras]"
  echo "$want" > "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
