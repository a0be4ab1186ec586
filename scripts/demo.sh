#!/usr/bin/env bash
# The main job: bootstraps .venv and replays the seed's procedure on this machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
TIDAL_EXTRAS="${TIDAL_EXTRAS:-dev}" source "$root/scripts/bootstrap.sh"
cd "$root"
exec tidal demo "$@"
