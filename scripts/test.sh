#!/usr/bin/env bash
# The test command: bootstraps .venv, installs the system tools the end-to-end tests use, runs pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# CI runs the TensorFlow tests too (SavedModels, TF Serving's gRPC API).
export TIDAL_EXTRAS="${TIDAL_EXTRAS:-dev,tensorflow}"
source "$root/scripts/bootstrap.sh"
source "$root/scripts/system-deps.sh"
cd "$root"
exec python -m pytest "$@"
