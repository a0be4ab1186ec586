"""Per-request cost of recording request metrics: Tidal's lean registry vs prometheus_client.

Run: .venv/bin/python benchmarks/server/metrics_overhead.py
Both record the same thing per request: a counter by (model, version, api, code)
and a latency histogram by (model, version, api) with the same buckets.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tidal.server.metrics import LATENCY_BUCKETS, ServerMetrics

N = 200_000


def lean() -> float:
    m = ServerMetrics()
    observe = m.observe_request
    t0 = time.perf_counter()
    for i in range(N):
        observe("half_plus_two", "123", "predict", 200, 0.00003 * (i % 7))
    dt = time.perf_counter() - t0
    list(text_string_to_metric_families(m.render().decode()))  # what it renders parses
    return dt / N


def client() -> float:
    reg = CollectorRegistry()
    count = Counter("tidal_requests", "", ["model", "version", "api", "code"], registry=reg)
    lat = Histogram("tidal_request_latency_seconds", "", ["model", "version", "api"],
                    buckets=LATENCY_BUCKETS, registry=reg)
    t0 = time.perf_counter()
    for i in range(N):
        count.labels("half_plus_two", "123", "predict", "200").inc()
        lat.labels("half_plus_two", "123", "predict").observe(0.00003 * (i % 7))
    dt = time.perf_counter() - t0
    generate_latest(reg)
    return dt / N


def main() -> None:
    for name, fn in (("tidal lean registry", lean), ("prometheus_client", client)):
        best = min(fn() for _ in range(3))
        print(f"{name:22s} {best * 1e6:6.2f} us per request")


if __name__ == "__main__":
    main()
