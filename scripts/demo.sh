#!/usr/bin/env bash
# The main job: bootstraps .venv and replays the reference procedure (elastic inference on spot instances) here.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
TIDAL_EXTRAS="${TIDAL_EXTRAS:-dev}" source "$root/scripts/bootstrap.sh"
cd "$root"
# The gateway's compiled engine where cargo is (built once, about two minutes; `tidal up` then uses it);
# without it the Python gateway serves alone.
if command -v cargo >/dev/null 2>&1; then
  "$root/scripts/edge.sh" >/dev/null || echo "warning: tidal-edge did not build; the Python gateway serves alone" >&2
fi
exec tidal demo "$@"
