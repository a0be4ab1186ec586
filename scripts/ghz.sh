#!/usr/bin/env bash
# Builds ghz, a compiled gRPC load generator, from its Go module into the tool cache outside the repository, and
# prints its path. The gRPC benchmarks (benchmarks/v2grpc, benchmarks/tensorflow) use it when it is there.
#
#   scripts/ghz.sh                      # build it if missing, print the path
#   TIDAL_TOOLS=/some/dir scripts/ghz.sh
set -euo pipefail

version="v0.93.0"   # keep equal to benchmarks/ghz.py's MODULE
bin="${TIDAL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/tidal/bin}"
if [ -x "$bin/ghz" ] && go version -m "$bin/ghz" 2>/dev/null | grep -q "github.com/bojand/ghz[[:space:]]*$version"; then
  echo "$bin/ghz"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "ghz: Go is not installed; install Go >= 1.22 to build the gRPC load generator" >&2
  exit 1
fi
mkdir -p "$bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Outside any module, so `go install` takes ghz's own go.mod as it is.
(cd "$work" && GOBIN="$bin" GOFLAGS=-mod=mod go install "github.com/bojand/ghz/cmd/ghz@$version") >&2
echo "$bin/ghz"
