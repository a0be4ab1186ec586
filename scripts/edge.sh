#!/usr/bin/env bash
# Builds tidal-edge, the gateway's compiled data plane (`tidal up --gateway-engine edge`), from edge/ into the
# tool cache outside the repository, and prints its path. The cached binary is keyed on a hash of the sources,
# so it is rebuilt only when they change.
#
#   scripts/edge.sh                      # build it if missing or stale, print the path
#   TIDAL_TOOLS=/some/dir scripts/edge.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${TIDAL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/tidal/bin}"
key="$(cd "$root/edge" && cat Cargo.toml Cargo.lock $(find src -name '*.rs' | LC_ALL=C sort) | sha256sum | cut -c1-16)"
if [ -x "$bin/tidal-edge" ] && [ "$(cat "$bin/tidal-edge.key" 2>/dev/null)" = "$key" ]; then
  echo "$bin/tidal-edge"
  exit 0
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "tidal-edge: cargo is not installed; install Rust (https://rustup.rs) to build the gateway's edge engine" >&2
  exit 1
fi
mkdir -p "$bin"
cd "$root/edge"
# Offline first: the crates are often in cargo's cache already; the exact versions are in Cargo.lock either way.
cargo build --release --locked --offline >&2 2>/dev/null || cargo build --release --locked >&2
tmp="$bin/.tidal-edge.$$"
cp target/release/tidal-edge "$tmp"
mv -f "$tmp" "$bin/tidal-edge"
echo "$key" > "$bin/tidal-edge.key"
echo "$bin/tidal-edge"
