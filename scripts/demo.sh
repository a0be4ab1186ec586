#!/usr/bin/env bash
# The main job: bootstraps .venv and replays the reference procedure (elastic inference on spot instances) here.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
TIDAL_EXTRAS="${TIDAL_EXTRAS:-dev}" source "$root/scripts/bootstrap.sh"
cd "$root"
exec tidal demo "$@"
