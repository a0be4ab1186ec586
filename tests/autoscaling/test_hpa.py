"""The HPA decision, rule by rule: one named case per rule, the expected arithmetic written in each case."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest

from tidal.autoscaling.hpa import HPAState, ScaleEvent, TimestampedRecommendation, decide
from tidal.autoscaling.metrics import Metrics, PodInfo, PodMetric, ready_pods
from tidal.autoscaling.spec import HPASpec
from tidal.autoscaling.hpafile import parse_hpa
from tidal.clock import FakeClock

NOW = FakeClock().now()


def hpa(*metrics: dict, min_replicas: int = 1, max_replicas: int = 10, behavior: Optional[dict] = None) -> HPASpec:
    spec = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "svc"},
            "minReplicas": min_replicas, "maxReplicas": max_replicas, "metrics": list(metrics)}
    if behavior is not None:
        spec["behavior"] = behavior
    return parse_hpa({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                      "metadata": {"name": "svc"}, "spec": spec})


def qps(average: float = 10, name: str = "sls_ingress_qps") -> dict:
    """The reference procedure's metric: External, AverageValue per replica."""
    return {"type": "External", "external": {"metric": {"name": name},
                                             "target": {"type": "AverageValue", "averageValue": average}}}


def ext_value(value: float, name: str = "queue") -> dict:
    return {"type": "External", "external": {"metric": {"name": name}, "target": {"type": "Value", "value": value}}}


def pods_metric(average: str | float, name: str = "rps") -> dict:
    return {"type": "Pods", "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": average}}}


def cpu(utilization: int) -> dict:
    return {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                       "averageUtilization": utilization}}}


def recs(*pairs: tuple[int, float]) -> HPAState:
    """A history of (recommendation, seconds ago)."""
    return HPAState(recommendations=tuple(TimestampedRecommendation(r, NOW - ago) for r, ago in pairs))


def events(up: tuple = (), down: tuple = (), history: HPAState | None = None) -> HPAState:
    """Scale events as (replica change, seconds ago)."""
    base = history or recs((0, 10_000))
    return HPAState(recommendations=base.recommendations,
                    scale_up_events=tuple(ScaleEvent(c, NOW - ago) for c, ago in up),
                    scale_down_events=tuple(ScaleEvent(c, NOW - ago) for c, ago in down))


def pods_values(values: dict[str, float], extra_pods: tuple[PodInfo, ...] = (), name: str = "rps") -> Metrics:
    pods = tuple(PodInfo(name=p) for p in values) + extra_pods
    return Metrics(pods_metrics={name: values}, pods=pods)


# A behavior that lets any scale-down through at once, to see the raw proposal.
DOWN_NOW = {"scaleDown": {"stabilizationWindowSeconds": 0}}
# And one that lets a large scale-up through, for the same reason.
FAST = {"scaleDown": {"stabilizationWindowSeconds": 0},
        "scaleUp": {"policies": [{"type": "Percent", "value": 1000, "periodSeconds": 15}]}}
OLD = recs((0, 10_000))  # a history with nothing inside any window


@dataclass(frozen=True)
class Case:
    name: str
    spec: HPASpec
    metrics: Metrics
    current: int
    expected: int
    reason: str
    state: HPAState = field(default_factory=HPAState)


CASES = [
    # -- External metric, AverageValue target (the reference procedure's sls_ingress_qps, target 10 per replica)
    Case("external-average-value-scale-up", hpa(qps()), Metrics(external={"sls_ingress_qps": 45}), 3, 5,
         "DesiredWithinRange"),
    # usage 45 / (10 * 3) = 1.5 > 1.1 -> ceil(45 / 10) = 5; legacy cap max(2 * 3, 4) = 6
    Case("external-average-value-within-tolerance", hpa(qps()), Metrics(external={"sls_ingress_qps": 32}), 3, 3,
         "DesiredWithinRange"),
    # 32 / 30 = 1.067, within [0.9, 1.1] -> keep 3
    Case("external-tolerance-edge-1.1-stays", hpa(qps()), Metrics(external={"sls_ingress_qps": 33}), 3, 3,
         "DesiredWithinRange"),
    # 33 / 30 = 1.1 exactly: inside the band (1 - 0.1 <= r <= 1 + 0.1) -> keep 3
    Case("external-just-outside-tolerance", hpa(qps()), Metrics(external={"sls_ingress_qps": 33.1}), 3, 4,
         "DesiredWithinRange"),
    # 33.1 / 30 = 1.103 -> ceil(33.1 / 10) = ceil(3.31) = 4
    Case("external-sums-all-series", hpa(qps()), Metrics(external={"sls_ingress_qps": [20, 25]}), 3, 5,
         "DesiredWithinRange"),
    # usage = 20 + 25 = 45 -> as above, 5
    Case("external-average-value-uses-status-replicas", hpa(qps()),
         Metrics(external={"sls_ingress_qps": 45}, status_replicas=5), 3, 5, "DesiredWithinRange"),
    # ratio 45 / (10 * statusReplicas 5) = 0.9, within -> the proposal is statusReplicas = 5 (> spec 3)
    Case("seed-step-2-to-40-qps", hpa(qps()), Metrics(external={"sls_ingress_qps": 40}), 1, 4,
         "DesiredWithinRange"),
    # 40 / (10 * 1) = 4 -> ceil(40 / 10) = 4; legacy cap max(2 * 1, 4) = 4
    Case("external-value-times-ready-pods", hpa(ext_value(20)),
         Metrics(external={"queue": 45}, pods=ready_pods(3) + (PodInfo("p", phase="Pending"),)), 4, 7,
         "DesiredWithinRange"),
    # ratio 45 / 20 = 2.25; 3 ready of 4 -> ceil(2.25 * 3) = ceil(6.75) = 7; cap max(8, 4) = 8
    Case("external-value-within-tolerance", hpa(ext_value(20)),
         Metrics(external={"queue": 21}, pods=ready_pods(4)), 4, 4, "DesiredWithinRange"),
    # 21 / 20 = 1.05 -> keep 4
    Case("external-value-from-zero-replicas", hpa(ext_value(10), min_replicas=0),
         Metrics(external={"queue": 25}), 0, 3, "DesiredWithinRange"),
    # minReplicas 0 and 0 replicas: ceil(25 / 10) = 3, no ready pods needed; cap max(0, 4) = 4

    # -- HPA documentation's worked examples: desired = ceil(current * currentValue / desiredValue)
    Case("docs-200m-over-100m-doubles", hpa(pods_metric("100m")), pods_values({"a": 0.2, "b": 0.2}), 2, 4,
         "DesiredWithinRange"),
    # 200m / 100m = 2.0 -> ceil(2 * 2) = 4; cap max(4, 4) = 4
    Case("docs-50m-over-100m-halves", hpa(pods_metric("100m"), behavior=DOWN_NOW),
         pods_values({"a": 0.05, "b": 0.05, "c": 0.05, "d": 0.05}), 4, 2, "DesiredWithinRange"),
    # 50m / 100m = 0.5 -> ceil(0.5 * 4) = 2
    Case("docs-cpu-utilization", hpa(cpu(50)),
         Metrics(resource={"cpu": {"a": 0.4, "b": 0.4}},
                 pods=(PodInfo("a", requests={"cpu": 0.5}, start_time=NOW - 3600),
                       PodInfo("b", requests={"cpu": 0.5}, start_time=NOW - 3600))), 2, 4, "DesiredWithinRange"),
    # utilization (400m + 400m) * 100 / (500m + 500m) = 80% -> 80 / 50 = 1.6 -> ceil(1.6 * 2) = 4
    Case("cpu-utilization-is-an-integer-percent", hpa(cpu(10), max_replicas=20, behavior=FAST),
         Metrics(resource={"cpu": {"a": 0.334, "b": 0.334, "c": 0.333}},
                 pods=tuple(PodInfo(p, requests={"cpu": 1}, start_time=NOW - 3600) for p in "abc")), 3, 10,
         "DesiredWithinRange"),
    # 1001m * 100 / 3000m = 33.37 -> 33 (integer) -> 33 / 10 = 3.3 -> ceil(3.3 * 3) = ceil(9.9) = 10 (not 11)

    # -- Missing and unready pods (Pods metric, target 10)
    Case("missing-pods-at-0pct-flip-the-scale-up", hpa(pods_metric(10), behavior=FAST),
         pods_values({"a": 12}, (PodInfo("b"), PodInfo("c"))), 3, 3, "DesiredWithinRange"),
    # ratio 12 / 10 = 1.2 (up); missing b, c at 0: (12 + 0 + 0) / 3 = 4 -> 0.4, direction flips -> keep 3
    Case("missing-pods-at-0pct-on-scale-up", hpa(pods_metric(10), behavior=FAST),
         pods_values({"a": 40}, (PodInfo("b"),)), 2, 4, "DesiredWithinRange"),
    # ratio 40 / 10 = 4; missing b at 0: (40 + 0) / 2 = 20 -> 2.0 -> ceil(2 * 2) = 4
    Case("missing-pods-at-100pct-on-scale-down", hpa(pods_metric(10), behavior=DOWN_NOW),
         pods_values({"a": 2, "b": 2}, (PodInfo("c"),)), 3, 2, "DesiredWithinRange"),
    # ratio 2 / 10 = 0.2; missing c at target 10: 14000m / 3 = 4666m -> 0.4666 -> ceil(0.4666 * 3) = ceil(1.4) = 2
    Case("missing-pods-bring-scale-down-within-tolerance", hpa(pods_metric(10), behavior=DOWN_NOW),
         pods_values({"a": 8}, (PodInfo("b"),)), 2, 2, "DesiredWithinRange"),
    # ratio 0.8; missing b at 10: (8 + 10) / 2 = 9 -> 0.9, within -> keep 2 (ignoring b would give 1)
    Case("unready-pods-at-0pct-flip-the-scale-up", hpa(pods_metric(10), behavior=FAST),
         pods_values({"a": 15}, (PodInfo("b", phase="Pending"),)), 2, 2, "DesiredWithinRange"),
    # ratio 15 / 10 = 1.5 (up); pending b at 0: (15 + 0) / 2 = 7.5 -> 0.75, flips -> keep 2
    Case("unready-pods-ignored-on-scale-down", hpa(pods_metric(10), behavior=DOWN_NOW),
         pods_values({"a": 2}, (PodInfo("b", phase="Pending"),)), 2, 1, "DesiredWithinRange"),
    # ratio 0.2, not a scale-up, nothing missing -> ceil(0.2 * 1 ready) = 1
    Case("failed-pods-are-discarded", hpa(pods_metric(10), behavior=FAST),
         pods_values({"a": 12, "b": 12}, (PodInfo("c", phase="Failed"),)), 2, 3, "DesiredWithinRange"),
    # c is neither ready nor missing: ratio 1.2 -> ceil(1.2 * 2) = ceil(2.4) = 3 (as missing it would flip to 2)
    Case("cpu-of-a-pod-just-ready-is-ignored-on-scale-up", hpa(cpu(50), behavior=FAST),
         Metrics(resource={"cpu": {"a": PodMetric(1.0, NOW, 30), "b": PodMetric(1.0, NOW, 30)}},
                 pods=(PodInfo("a", requests={"cpu": 1}, start_time=NOW - 600, ready_transition_time=NOW - 590),
                       PodInfo("b", requests={"cpu": 1}, start_time=NOW - 60, ready_transition_time=NOW - 10))),
         2, 2, "DesiredWithinRange"),
    # b started 60 s ago (< 300 s) and its sample is not a full 30 s window past readiness -> unready.
    # a alone: 1000m / 1000m = 100% -> 100 / 50 = 2.0 (up); b at 0: 1000m * 100 / 2000m = 50% -> 1.0 -> keep 2

    # -- Several metrics
    Case("largest-proposal-wins", hpa(qps(), pods_metric(10)),
         Metrics(external={"sls_ingress_qps": 45}, pods_metrics={"rps": {"a": 12, "b": 12, "c": 13}},
                 pods=ready_pods(0) + tuple(PodInfo(p) for p in "abc")), 3, 5, "DesiredWithinRange"),
    # external: ceil(45 / 10) = 5; pods: (12+12+13)/3 = 12.333 -> 1.2333 -> ceil(3.7) = 4 -> max(5, 4) = 5
    Case("invalid-metric-blocks-scale-down", hpa(qps(), pods_metric(10)),
         pods_values({"a": 2, "b": 2, "c": 2}), 3, 3, "FailedGetExternalMetric"),
    # external unreadable; pods: 0.2 -> ceil(0.2 * 3) = 1 < 3: a scale-down on partial information -> no change
    Case("invalid-metric-does-not-block-scale-up", hpa(qps(), pods_metric(10)),
         pods_values({"a": 20, "b": 20, "c": 20}), 3, 6, "DesiredWithinRange"),
    # external unreadable; pods: 2.0 -> ceil(2 * 3) = 6 > 3 -> scale up on what is known; cap max(6, 4) = 6
    Case("all-metrics-invalid", hpa(qps()), Metrics(), 3, 3, "FailedGetExternalMetric"),

    # -- Guards before any metric is read
    Case("zero-replicas-disables-scaling", hpa(qps()), Metrics(external={"sls_ingress_qps": 100}), 0, 0,
         "ScalingDisabled"),
    Case("above-max-goes-to-max", hpa(qps()), Metrics(external={"sls_ingress_qps": 1000}), 12, 10,
         "TooManyReplicas"),
    Case("below-min-goes-to-min", hpa(qps(), min_replicas=2), Metrics(external={"sls_ingress_qps": 0}), 1, 2,
         "TooFewReplicas"),

    # -- Legacy rules (no behavior): scale-up cap max(2 * current, 4), 5 minute down-stabilization
    Case("legacy-scale-up-cap", hpa(qps()), Metrics(external={"sls_ingress_qps": 100}), 2, 4, "ScaleUpLimit"),
    # ceil(100 / 10) = 10; cap max(2 * 2, 4) = 4 < maxReplicas 10 -> 4
    Case("legacy-cap-beyond-max-is-too-many", hpa(qps()), Metrics(external={"sls_ingress_qps": 200}), 6, 10,
         "TooManyReplicas"),
    # ceil(200 / 10) = 20; cap max(12, 4) = 12 >= maxReplicas 10 -> 10
    Case("legacy-down-stabilization-holds-highest", hpa(qps()), Metrics(external={"sls_ingress_qps": 20}), 6, 6,
         "ScaleDownStabilized", recs((6, 200), (3, 400))),
    # ceil(20 / 10) = 2; highest of the last 300 s: max(2, 6) = 6 (the 3 from 400 s ago has expired)
    Case("legacy-down-after-the-window", hpa(qps()), Metrics(external={"sls_ingress_qps": 20}), 6, 2,
         "DesiredWithinRange", recs((6, 301))),
    # the 6 is 301 s old -> outside 300 s -> 2
    Case("legacy-first-sync-remembers-current", hpa(qps()), Metrics(external={"sls_ingress_qps": 20}), 6, 6,
         "ScaleDownStabilized"),
    # empty history: the controller first records the current 6 -> max(2, 6) = 6
    Case("legacy-too-few", hpa(qps(), min_replicas=3), Metrics(external={"sls_ingress_qps": 10}), 5, 3,
         "TooFewReplicas", OLD),
    # ceil(10 / 10) = 1 < minReplicas 3 -> 3

    # -- Behavior: rate limits (defaults: up Pods 4 and Percent 100 per 15 s, Max; down Percent 100 per 15 s)
    Case("default-scale-up-4-pods", hpa(qps(), behavior={}), Metrics(external={"sls_ingress_qps": 100}), 1, 5,
         "ScaleUpLimit", OLD),
    # 10 wanted; limits: Pods 1 + 4 = 5, Percent ceil(1 * 2) = 2 -> Max = 5
    Case("default-scale-up-100-percent", hpa(qps(), max_replicas=50, behavior={}),
         Metrics(external={"sls_ingress_qps": 300}), 10, 20, "ScaleUpLimit", OLD),
    # 30 wanted; limits: Pods 10 + 4 = 14, Percent ceil(10 * 2) = 20 -> Max = 20
    Case("docs-percent-10-per-60s-first-step", hpa(qps(), max_replicas=100, behavior={"scaleDown": {
        "stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}}),
         Metrics(external={"sls_ingress_qps": 100}), 80, 72, "ScaleDownLimit", OLD),
    # 10 wanted; floor(80 * (1 - 0.10)) = 72
    Case("docs-percent-10-per-60s-next-period", hpa(qps(), max_replicas=100, behavior={"scaleDown": {
        "stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}}),
         Metrics(external={"sls_ingress_qps": 100}), 72, 64, "ScaleDownLimit", events(down=[(8, 61)])),
    # the -8 was 61 s ago, outside the 60 s period: start 72 -> int(72 * 0.9) = int(64.8) = 64 (8 removed)
    Case("docs-percent-10-per-60s-same-period", hpa(qps(), max_replicas=100, behavior={"scaleDown": {
        "stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}}),
         Metrics(external={"sls_ingress_qps": 100}), 72, 72, "ScaleDownLimit", events(down=[(8, 15)])),
    # periodStart = 72 - 0 + 8 = 80 -> int(80 * 0.9) = 72 = current -> no further scale-down this period
    Case("docs-pods-4-and-percent-10-select-max", hpa(qps(), max_replicas=100, behavior={"scaleDown": {
        "stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60},
                                                      {"type": "Percent", "value": 10, "periodSeconds": 60}]}}),
         Metrics(external={"sls_ingress_qps": 100}), 80, 72, "ScaleDownLimit", OLD),
    # Pods: 80 - 4 = 76; Percent: int(80 * 0.9) = 72; Max (biggest change) -> min(76, 72) = 72
    Case("docs-pods-4-and-percent-10-select-min", hpa(qps(), max_replicas=100, behavior={"scaleDown": {
        "stabilizationWindowSeconds": 0, "selectPolicy": "Min",
        "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60},
                     {"type": "Percent", "value": 10, "periodSeconds": 60}]}}),
         Metrics(external={"sls_ingress_qps": 100}), 80, 76, "ScaleDownLimit", OLD),
    # Min (smallest change) -> max(76, 72) = 76
    Case("docs-at-most-5-pods-per-minute-select-min", hpa(qps(), max_replicas=100, behavior={"scaleDown": {
        "stabilizationWindowSeconds": 0, "selectPolicy": "Min",
        "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60},
                     {"type": "Pods", "value": 5, "periodSeconds": 60}]}}),
         Metrics(external={"sls_ingress_qps": 100}), 80, 75, "ScaleDownLimit", OLD),
    # Percent: int(80 * 0.9) = 72; Pods: 80 - 5 = 75; Min -> max(72, 75) = 75: never more than 5 a minute
    Case("docs-percent-900-grows-10x-per-period", hpa(qps(), max_replicas=1000, behavior={"scaleUp": {
        "policies": [{"type": "Percent", "value": 900, "periodSeconds": 15}]}}),
         Metrics(external={"sls_ingress_qps": 10_000}), 10, 100, "ScaleUpLimit", OLD),
    # ceil(10000 / 10) = 1000 wanted; ceil(10 * (1 + 900 / 100)) = 100
    Case("select-policy-disabled-blocks-scale-down", hpa(qps(), max_replicas=100, behavior={"scaleDown": {
        "stabilizationWindowSeconds": 0, "selectPolicy": "Disabled"}}),
         Metrics(external={"sls_ingress_qps": 100}), 80, 80, "ScaleDownLimit", OLD),
    Case("select-policy-disabled-blocks-scale-up", hpa(qps(), behavior={"scaleUp": {"selectPolicy": "Disabled"}}),
         Metrics(external={"sls_ingress_qps": 100}), 2, 2, "ScaleUpLimit", OLD),
    Case("period-start-undoes-recent-scale-up", hpa(qps(), behavior={}), Metrics(external={"sls_ingress_qps": 100}),
         5, 5, "ScaleUpLimit", events(up=[(4, 10)])),
    # +4 ten seconds ago: periodStart = 5 - 4 = 1 -> Pods 1 + 4 = 5, Percent ceil(1 * 2) = 2 -> 5 = current
    Case("period-start-adds-back-deletions", hpa(qps(), max_replicas=20, behavior={"scaleUp": {
        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}]}}),
         Metrics(external={"sls_ingress_qps": 200}), 6, 9, "ScaleUpLimit", events(up=[(2, 5)], down=[(3, 10)])),
    # periodStart = current 6 - added 2 + deleted 3 = 7 -> 7 + 2 = 9
    Case("behavior-too-many-replicas", hpa(qps(), behavior={"scaleUp": {
        "policies": [{"type": "Pods", "value": 100, "periodSeconds": 15}]}}),
         Metrics(external={"sls_ingress_qps": 500}), 5, 10, "TooManyReplicas", OLD),
    # 50 wanted; Pods limit 5 + 100 = 105 >= maxReplicas 10 -> 10
    Case("behavior-too-few-replicas", hpa(qps(), min_replicas=3, behavior=DOWN_NOW),
         Metrics(external={"sls_ingress_qps": 5}), 6, 3, "TooFewReplicas", OLD),
    # 1 wanted; Percent 100 allows int(6 * 0) = 0, below minReplicas 3 -> 3

    # -- Behavior: stabilization windows
    Case("scale-up-stabilization-window", hpa(qps(), behavior={"scaleUp": {"stabilizationWindowSeconds": 60}}),
         Metrics(external={"sls_ingress_qps": 60}), 2, 3, "ScaleUpStabilized", recs((3, 30))),
    # 6 wanted; lowest of the last 60 s: min(6, 3) = 3 -> max(current 2, 3) = 3
    Case("scale-down-stabilization-window", hpa(qps(), behavior={}), Metrics(external={"sls_ingress_qps": 40}),
         8, 8, "ScaleDownStabilized", recs((8, 100))),
    # 4 wanted; highest of the last 300 s: max(4, 8) = 8
    Case("scale-down-after-stabilization-window", hpa(qps(), behavior={}),
         Metrics(external={"sls_ingress_qps": 40}), 8, 4, "DesiredWithinRange", recs((8, 301))),
    # the 8 expired; Percent 100 per 15 s allows down to int(8 * 0) = 0, min 1 -> 4 is within range
    Case("per-direction-tolerance", hpa(qps(), behavior={"scaleUp": {"tolerance": 0.5}}),
         Metrics(external={"sls_ingress_qps": 42}), 3, 3, "DesiredWithinRange", OLD),
    # 42 / 30 = 1.4 <= 1 + 0.5 -> keep 3
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision(case: Case):
    rec, _ = decide(case.spec, case.metrics, case.state, case.current, NOW)
    assert (rec.desired_replicas, rec.reason) == (case.expected, case.reason), rec.message
    assert rec.rescale == (case.expected != case.current)
    assert rec.current_replicas == case.current and rec.timestamp == NOW


def test_names_are_unique():
    assert len({c.name for c in CASES}) == len(CASES)


# -- what a recommendation carries -------------------------------------------------------------

def test_recommendation_carries_metric_values_conditions_and_event_text():
    rec, _ = decide(hpa(qps()), Metrics(external={"sls_ingress_qps": 45}), HPAState(), 3, NOW)
    (m,) = rec.metrics
    assert m.metric == "external metric sls_ingress_qps" and m.proposal == 5
    assert m.value == 45.0 and m.average_value == 15.0  # ceil(45000m / 3) = 15000m per replica
    assert rec.metric_replicas == 5 and rec.stabilized_replicas == 5
    assert rec.rescale_reason == "external metric sls_ingress_qps above target"
    assert rec.event() == "New size: 5; reason: external metric sls_ingress_qps above target"
    assert rec.explain() == ("3 -> 5 replicas (DesiredWithinRange: the desired count is within the acceptable "
                             "range); external metric sls_ingress_qps = 45, 15 per replica against "
                             "10 (average value) -> 5")
    assert {c.type: (c.status, c.reason) for c in rec.conditions} == {
        "AbleToScale": (True, "ReadyForNewScale"),
        "ScalingActive": (True, "ValidMetricFound"),
        "ScalingLimited": (False, "DesiredWithinRange"),
    }


def test_invalid_metric_message_names_the_first_error():
    rec, _ = decide(hpa(qps(), pods_metric(10)), pods_values({"a": 2, "b": 2, "c": 2}), HPAState(), 3, NOW)
    assert "invalid metrics (1 invalid out of 2)" in rec.message
    assert "failed to get sls_ingress_qps external metric" in rec.message
    assert rec.metrics[0].error_reason == "FailedGetExternalMetric" and rec.metrics[1].proposal == 1


def test_value_target_reports_the_total():
    rec, _ = decide(hpa(ext_value(20)), Metrics(external={"queue": 45}, pods=ready_pods(4)), HPAState(), 4, NOW)
    assert rec.metrics[0].value == 45.0 and rec.metrics[0].average_value is None


# -- state across syncs ------------------------------------------------------------------------

def test_docs_percent_10_per_60s_over_time():
    """80 -> 10 wanted with Percent 10 per 60 s: -8 now, nothing more in the same minute, -8 a minute later."""
    spec = hpa(qps(), max_replicas=100, behavior={"scaleDown": {
        "stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}})
    clock = FakeClock()
    metrics = Metrics(external={"sls_ingress_qps": 100})
    state, current, seen = HPAState(), 80, []
    for _ in range(6):  # syncs at 0, 15, 30, 45, 60, 75 s
        rec, state = decide(spec, metrics, state, current, clock.now())
        current = rec.desired_replicas
        seen.append(current)
        clock.advance(15)
    # t=0: int(80 * 0.9) = 72; t=15..45: start 72 + 8 = 80 -> 72; t=60: the event is exactly 60 s old,
    # not after the cutoff -> start 72 -> int(64.8) = 64; t=75: start 64 + 8 = 72 -> int(64.8) = 64
    assert seen == [72, 72, 72, 72, 64, 64]
    assert [e.replica_change for e in state.scale_down_events] == [8, 8]


def test_legacy_scale_down_waits_five_minutes_after_the_last_high_recommendation():
    spec = hpa(qps())
    clock = FakeClock()
    state, current = HPAState(), 4
    rec, state = decide(spec, Metrics(external={"sls_ingress_qps": 40}), state, current, clock.now())
    assert rec.desired_replicas == 4
    seen = []
    for _ in range(21):  # 15 s syncs for 315 s at 10 QPS: ceil(10 / 10) = 1 wanted
        clock.advance(15)
        rec, state = decide(spec, Metrics(external={"sls_ingress_qps": 10}), state, current, clock.now())
        current = rec.desired_replicas
        seen.append((rec.desired_replicas, rec.reason))
    # the 4 recorded at t=0 holds while it is within 300 s (t=15..300); at t=315 it has expired
    assert seen[:-1] == [(4, "ScaleDownStabilized")] * 20
    assert seen[-1] == (1, "DesiredWithinRange")


def test_history_reuses_the_slot_of_an_expired_sample():
    spec = hpa(qps(), behavior={})
    clock = FakeClock()
    state = HPAState()
    for _ in range(100):  # 25 minutes of syncs; the down window is 300 s = 20 syncs
        _, state = decide(spec, Metrics(external={"sls_ingress_qps": 20}), state, 2, clock.now())
        clock.advance(15)
    assert len(state.recommendations) <= 22


def test_decide_is_pure():
    spec, metrics, state = hpa(qps(), behavior={}), Metrics(external={"sls_ingress_qps": 100}), events(up=[(1, 5)])
    first = decide(spec, metrics, state, 3, NOW)
    again = decide(spec, metrics, state, 3, NOW)
    assert first == again
    assert state == events(up=[(1, 5)])
    rec, new_state = first
    # +4: Pods 4 per 15 s from periodStart 3 - 1 = 2 -> 6; Percent ceil(2 * 2) = 4 -> Max = 6 -> +3 recorded
    assert rec.desired_replicas == 6
    assert new_state.scale_up_events[-1] == ScaleEvent(3, NOW)
