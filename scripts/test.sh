#!/usr/bin/env bash
# The test command: bootstraps .venv, installs the system tools the end-to-end tests use, runs pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# CI runs the TensorFlow tests too (SavedModels, TF Serving's gRPC API).
export TIDAL_EXTRAS="${TIDAL_EXTRAS:-dev,tensorflow}"
source "$root/scripts/bootstrap.sh"
source "$root/scripts/system-deps.sh"
cd "$root"
# The gateway's compiled engine, where cargo is: built when missing, rebuilt when its sources changed (the cache
# is keyed on them), so its tests run; without it they are skipped with the reason.
if command -v cargo >/dev/null 2>&1; then
  "$root/scripts/edge.sh" >/dev/null || echo "warning: tidal-edge did not build; its tests will be skipped" >&2
fi
# Test files spread over the machine's cores (pytest-xdist; one file's tests stay on one worker, so its
# fixtures are built once); TIDAL_TEST_WORKERS=0 runs everything in this process.
exec python -m pytest -n "${TIDAL_TEST_WORKERS:-auto}" --dist loadfile "$@"
