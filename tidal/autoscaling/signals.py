"""The signals an HPA may scale on besides QPS, by metric name, and `metrics_for`: one sync's `Metrics` from them.

Names of the gateway's signals, usable as Pods, Object or External metrics in an HPA file:
- `tidal_concurrency`: requests in flight (Little's law over the HPA's window). As a Pods
  metric it is the average per ready replica (Knative's concurrency target); as an Object or
  External metric, the service's total.
- `tidal_queue_length`: requests waiting at the gateway for a ready replica, now.
- `tidal_latency_p90_seconds`: the 90th percentile of the time to answer over the window
  (0 when nothing was answered: nothing was slow). A Value target is an SLO: the HPA's rule
  asks for ceil(ready x p90 / target) replicas, so a slow service grows in proportion.
Any other Pods metric is read from the replicas' own Prometheus endpoints (`/metrics`):
a gauge as it reads, a counter (or a histogram's `_sum`/`_count`) as its rate per second.
"""

from __future__ import annotations

from typing import Mapping

from tidal.autoscaling.metrics import Metrics, PodInfo
from tidal.autoscaling.spec import HPASpec, MetricSpec, QPS_METRIC_NAMES

CONCURRENCY = "tidal_concurrency"
QUEUE_LENGTH = "tidal_queue_length"
LATENCY_P90 = "tidal_latency_p90_seconds"
GATEWAY_SIGNALS = frozenset({CONCURRENCY, QUEUE_LENGTH, LATENCY_P90})


def metric_name(m: MetricSpec) -> str | None:
    source = m.source
    return source.metric.name if m.type in ("External", "Pods", "Object") else None


def uses_gateway_signals(spec: HPASpec) -> bool:
    return any(metric_name(m) in GATEWAY_SIGNALS for m in spec.metrics)


def replica_metrics(spec: HPASpec) -> dict[str, dict[str, str]]:
    """The Pods metrics read from the replicas' Prometheus endpoints: name -> the labels a sample must carry."""
    out: dict[str, dict[str, str]] = {}
    for m in spec.metrics:
        if m.type == "Pods" and m.pods.metric.name not in GATEWAY_SIGNALS | QPS_METRIC_NAMES:
            selector = m.pods.metric.selector
            out[m.pods.metric.name] = dict(selector.match_labels) if selector else {}
    return out


def gateway_values(concurrency: float, queued: int, p90: float | None) -> dict[str, float]:
    return {CONCURRENCY: concurrency, QUEUE_LENGTH: float(queued), LATENCY_P90: p90 or 0.0}


def metrics_for(spec: HPASpec, *, external: Mapping[str, float], gateway: Mapping[str, float] | None,
                scraped: Mapping[str, Mapping[str, float]], ready: tuple[str, ...], desired: int) -> Metrics:
    """One sync's observation. `external`: the QPS metrics already resolved (name -> value); `gateway`: the
    gateway's signals (None while it cannot be reached: those metrics are missing, and the HPA holds);
    `scraped`: replica metric -> replica id -> value; `ready`: the ready replicas' ids (the HPA's pods)."""
    ext, objects, pods = dict(external), {}, {}
    if gateway is not None:
        for m in spec.metrics:
            name = metric_name(m)
            if name not in GATEWAY_SIGNALS:
                continue
            total = gateway[name]
            if m.type == "Pods":
                # A latency is the same for every replica; a count is shared among them.
                each = total if name == LATENCY_P90 else total / max(1, len(ready))
                pods[name] = {rid: each for rid in ready}
            elif m.type == "Object":
                objects[name] = total
            else:
                ext[name] = total
    for name, by_replica in scraped.items():
        pods[name] = {rid: v for rid, v in by_replica.items() if rid in ready}
    return Metrics(external=ext, objects=objects, pods_metrics=pods,
                   pods=tuple(PodInfo(name=rid) for rid in ready), status_replicas=desired)
