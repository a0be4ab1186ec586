#!/usr/bin/env bash
# The Kubernetes tests against a real control plane: builds etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok and helm from their Go modules when missing (about 10 minutes once per machine, cached
# outside the repository), then runs tests/kube.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export TIDAL_EXTRAS="${TIDAL_EXTRAS:-dev,tensorflow}"
source "$root/scripts/bootstrap.sh"
export TIDAL_KUBE_BIN="$("$root/scripts/kube-binaries.sh")"
export TIDAL_KUBE_BUILD=1
cd "$root"
exec python -m pytest tests/kube "$@"
