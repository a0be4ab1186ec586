"""The `tidal` policy: Tidal's default, a spot hedge sized by the hazard the pool has shown so far.

Placeholder docstring, rewritten once the design settles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from tidal.capacity.policies.placement import keep_at_most
from tidal.capacity.policies.types import Observation, Plan

# Ages since a zone's last preemption at which the learned hazard changes bucket, as multiples of the
# recovery window (cold start + one decision): right after a loss, a little later, ..., long calm.
AGE_EDGES = (1.0, 4.0, 16.0, 64.0)


class TidalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overprovision: int = Field(default=1, ge=0, le=1000)
    cold_start_seconds: float = Field(default=120.0, ge=0)
    decision_seconds: float = Field(default=30.0, gt=0)
    hot_ratio: float = Field(default=1000.0, ge=1.0)
    prior_events_per_day: float = Field(default=4.0, gt=0)
    prior_weight_seconds: float = Field(default=6 * 3600.0, gt=0)
    backoff_seconds: float = Field(default=60.0, gt=0)
    max_backoff_seconds: float = Field(default=1800.0, gt=0)
    avoid_cold: bool = True
    hedge_with_spot: bool = True
    stressed_hot: bool = False
    per_zone: bool = True
    od_spare: int = 1
    drop_spot_when_covered: bool = False
    hot_probability: float | None = None


@dataclass(frozen=True, slots=True)
class ZoneMemory:
    loss_at: float | None = None    # the zone's last preemption of our nodes
    seen_at: float | None = None    # first look at the zone (its age counts from here before any loss)
    failures: int = 0               # consecutive refused launches, for the backoff
    retry_at: float = 0.0           # no new launch in the zone before this
    cap_hint: int | None = None     # the capacity a refusal revealed (held = min(plan, capacity))
    exposure: float = 0.0           # seconds with nodes held in this zone
    events: int = 0                 # preemptions seen in this zone


@dataclass(frozen=True, slots=True)
class TidalState:
    zones: tuple[ZoneMemory, ...]
    exposure: tuple[float, ...]     # zone-seconds with nodes held, per age bucket (pooled over zones)
    events: tuple[int, ...]         # preemptions seen, per age bucket
    last_now: float | None = None


def initial_state(params: TidalParams, zones: Sequence[str], seed: int) -> TidalState:
    buckets = len(AGE_EDGES) + 1
    return TidalState(zones=tuple(ZoneMemory() for _ in zones), exposure=(0.0,) * buckets, events=(0,) * buckets)


def _bucket(age: float, window: float) -> int:
    for i, edge in enumerate(AGE_EDGES):
        if age < edge * window:
            return i
    return len(AGE_EDGES)


def decide(observation: Observation, params: TidalParams, state: TidalState, now: float) -> tuple[Plan, TidalState]:
    zones = observation.zones
    n = observation.target
    window = params.cold_start_seconds + params.decision_seconds
    dt = 0.0 if state.last_now is None else max(0.0, now - state.last_now)

    exposure, events, mems = list(state.exposure), list(state.events), []
    for z, m in zip(zones, state.zones):
        if m.seen_at is None:
            m = replace(m, seen_at=now)
        age = now - dt - (m.loss_at if m.loss_at is not None else m.seen_at)
        if z.held + z.preempted > 0 and dt > 0:
            b = _bucket(age, window)
            exposure[b] += dt
            events[b] += 1 if z.preempted else 0
            m = replace(m, exposure=m.exposure + dt, events=m.events + (1 if z.preempted else 0))
        if z.preempted:
            m = replace(m, loss_at=now)
        if z.launch_failed or z.preempted:
            failures = m.failures + 1
            wait = min(params.max_backoff_seconds, params.backoff_seconds * 2 ** (failures - 1))
            m = replace(m, failures=failures, retry_at=now + wait, cap_hint=z.held)
        elif z.held > 0 and m.failures:
            m = replace(m, failures=0)
        if m.cap_hint is not None and now >= m.retry_at:
            m = replace(m, cap_hint=None)
        mems.append(m)

    # Hazard per age bucket, shrunk toward the pooled rate, which is itself shrunk toward a prior.
    prior_rate = params.prior_events_per_day / 86400.0
    w = params.prior_weight_seconds
    pooled = (sum(events) + prior_rate * w) / (sum(exposure) + w)
    rates = [(e + pooled * w) / (x + w) for e, x in zip(events, exposure)]
    calm = min(rates)

    def rate(i: int) -> float:
        m = mems[i]
        factor = ((m.events + pooled * w) / (m.exposure + w)) / pooled if params.per_zone else 1.0
        return factor * rates[_bucket(now - (m.loss_at if m.loss_at is not None else m.seen_at), window)]

    zone_rate = [rate(i) for i in range(len(zones))]
    if params.hot_probability is not None:
        hot = [1 - math.exp(-zone_rate[i] * window) >= params.hot_probability for i in range(len(zones))]
    else:
        hot = [zone_rate[i] >= params.hot_ratio * calm for i in range(len(zones))]
    if params.stressed_hot:
        hot = [h or mems[i].cap_hint is not None for i, h in enumerate(hot)]

    want = n + params.overprovision
    order = sorted(range(len(zones)), key=lambda i: (zones[i].price * (1 + 0 * zone_rate[i]), zone_rate[i], i))
    spot = list(keep_at_most([z.held for z in zones], want, order))
    usable = [i for i in order if mems[i].retry_at <= now]
    # New nodes go to calm zones first, spread (fewest first), the calmest zone taking the extra one.
    usable.sort(key=lambda i: (hot[i], order.index(i)))
    for _ in range(want - sum(spot)):
        room = [i for i in usable if mems[i].cap_hint is None or spot[i] < mems[i].cap_hint]
        if not room:
            break
        best = min(room, key=lambda i: (hot[i], spot[i], order.index(i)))
        spot[best] += 1

    # Hedge the zones whose hazard is elevated: what the worst of them holds must be replaceable by the rest,
    # first with spot elsewhere (a third of the price of on-demand), then with on-demand.
    def exposed(counts: list[int]) -> int:
        return sum(counts) - max((counts[i] for i in range(len(zones)) if hot[i]), default=0)

    while params.hedge_with_spot and exposed(spot) < n:
        gains = []
        for i in usable:
            if mems[i].cap_hint is not None and spot[i] >= mems[i].cap_hint:
                continue
            trial = spot.copy()
            trial[i] += 1
            if exposed(trial) > exposed(spot):
                gains.append(i)
        if not gains:
            break
        best = min(gains, key=lambda i: (hot[i], spot[i], order.index(i)))
        spot[best] += 1
    planned = sum(spot)
    worst_hot_plan = planned - exposed(spot)
    worst_hot_ready = max((zones[i].ready for i in range(len(zones)) if hot[i]), default=0)
    future = max(want - planned, n - (planned - worst_hot_plan))
    now_need = n + params.od_spare - (observation.spot_ready - worst_hot_ready)
    if params.avoid_cold:
        # On-demand launched now is ready no sooner than spot launched now: launch it only for what spot cannot
        # be planned to give, but keep what is already held while it covers spot that is not ready yet.
        on_demand = max(future, min(observation.on_demand_held, now_need))
    else:
        on_demand = max(future, now_need)
    on_demand = max(0, min(n, on_demand))
    if on_demand >= n and params.drop_spot_when_covered:
        spot = [0] * len(zones)
    new_state = TidalState(zones=tuple(mems), exposure=tuple(exposure), events=tuple(events), last_now=now)
    return Plan(on_demand=on_demand, spot=tuple(spot)), new_state
