"""Replica proposals per metric: the arithmetic of kubernetes' replica_calculator.go, in milli-units like its quantities."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Union

from tidal.autoscaling.metrics import Metrics, PodInfo, PodMetric
from tidal.autoscaling.quantity import milli_of, milli_value
from tidal.autoscaling.spec import ControllerSettings, MetricSpec


@dataclass(frozen=True)
class Tolerances:
    """The band around ratio 1.0 in which nothing changes (default 0.1 each way)."""

    down: float
    up: float

    def within(self, ratio: float) -> bool:
        # Written as the controller does (1-down <= r <= 1+up), not |1-r| <= t, so that
        # a ratio of exactly 1.1 stays inside the band despite binary floating point.
        return (1.0 - self.down) <= ratio <= (1.0 + self.up)


@dataclass(frozen=True)
class MetricStatus:
    """One metric's outcome at this sync: what it read, what it proposes, or why it could not."""

    metric: str              # e.g. "external metric sls_ingress_qps(sls.ingress.route=...)"
    type: str                # External, Pods, Resource, Object
    target: str              # e.g. "10 (average value)"
    proposal: Optional[int]  # replicas this metric asks for; None when invalid
    value: Optional[float] = None                 # External/Object: the total read (e.g. service QPS)
    average_value: Optional[float] = None         # AverageValue targets: per replica
    average_utilization: Optional[int] = None     # Utilization targets: percent of request
    error_reason: Optional[str] = None            # e.g. FailedGetExternalMetric
    error: Optional[str] = None


class MetricError(Exception):
    """This metric could not be computed (the HPA's "invalid metric")."""


_REASONS = {"External": "FailedGetExternalMetric", "Pods": "FailedGetPodsMetric",
            "Resource": "FailedGetResourceMetric", "Object": "FailedGetObjectMetric"}


def _trunc_div(a: int, b: int) -> int:
    """Go's integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _ceil_int(x: float) -> int:
    if math.isnan(x):
        return 0
    if math.isinf(x):
        return 2**31 - 1
    return min(math.ceil(x), 2**31 - 1)


def _group_pods(pods: tuple[PodInfo, ...], metrics: Mapping[str, PodMetric], resource: Optional[str],
                settings: ControllerSettings, now: float) -> tuple[int, set, set, set]:
    """Split pods into (ready count, unready, missing, ignored) as groupPods does."""
    ready, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        sample = metrics.get(pod.name)
        if sample is None:
            missing.add(pod.name)
            continue
        if resource == "cpu":
            # CPU samples from a pod that is starting are skewed by its start-up work.
            if pod.ready is None or pod.start_time is None:
                is_unready = True
            else:
                transition = pod.ready_transition_time if pod.ready_transition_time is not None else pod.start_time
                if pod.start_time + settings.cpu_initialization_period_seconds > now:
                    taken = sample.timestamp if sample.timestamp is not None else now
                    is_unready = (not pod.ready) or taken < transition + sample.window_seconds
                else:
                    is_unready = (not pod.ready) and pod.start_time + settings.initial_readiness_delay_seconds > transition
            if is_unready:
                unready.add(pod.name)
                continue
        ready += 1
    return ready, unready, missing, ignored


def _as_pod_metric(v: Union[PodMetric, float]) -> PodMetric:
    return v if isinstance(v, PodMetric) else PodMetric(value=float(v))


def _usage_ratio(values: Mapping[str, int], target: int) -> tuple[float, int]:
    usage = _trunc_div(sum(values.values()), len(values))
    return usage / target, usage


def _plain_replicas(samples: Mapping[str, PodMetric], current: int, target: int, tol: Tolerances,
                    pods: tuple[PodInfo, ...], resource: Optional[str], settings: ControllerSettings,
                    now: float) -> tuple[int, int]:
    """Pods metrics and Resource AverageValue targets: (replicas, average usage in milli)."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    ready, unready, missing, ignored = _group_pods(pods, samples, resource, settings, now)
    values = {name: milli_of(s.value) for name, s in samples.items() if name not in ignored and name not in unready}
    if not values:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    ratio, usage = _usage_ratio(values, target)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if tol.within(ratio):
            return current, usage
        return _ceil_int(ratio * ready), usage
    # Missing pods never make the change bigger: 100% of target on a scale-down, 0% on a scale-up.
    if missing:
        if ratio < 1.0:
            values.update({name: target for name in missing})
        elif ratio > 1.0:
            values.update({name: 0 for name in missing})
    if scale_up_with_unready:
        values.update({name: 0 for name in unready})
    new_ratio, _ = _usage_ratio(values, target)
    if tol.within(new_ratio) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current, usage
    new_replicas = _ceil_int(new_ratio * len(values))
    if (new_ratio < 1.0 and new_replicas > current) or (new_ratio > 1.0 and new_replicas < current):
        return current, usage
    return new_replicas, usage


def _utilization(values: Mapping[str, int], requests: Mapping[str, int], target: int) -> tuple[float, int, int]:
    metrics_total = requests_total = n = 0
    for name, v in values.items():
        if name not in requests:
            continue
        metrics_total += v
        requests_total += requests[name]
        n += 1
    if requests_total == 0:
        raise MetricError("no metrics returned matched known pods")
    # Integer percent first, as the controller does: 100m of 300m is 33%, not 33.3%.
    utilization = _trunc_div(metrics_total * 100, requests_total)
    return utilization / target, utilization, _trunc_div(metrics_total, n)


def _resource_utilization_replicas(samples: Mapping[str, PodMetric], resource: str, current: int, target: int,
                                   tol: Tolerances, pods: tuple[PodInfo, ...], settings: ControllerSettings,
                                   now: float) -> tuple[int, int, int]:
    """Resource Utilization targets: (replicas, utilization percent, average raw usage in milli)."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    ready, unready, missing, ignored = _group_pods(pods, samples, resource, settings, now)
    values = {name: milli_of(s.value) for name, s in samples.items() if name not in ignored and name not in unready}
    if not values:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    requests = {}
    for pod in pods:
        if resource not in pod.requests:
            raise MetricError(f"missing request for {resource} in Pod {pod.name}")
        requests[pod.name] = milli_of(pod.requests[resource])
    ratio, utilization, raw = _utilization(values, requests, target)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if tol.within(ratio):
            return current, utilization, raw
        return _ceil_int(ratio * ready), utilization, raw
    if missing:
        if ratio < 1.0:
            fallback = max(100, target)  # a target above 100% is what a missing pod is assumed to use
            values.update({name: _trunc_div(requests[name] * fallback, 100) for name in missing})
        elif ratio > 1.0:
            values.update({name: 0 for name in missing})
    if scale_up_with_unready:
        values.update({name: 0 for name in unready})
    new_ratio, _, _ = _utilization(values, requests, target)
    if tol.within(new_ratio) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current, utilization, raw
    new_replicas = _ceil_int(new_ratio * len(values))
    if (new_ratio < 1.0 and new_replicas > current) or (new_ratio > 1.0 and new_replicas < current):
        return current, utilization, raw
    return new_replicas, utilization, raw


def _ready_count(pods: tuple[PodInfo, ...]) -> int:
    if not pods:
        raise MetricError("unable to calculate ready pods: no pods returned by selector while calculating replica count")
    return sum(1 for p in pods if p.phase == "Running" and p.ready is True)


def _usage_ratio_replicas(current: int, ratio: float, tol: Tolerances, pods: tuple[PodInfo, ...]) -> int:
    """Value targets (External, Object): ceil(ratio * ready pods); from zero replicas, ceil(ratio)."""
    if current != 0:
        if tol.within(ratio):
            return current
        return _ceil_int(ratio * _ready_count(pods))
    return _ceil_int(ratio)


def _per_pod_replicas(usage: int, target: int, status_replicas: int, tol: Tolerances) -> tuple[int, int]:
    """AverageValue targets (External, Object): the ratio to target*replicas, desired ceil(usage/target)."""
    replicas = status_replicas
    ratio = usage / (target * status_replicas) if status_replicas else (math.inf if usage > 0 else math.nan)
    if not tol.within(ratio):
        replicas = _ceil_int(usage / target)
    average = math.ceil(usage / status_replicas) if status_replicas else usage
    return replicas, average


def _external_usage(metrics: Metrics, name: str, where: str) -> int:
    if name not in metrics.external:
        raise MetricError(f"unable to get external metric {where}: no metrics returned from external metrics API")
    raw = metrics.external[name]
    values = [raw] if isinstance(raw, (int, float)) else list(raw)
    if not values:
        raise MetricError(f"unable to get external metric {where}: no metrics returned from external metrics API")
    return sum(milli_of(v) for v in values)


def propose(metric: MetricSpec, metrics: Metrics, current: int, tol: Tolerances, settings: ControllerSettings,
            namespace: str, now: float) -> MetricStatus:
    """What one metric of the HPA proposes, given this sync's observation."""
    source = metric.source
    base = dict(metric=metric.describe(), type=metric.type, target=source.target.describe())
    status_replicas = metrics.status_replicas if metrics.status_replicas is not None else current
    try:
        if metric.type == "External":
            where = f"{namespace}/{source.metric.describe()}"
            usage = _external_usage(metrics, source.metric.name, where)
            if source.target.type == "AverageValue":
                replicas, average = _per_pod_replicas(usage, milli_value(source.target.average_value),
                                                      status_replicas, tol)
                return MetricStatus(**base, proposal=replicas, value=usage / 1000, average_value=average / 1000)
            ratio = usage / milli_value(source.target.value)
            return MetricStatus(**base, proposal=_usage_ratio_replicas(current, ratio, tol, metrics.pods),
                                value=usage / 1000)
        if metric.type == "Object":
            name = source.metric.name
            if name not in metrics.objects:
                raise MetricError(f"unable to get metric {name}: {source.described_object.kind} on "
                                  f"{namespace} {source.described_object.name}: no metrics returned")
            usage = milli_of(metrics.objects[name])
            if source.target.type == "AverageValue":
                replicas, average = _per_pod_replicas(usage, milli_value(source.target.average_value),
                                                      status_replicas, tol)
                return MetricStatus(**base, proposal=replicas, value=usage / 1000, average_value=average / 1000)
            ratio = usage / milli_value(source.target.value)
            return MetricStatus(**base, proposal=_usage_ratio_replicas(current, ratio, tol, metrics.pods),
                                value=usage / 1000)
        if metric.type == "Pods":
            name = source.metric.name
            if name not in metrics.pods_metrics:
                raise MetricError(f"unable to get metric {name}: no metrics returned from custom metrics API")
            samples = {pod: PodMetric(value=float(v)) for pod, v in metrics.pods_metrics[name].items()}
            replicas, usage = _plain_replicas(samples, current, milli_value(source.target.average_value), tol,
                                              metrics.pods, None, settings, now)
            return MetricStatus(**base, proposal=replicas, average_value=usage / 1000)
        # Resource
        if source.name not in metrics.resource:
            raise MetricError(f"unable to get metrics for resource {source.name}: no metrics returned from resource metrics API")
        samples = {pod: _as_pod_metric(v) for pod, v in metrics.resource[source.name].items()}
        if source.target.type == "AverageValue":
            replicas, usage = _plain_replicas(samples, current, milli_value(source.target.average_value), tol,
                                              metrics.pods, source.name, settings, now)
            return MetricStatus(**base, proposal=replicas, average_value=usage / 1000)
        replicas, utilization, raw = _resource_utilization_replicas(
            samples, source.name, current, source.target.average_utilization, tol, metrics.pods, settings, now)
        return MetricStatus(**base, proposal=replicas, average_utilization=utilization, average_value=raw / 1000)
    except MetricError as e:
        prefix = {"External": f"failed to get {getattr(getattr(source, 'metric', None), 'name', '')} external metric",
                  "Pods": "failed to get pods metric value",
                  "Object": "failed to get object metric value",
                  "Resource": f"failed to get {getattr(source, 'name', '')} utilization"}[metric.type]
        return MetricStatus(**base, proposal=None, error_reason=_REASONS[metric.type], error=f"{prefix}: {e}")
