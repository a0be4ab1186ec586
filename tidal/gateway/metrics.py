"""Request metrics: counts by status class, latency histograms, in-flight gauges, in Prometheus form.

The hot path only bumps plain integers (no locks, no label lookups); a collector turns
them into Prometheus metric families when `/-/metrics` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

# Upper bounds (seconds) of the latency histograms' buckets; +Inf is implied.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class RequestMetrics:
    """Counters for one service or one replica."""

    __slots__ = ("by_class", "buckets", "latency_sum", "in_flight", "retries")

    def __init__(self) -> None:
        self.by_class = [0, 0, 0, 0, 0]
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.in_flight = 0
        self.retries = 0

    def observe(self, status: int, seconds: float) -> None:
        k = status // 100 - 1
        self.by_class[k if 0 <= k < 5 else 4] += 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    @property
    def requests(self) -> int:
        return sum(self.by_class)

    @property
    def errors(self) -> int:
        return self.by_class[4]


def _histogram_buckets(m: RequestMetrics) -> list[tuple[str, float]]:
    out, acc = [], 0
    for bound, c in zip(LATENCY_BUCKETS, m.buckets):
        acc += c
        out.append((repr(bound), acc))
    out.append(("+Inf", acc + m.buckets[-1]))
    return out


# What the collector reads: (service, its metrics, [(replica id, replica metrics)], {window: qps}).
Snapshot = Iterable[tuple[str, RequestMetrics, list[tuple[str, RequestMetrics]], dict[float, float]]]


class GatewayCollector:
    """A prometheus_client collector over the gateway's live counters."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self):
        req = CounterMetricFamily("tidal_gateway_requests", "Requests the gateway answered, by service and status class.",
                                  labels=["service", "code"])
        lat = HistogramMetricFamily("tidal_gateway_request_duration_seconds",
                                    "Time from a request's arrival to its answer, retries included.", labels=["service"])
        inf = GaugeMetricFamily("tidal_gateway_in_flight_requests", "Requests being answered now.", labels=["service"])
        ret = CounterMetricFamily("tidal_gateway_retries", "Requests sent again to another replica after a connection failure.",
                                  labels=["service"])
        qps = GaugeMetricFamily("tidal_gateway_qps", "Requests per second over a sliding window (the autoscaler's input).",
                                labels=["service", "window"])
        rreq = CounterMetricFamily("tidal_gateway_replica_requests", "Attempts sent to a replica, by status class.",
                                   labels=["service", "replica", "code"])
        rlat = HistogramMetricFamily("tidal_gateway_replica_request_duration_seconds",
                                     "Time a replica took to answer one attempt.", labels=["service", "replica"])
        rinf = GaugeMetricFamily("tidal_gateway_replica_outstanding_requests",
                                 "Requests sent to a replica and not yet answered.", labels=["service", "replica"])
        for service, m, replicas, windows in self._snapshot():
            for cls, c in zip(STATUS_CLASSES, m.by_class):
                req.add_metric([service, cls], c)
            lat.add_metric([service], _histogram_buckets(m), m.latency_sum)
            inf.add_metric([service], m.in_flight)
            ret.add_metric([service], m.retries)
            for window, value in windows.items():
                qps.add_metric([service, f"{window:g}s"], value)
            for rid, rm in replicas:
                for cls, c in zip(STATUS_CLASSES, rm.by_class):
                    rreq.add_metric([service, rid, cls], c)
                rlat.add_metric([service, rid], _histogram_buckets(rm), rm.latency_sum)
                rinf.add_metric([service, rid], rm.in_flight)
        return [req, lat, inf, ret, qps, rreq, rlat, rinf]


def make_registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(snapshot))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
