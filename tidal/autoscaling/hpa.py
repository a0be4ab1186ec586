"""The Kubernetes HPA v2 decision, pure: (spec, metrics, state, current replicas, now) -> (Recommendation, new state).

It follows kubernetes pkg/controller/podautoscaler/horizontal.go (reconcileAutoscaler,
computeReplicasForMetrics, normalizeDesiredReplicas[WithBehaviors]) rule for rule,
including its bookkeeping quirks (a stale sample is overwritten in place rather
than dropped), so that a recommendation history carried in `HPAState` evolves as
the controller's in-memory maps would. The caller stores the new state after
applying the recommendation, and calls again every sync period (15 s by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

from tidal.autoscaling.metrics import Metrics
from tidal.autoscaling.replicas import MetricStatus, Tolerances, propose
from tidal.autoscaling.spec import HPASpec, HPAScalingRules

# The legacy (no `behavior`) scale-up cap: max(2 * current, 4), against bogus metric spikes.
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0


@dataclass(frozen=True)
class TimestampedRecommendation:
    replicas: int
    timestamp: float


@dataclass(frozen=True)
class ScaleEvent:
    replica_change: int  # absolute size of the change
    timestamp: float
    outdated: bool = False


@dataclass(frozen=True)
class HPAState:
    """What the controller remembers between syncs for one HPA."""

    recommendations: tuple[TimestampedRecommendation, ...] = ()
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()


@dataclass(frozen=True)
class Condition:
    type: str  # AbleToScale, ScalingActive, ScalingLimited
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Recommendation:
    """One sync's decision and why, with the metric values it used."""

    current_replicas: int
    desired_replicas: int
    rescale: bool
    # The Kubernetes condition reason that best explains `desired_replicas`: ScaleUpLimit,
    # ScaleDownLimit, TooManyReplicas, TooFewReplicas, ScaleUpStabilized, ScaleDownStabilized,
    # DesiredWithinRange, ScalingDisabled, or the FailedGet*Metric reason of an invalid metric.
    reason: str
    message: str
    # The event text Kubernetes writes on a rescale ("<metric> above target", "All metrics below target").
    rescale_reason: str
    metric_replicas: Optional[int]       # the largest metric proposal, before stabilization and limits
    stabilized_replicas: Optional[int]   # after the stabilization window, before the rate limits
    metrics: tuple[MetricStatus, ...]
    conditions: tuple[Condition, ...]
    timestamp: float

    def event(self) -> str:
        """`SuccessfulRescale`'s message, for the event log."""
        return f"New size: {self.desired_replicas}; reason: {self.rescale_reason}"

    def explain(self) -> str:
        """One line for people: the count, what each metric read and proposed, and the deciding rule."""
        parts = []
        for m in self.metrics:
            if m.proposal is None:
                parts.append(f"{m.metric}: {m.error}")
                continue
            read = []
            if m.value is not None:
                read.append(f"{m.value:g}")
            if m.average_utilization is not None:
                read.append(f"{m.average_utilization}%")
            if m.average_value is not None:
                read.append(f"{m.average_value:g} per replica")
            parts.append(f"{m.metric} = {', '.join(read)} against {m.target} -> {m.proposal}")
        head = (f"{self.current_replicas} -> {self.desired_replicas} replicas" if self.rescale
                else f"stay at {self.current_replicas} replicas")
        return f"{head} ({self.reason}: {self.message})" + (f"; {'; '.join(parts)}" if parts else "")


# ---------------------------------------------------------------------------------------------


def _tolerances(spec: HPASpec) -> Tolerances:
    base = spec.controller.tolerance
    if spec.behavior is None:
        return Tolerances(down=base, up=base)
    down, up = spec.behavior.scale_down.tolerance, spec.behavior.scale_up.tolerance
    return Tolerances(down=base if down is None else down, up=base if up is None else up)


def _store_recommendation(recs: tuple[TimestampedRecommendation, ...], old_index: Optional[int],
                          rec: TimestampedRecommendation) -> tuple[TimestampedRecommendation, ...]:
    # The controller reuses the slot of a sample too old to matter, so the list stays short.
    if old_index is None:
        return recs + (rec,)
    return recs[:old_index] + (rec,) + recs[old_index + 1:]


def _stabilize_legacy(spec: HPASpec, recs, desired: int, now: float):
    """Without `behavior`: the highest recommendation of the last 5 minutes (scale down slowly)."""
    cutoff = now - spec.controller.downscale_stabilization_seconds
    highest, old_index = desired, None
    for i, rec in enumerate(recs):
        if rec.timestamp < cutoff:
            old_index = i
        elif rec.replicas > highest:
            highest = rec.replicas
    return highest, _store_recommendation(recs, old_index, TimestampedRecommendation(desired, now))


def _limit_legacy(current: int, desired: int, min_replicas: int, max_replicas: int) -> tuple[int, str, str]:
    scale_up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > scale_up_limit:
        maximum, reason, message = (scale_up_limit, "ScaleUpLimit",
                                    "the desired replica count is increasing faster than the maximum scale rate")
    else:
        maximum, reason, message = (max_replicas, "TooManyReplicas",
                                    "the desired replica count is more than the maximum replica count")
    if desired < min_replicas:
        return min_replicas, "TooFewReplicas", "the desired replica count is less than the minimum replica count"
    if desired > maximum:
        return maximum, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def _stabilize_with_behavior(spec: HPASpec, recs, current: int, desired: int, now: float):
    """The recommendation clamped between the lowest of the up window and the highest of the down window."""
    up_cutoff = now - spec.behavior.scale_up.stabilization_window_seconds
    down_cutoff = now - spec.scale_down_window()
    up_bound = down_bound = desired
    old_index = None
    for i, rec in enumerate(recs):
        if rec.timestamp > up_cutoff:
            up_bound = min(rec.replicas, up_bound)
        if rec.timestamp > down_cutoff:
            down_bound = max(rec.replicas, down_bound)
        if rec.timestamp < up_cutoff and rec.timestamp < down_cutoff:
            old_index = i
    stabilized = max(current, up_bound)
    stabilized = min(stabilized, down_bound)
    if desired >= current:
        reason, message = ("ScaleUpStabilized",
                           "recent recommendations were lower than current one, applying the lowest recent recommendation")
    else:
        reason, message = ("ScaleDownStabilized",
                           "recent recommendations were higher than current one, applying the highest recent recommendation")
    return stabilized, reason, message, _store_recommendation(recs, old_index, TimestampedRecommendation(desired, now))


def _change_in_period(period_seconds: int, events: tuple[ScaleEvent, ...], now: float) -> int:
    cutoff = now - period_seconds
    return sum(e.replica_change for e in events if e.timestamp > cutoff)


def _period_start(current: int, period_seconds: int, state: HPAState, now: float) -> int:
    # Replicas at the start of the period: undo what was added, redo what was removed.
    return (current - _change_in_period(period_seconds, state.scale_up_events, now)
            + _change_in_period(period_seconds, state.scale_down_events, now))


def scale_up_limit(current: int, rules: HPAScalingRules, state: HPAState, now: float) -> int:
    """The most replicas the scale-up policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    pick = min if rules.select_policy == "Min" else max
    result = None
    for policy in rules.policies:
        start = _period_start(current, policy.period_seconds, state, now)
        if policy.type == "Pods":
            proposed = start + policy.value
        else:
            # Rounded up, or a small target could never grow by a percentage.
            proposed = math.ceil(start * (1 + policy.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return result


def scale_down_limit(current: int, rules: HPAScalingRules, state: HPAState, now: float) -> int:
    """The fewest replicas the scale-down policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    # For a scale-down the smallest change is the largest count.
    pick = max if rules.select_policy == "Min" else min
    result = None
    for policy in rules.policies:
        start = _period_start(current, policy.period_seconds, state, now)
        if policy.type == "Pods":
            proposed = start - policy.value
        else:
            proposed = int(start * (1 - policy.value / 100))  # Go's int32() truncates
        result = proposed if result is None else pick(result, proposed)
    return result


def _limit_with_behavior(spec: HPASpec, state: HPAState, current: int, desired: int, min_replicas: int,
                         now: float) -> tuple[int, str, str]:
    if desired > current:
        limit = max(scale_up_limit(current, spec.behavior.scale_up, state, now), current)
        if spec.max_replicas > limit:
            maximum, reason, message = (limit, "ScaleUpLimit",
                                        "the desired replica count is increasing faster than the maximum scale rate")
        else:
            maximum, reason, message = (spec.max_replicas, "TooManyReplicas",
                                        "the desired replica count is more than the maximum replica count")
        if desired > maximum:
            return maximum, reason, message
    elif desired < current:
        limit = min(scale_down_limit(current, spec.behavior.scale_down, state, now), current)
        if min_replicas < limit:
            minimum, reason, message = (limit, "ScaleDownLimit",
                                        "the desired replica count is decreasing faster than the maximum scale rate")
        else:
            minimum, reason, message = (min_replicas, "TooFewReplicas",
                                        "the desired replica count is less than the minimum replica count")
        if desired < minimum:
            return minimum, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def _store_scale_event(spec: HPASpec, state: HPAState, previous: int, new: int, now: float) -> HPAState:
    if spec.behavior is None:
        return state  # only the behavior policies read events
    up = new > previous
    rules = spec.behavior.scale_up if up else spec.behavior.scale_down
    events = state.scale_up_events if up else state.scale_down_events
    cutoff = now - max(p.period_seconds for p in rules.policies)
    events = tuple(replace(e, outdated=True) if e.timestamp < cutoff else e for e in events)
    old_index = None
    for i, e in enumerate(events):
        if e.outdated:
            old_index = i
    event = ScaleEvent(replica_change=abs(new - previous), timestamp=now)
    events = events + (event,) if old_index is None else events[:old_index] + (event,) + events[old_index + 1:]
    return replace(state, scale_up_events=events) if up else replace(state, scale_down_events=events)


# ---------------------------------------------------------------------------------------------


def decide(spec: HPASpec, metrics: Metrics, state: HPAState, current_replicas: int,
           now: float) -> tuple[Recommendation, HPAState]:
    """One HPA sync. `current_replicas` is the target's spec.replicas; `now` is seconds (any origin)."""
    current = current_replicas
    if not state.recommendations:
        state = replace(state, recommendations=(TimestampedRecommendation(current, now),))
    min_replicas = spec.min_replicas
    statuses: tuple[MetricStatus, ...] = ()
    conditions: list[Condition] = []
    metric_replicas = stabilized = None
    rescale_reason = ""

    def result(desired: int, rescale: bool, reason: str, message: str, new_state: HPAState):
        if rescale:
            new_state = _store_scale_event(spec, new_state, current, desired, now)
        rec = Recommendation(current_replicas=current, desired_replicas=desired if rescale else current,
                             rescale=rescale, reason=reason, message=message, rescale_reason=rescale_reason,
                             metric_replicas=metric_replicas, stabilized_replicas=stabilized, metrics=statuses,
                             conditions=tuple(conditions), timestamp=now)
        return rec, new_state

    if current == 0 and min_replicas != 0:
        message = "scaling is disabled since the replica count of the target is zero"
        conditions.append(Condition("ScalingActive", False, "ScalingDisabled", message))
        return result(0, False, "ScalingDisabled", message, state)
    if current > spec.max_replicas:
        rescale_reason = "Current number of replicas above Spec.MaxReplicas"
        return result(spec.max_replicas, True, "TooManyReplicas", rescale_reason, state)
    if current < min_replicas:
        rescale_reason = "Current number of replicas below Spec.MinReplicas"
        return result(min_replicas, True, "TooFewReplicas", rescale_reason, state)

    tol = _tolerances(spec)
    statuses = tuple(propose(m, metrics, current, tol, spec.controller, spec.namespace, now) for m in spec.metrics)
    proposal, proposal_metric = 0, ""
    for s in statuses:
        if s.proposal is not None and (proposal == 0 or s.proposal > proposal):
            proposal, proposal_metric = s.proposal, s.metric
    invalid = [s for s in statuses if s.proposal is None]
    # Never scale down on partial information: a metric we cannot read might want more.
    if len(invalid) >= len(statuses) or (invalid and proposal < current):
        first = invalid[0]
        message = (f"the HPA was unable to compute the replica count: invalid metrics "
                   f"({len(invalid)} invalid out of {len(statuses)}), first error is: {first.error}")
        conditions.append(Condition("ScalingActive", False, first.error_reason, message))
        return result(current, False, first.error_reason, message, state)
    conditions.append(Condition("ScalingActive", True, "ValidMetricFound",
                                f"the HPA was able to successfully calculate a replica count from {proposal_metric}"))

    metric_replicas = desired = max(proposal, 0)
    if desired > current:
        rescale_reason = f"{proposal_metric} above target"
    elif desired < current:
        rescale_reason = "All metrics below target"

    if spec.behavior is None:
        stabilized, recs = _stabilize_legacy(spec, state.recommendations, desired, now)
        able = (("ScaleDownStabilized",
                 "recent recommendations were higher than current one, applying the highest recent recommendation")
                if stabilized != desired else ("ReadyForNewScale", "recommended size matches current size"))
        final, limit_reason, limit_message = _limit_legacy(current, stabilized, min_replicas, spec.max_replicas)
    else:
        stabilized, stab_reason, stab_message, recs = _stabilize_with_behavior(
            spec, state.recommendations, current, desired, now)
        able = ((stab_reason, stab_message) if stabilized != desired
                else ("ReadyForNewScale", "recommended size matches current size"))
        final, limit_reason, limit_message = _limit_with_behavior(spec, state, current, stabilized, min_replicas, now)
    conditions.insert(0, Condition("AbleToScale", True, *able))
    conditions.append(Condition("ScalingLimited", final != stabilized, limit_reason, limit_message))

    if final != stabilized:
        reason, message = limit_reason, limit_message
    elif stabilized != desired:
        reason, message = able
    else:
        reason, message = limit_reason, limit_message
    return result(final, final != current, reason, message, replace(state, recommendations=recs))
