"""Invariants of the HPA decision over random load sequences: bounds, rate limits, no scale-down on partial data."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from tidal.autoscaling.hpa import HPAState, decide
from tidal.autoscaling.metrics import Metrics
from tidal.autoscaling.hpafile import parse_hpa
from tidal.clock import FakeClock

loads = st.lists(st.floats(min_value=0, max_value=500, allow_nan=False), min_size=1, max_size=40)


def spec(min_replicas: int, max_replicas: int, behavior: dict | None = None, extra_metric: bool = False):
    metrics = [{"type": "External", "external": {"metric": {"name": "qps"},
                                                 "target": {"type": "AverageValue", "averageValue": 10}}}]
    if extra_metric:
        metrics.append({"type": "External", "external": {"metric": {"name": "other"},
                                                         "target": {"type": "Value", "value": 5}}})
    body = {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "minReplicas": min_replicas,
            "maxReplicas": max_replicas, "metrics": metrics}
    if behavior is not None:
        body["behavior"] = behavior
    return parse_hpa({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "spec": body})


@settings(max_examples=150, deadline=None)
@given(loads, st.integers(1, 5), st.integers(0, 20))
def test_legacy_stays_in_bounds_and_under_the_scale_up_cap(qps, min_replicas, span):
    s = spec(min_replicas, min_replicas + span)
    clock, state, current = FakeClock(), HPAState(), min_replicas
    for q in qps:
        rec, state = decide(s, Metrics(external={"qps": q}), state, current, clock.now())
        assert s.min_replicas <= rec.desired_replicas <= s.max_replicas
        assert rec.desired_replicas <= max(2 * current, 4)
        current = rec.desired_replicas
        clock.advance(15)


@settings(max_examples=150, deadline=None)
@given(loads, st.integers(1, 5), st.sampled_from([15, 30, 60, 120]))
def test_pods_policy_bounds_additions_within_any_period(qps, value, period):
    # Scale-down disabled, so periodStart = current - added: at most `value` added per `period`.
    s = spec(1, 100, {"scaleUp": {"policies": [{"type": "Pods", "value": value, "periodSeconds": period}]},
                      "scaleDown": {"selectPolicy": "Disabled"}})
    clock, state, current, ups = FakeClock(), HPAState(), 1, []
    for q in qps:
        now = clock.now()
        rec, state = decide(s, Metrics(external={"qps": q}), state, current, now)
        assert rec.desired_replicas >= current  # scale-down is disabled
        if rec.desired_replicas > current:
            ups.append((now, rec.desired_replicas - current))
        added = sum(n for t, n in ups if t > now - period)
        assert added <= value
        current = rec.desired_replicas
        clock.advance(15)


@settings(max_examples=150, deadline=None)
@given(loads, st.integers(1, 10))
def test_no_scale_down_while_a_metric_is_unreadable(qps, start):
    s = spec(1, 50, {"scaleDown": {"stabilizationWindowSeconds": 0}}, extra_metric=True)
    clock, state, current = FakeClock(), HPAState(), start
    for q in qps:
        rec, state = decide(s, Metrics(external={"qps": q}), state, current, clock.now())  # "other" missing
        assert rec.desired_replicas >= current
        current = rec.desired_replicas
        clock.advance(15)


@settings(max_examples=100, deadline=None)
@given(loads)
def test_same_inputs_same_decision(qps):
    s = spec(1, 10, {})
    clock, state, current = FakeClock(), HPAState(), 1
    for q in qps:
        first = decide(s, Metrics(external={"qps": q}), state, current, clock.now())
        assert decide(s, Metrics(external={"qps": q}), state, current, clock.now()) == first
        rec, state = first
        current = rec.desired_replicas
        clock.advance(15)
