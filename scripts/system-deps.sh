#!/usr/bin/env bash
# Installs Debian tools the tests and benchmarks use (wrk, nginx, chromium) when missing and we may.
need=()
for pair in wrk:wrk nginx:nginx chromium:chromium chromedriver:chromium-driver; do
  cmd="${pair%%:*}"; pkg="${pair##*:}"
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} (Debian packages)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
      || echo "warning: could not install ${need[*]}" >&2
  else
    echo "note: ${need[*]} not installed; tests that need them are skipped" >&2
  fi
fi
