"""Burst ("panic") mode, pure: Knative KPA's stable/panic windows over the gateway's windowed QPS.

Every tick (2 s) the caller passes the QPS averaged over the stable window (60 s)
and over the panic window (10% of it, 6 s). When the panic window asks for at
least 200% of the ready replicas, the mode panics: it goes to the panic
recommendation at once and never lowers it until a full stable window has passed
without a new trigger. Each decision moves at most 1000x up and 2x down.

`decide` is the whole KPA decider; `overlay` lays it over an HPA recommendation so
that a service with burst mode keeps HPA semantics except that a burst adds
replicas within one tick and holds them while it lasts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from tidal.autoscaling.hpa import Recommendation
from tidal.autoscaling.quantity import milli_value
from tidal.autoscaling.spec import BurstSettings, HPASpec, QPS_METRIC_NAMES


@dataclass(frozen=True)
class BurstState:
    # Knative's panicTime: set when panic starts and moved forward at every tick still over
    # the threshold, so panic ends one stable window after the last trigger.
    panic_since: Optional[float] = None
    max_panic_replicas: int = 0


@dataclass(frozen=True)
class BurstDecision:
    desired_replicas: int
    panicking: bool
    # PanicStarted, PanicExtended, Panicking, PanicEnded, Stable
    reason: str
    message: str
    stable_qps: float
    panic_qps: float
    stable_replicas: int   # ceil(stable_qps / target), within the rate limits
    panic_replicas: int    # ceil(panic_qps / target), within the rate limits
    ready_replicas: int
    timestamp: float


def initial_state(ready_replicas: int, now: float) -> BurstState:
    """A decider that starts over (after a restart it has no history) holds what is running:
    with more than one ready replica it starts in panic mode at that count, as Knative does."""
    if ready_replicas > 1:
        return BurstState(panic_since=now, max_panic_replicas=ready_replicas)
    return BurstState()


def qps_target(spec: HPASpec) -> Optional[float]:
    """The per-replica QPS target of the HPA's QPS metric (`sls_ingress_qps` AverageValue 10 -> 10.0)."""
    for m in spec.metrics:
        if m.type == "External" and m.external.metric.name in QPS_METRIC_NAMES \
                and m.external.target.type == "AverageValue":
            return milli_value(m.external.target.average_value) / 1000
    return None


def decide(settings: BurstSettings, target_per_replica: float, stable_qps: float, panic_qps: float,
           ready_replicas: int, state: BurstState, now: float, *, min_replicas: int = 0,
           max_replicas: int = 2**31 - 1) -> tuple[BurstDecision, BurstState]:
    """One tick of the burst decider. QPS values are the window averages; `ready_replicas` are serving now."""
    if target_per_replica <= 0:
        raise ValueError(f"target_per_replica must be positive, got {target_per_replica}")
    # Zero ready replicas counts as one, so the ratios below stay finite.
    ready = max(1, ready_replicas)
    # Rounded so that a slow rate still lets the count move by at least one replica.
    max_up = math.ceil(settings.max_scale_up_rate * ready)
    max_down = math.floor(ready / settings.max_scale_down_rate)
    want_stable = math.ceil(stable_qps / target_per_replica)
    want_panic = math.ceil(panic_qps / target_per_replica)
    stable = int(min(max(want_stable, max_down), max_up))
    panic = int(min(max(want_panic, max_down), max_up))
    over = want_panic / ready >= settings.panic_threshold_percentage / 100.0

    panic_since, max_panic = state.panic_since, state.max_panic_replicas
    if panic_since is None and over:
        reason, panic_since = "PanicStarted", now
    elif over:
        reason, panic_since = "PanicExtended", now
    elif panic_since is not None and panic_since + settings.stable_window_seconds < now:
        reason, panic_since, max_panic = "PanicEnded", None, 0
    elif panic_since is not None:
        reason = "Panicking"
    else:
        reason = "Stable"

    if panic_since is not None:
        # The stable window can lag behind or run ahead of the panic one; provision for the larger.
        desired = max(stable, panic)
        if desired > max_panic:
            max_panic = desired
        desired = max_panic  # no scale-down while panicking
        message = (f"panic window {panic_qps:.2f} QPS wants {want_panic} replica(s) for {ready} ready "
                   f"(threshold {settings.panic_threshold_percentage:.0f}%); holding {desired}")
    else:
        desired = stable
        message = f"stable window {stable_qps:.2f} QPS at {target_per_replica:g} per replica wants {stable}"
    desired = min(max(desired, min_replicas), max_replicas)
    decision = BurstDecision(desired_replicas=desired, panicking=panic_since is not None, reason=reason,
                             message=message, stable_qps=stable_qps, panic_qps=panic_qps, stable_replicas=stable,
                             panic_replicas=panic, ready_replicas=ready_replicas, timestamp=now)
    return decision, BurstState(panic_since=panic_since, max_panic_replicas=max_panic)


def overlay(hpa: Recommendation, burst: BurstDecision, current_replicas: int) -> tuple[int, str]:
    """The replica count for a service in burst mode: the HPA's, raised to the burst's while panicking.

    The HPA decides every sync period and the burst decider every tick; an HPA recommendation made
    for another replica count (before a burst changed it) is stale, so it holds the current count
    until the next HPA sync has seen the new one and applied its own stabilization.
    """
    if burst.panicking and burst.desired_replicas > hpa.desired_replicas:
        return max(burst.desired_replicas, current_replicas), "BurstPanic"
    if burst.panicking:
        return max(hpa.desired_replicas, current_replicas), hpa.reason
    if hpa.current_replicas != current_replicas:
        return current_replicas, "AwaitingSync"
    return hpa.desired_replicas, hpa.reason
