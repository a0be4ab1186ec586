#!/usr/bin/env bash
# Builds the Kubernetes test binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, helm)
# from their Go modules (tools/kube) into a cache outside the repository, and prints that folder.
#
#   scripts/kube-binaries.sh            # build what is missing, print the bin folder
#   TIDAL_KUBE_BIN=/some/dir scripts/kube-binaries.sh
#
# Idempotent: a stamp holds the hash of tools/kube/go.mod + go.sum, so a version change rebuilds everything and
# an unchanged one builds only the binaries that are missing. Progress goes to stderr; stdout is the folder alone.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$root/tools/kube"

if ! command -v go >/dev/null 2>&1; then
  echo "kube-binaries: Go is not installed; install Go >= 1.26 to build the Kubernetes test binaries" >&2
  exit 1
fi

version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")"
bin="${TIDAL_KUBE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tidal/kube/$version/bin}"
mkdir -p "$bin"

# binary name -> Go package (each is the project's own main package)
names=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok helm)
declare -A pkgs=(
  [etcd]=go.etcd.io/etcd/server/v3
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kwok]=sigs.k8s.io/kwok/cmd/kwok
  [helm]=helm.sh/helm/v4/cmd/helm
)

helm_version="$(awk '$1 == "helm.sh/helm/v4" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")"
# Built from modules, the programs do not know their release; the linker writes it where each one reads it (the API
# server's /version, which clients and helm charts' kubeVersion check; `helm version`). kwok and etcd carry theirs.
minor="${version#v1.}"; minor="${minor%%.*}"
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
declare -A ldflags=(
  [kube-apiserver]="$kube_ldflags" [kube-controller-manager]="$kube_ldflags" [kube-scheduler]="$kube_ldflags"
  [helm]=" -X helm.sh/helm/v4/internal/version.version=$helm_version"
)

# go.mod and go.sum say what is built, this script how: a change to any of them rebuilds.
stamp_want="$(cat "$mod/go.mod" "$mod/go.sum" "$root/scripts/kube-binaries.sh" | sha256sum | cut -d' ' -f1)"

# One builder at a time per folder (two test sessions on one machine must not race on the same files).
exec 9>"$bin/.lock"
flock 9

# The stamp names what the binaries here were built from; each binary lands whole (built aside, then
# renamed), so after an interrupted build the ones present are still good and only the rest get built.
if [[ "$(cat "$bin/.stamp" 2>/dev/null || true)" != "$stamp_want" ]]; then
  for name in "${names[@]}"; do rm -f "$bin/$name"; done
  echo "$stamp_want" >"$bin/.stamp"
fi

missing=()
for name in "${names[@]}"; do
  [[ -x "$bin/$name" ]] || missing+=("$name")
done

if ((${#missing[@]})); then
  echo "kube-binaries: building ${missing[*]} (Kubernetes $version) into $bin; a first build takes several minutes" >&2
  cd "$mod"
  for name in "${missing[@]}"; do
    start=$SECONDS
    # GOFLAGS from the caller could change the build (e.g. -mod=vendor); the flags here are the whole build.
    GOFLAGS=-buildvcs=false GOTOOLCHAIN=local CGO_ENABLED=0 \
      go build -trimpath -ldflags "-s -w${ldflags[$name]:-}" -o "$bin/.$name.tmp" "${pkgs[$name]}"
    mv -f "$bin/.$name.tmp" "$bin/$name"
    echo "kube-binaries: built $name in $((SECONDS - start)) s" >&2
  done
fi

echo "$bin"
