"""Request metrics: counts by status class, latency histograms, in-flight and queue gauges, in Prometheus form,
and the autoscaling signals the control plane reads (`GatewaySignals`).

The hot path only bumps plain integers (no locks, no label lookups); a collector turns
them into Prometheus metric families when `/-/metrics` is scraped, and `signals` reads
the windowed counter when the control plane asks.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from tidal.gateway.window import WindowedCounter

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


@dataclass(frozen=True)
class GatewaySignals:
    """What the autoscaler reads of one service over one window: the request rate, requests in flight on
    average (all replicas together), requests waiting for a ready replica now, the 90th percentile of the time
    to answer (None: nothing answered in the window), and the ready replicas the gateway routes to."""

    window_seconds: float
    qps: float
    concurrency: float
    queued: int
    p90: float | None
    in_flight: int
    ready: int

    def to_dict(self) -> dict:
        return asdict(self)


def signals(window: WindowedCounter, now: float, window_seconds: float, *, in_flight: int, queued: int,
            ready: int) -> GatewaySignals:
    s = window.summary(now, window_seconds)
    return GatewaySignals(window_seconds, s.qps, s.concurrency, queued, s.p90, in_flight, ready)


# What the collector reads: (service, its metrics, [(replica id, replica metrics)], {window: qps}, queued).
# (The queue count may be left out: then nothing waits.)
Snapshot = Iterable[tuple[str, RequestMetrics, list[tuple[str, RequestMetrics]], dict[float, float], int]]


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
        que = GaugeMetricFamily("tidal_gateway_queued_requests",
                                "Requests waiting at the gateway for a ready replica (a service scaled to zero).",
                                labels=["service"])
        for service, m, replicas, windows, *rest in self._snapshot():
            queued = rest[0] if rest else 0  # a snapshot without the queue (an older caller): none waiting
            for cls, c in zip(STATUS_CLASSES, m.by_class):
                req.add_metric([service, cls], c)
            lat.add_metric([service], _histogram_buckets(m), m.latency_sum)
            inf.add_metric([service], m.in_flight)
            ret.add_metric([service], m.retries)
            que.add_metric([service], queued)
            for window, value in windows.items():
                qps.add_metric([service, f"{window:g}s"], value)
            for rid, rm in replicas:
                for cls, c in zip(STATUS_CLASSES, rm.by_class):
                    rreq.add_metric([service, rid, cls], c)
                rlat.add_metric([service, rid], _histogram_buckets(rm), rm.latency_sum)
                rinf.add_metric([service, rid], rm.in_flight)
        return [req, lat, inf, ret, qps, que, rreq, rlat, rinf]


def make_registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(snapshot))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
