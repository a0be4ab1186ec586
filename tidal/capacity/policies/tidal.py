"""The `tidal` policy: Tidal's default. Spot first, hedged where the pool's own past says a loss is likely.

Each decision it (1) learns, from what the pool has shown so far, the rate at
which a zone takes back our spot nodes, by how long ago that zone last took
nodes or refused a launch (losses come in cascades), by whether it is
refusing launches now (a zone at partial capacity is about to be emptied) and
by whether another zone is (capacity is scarce); rates are pooled over zones,
shrunk toward a prior, and scaled by each zone's own record;
(2) starts from the nodes it holds, brings spot up to the target N (spread,
fewest per zone first, calmest zone first), on-demand only for what spot
cannot be had for; (3) searches, one move at a time, for the cheapest mix of
spot and on-demand by cost + `outage_value` x risk, where the risk is the
probability, over the next decision, that a zone whose loss would leave fewer
than N takes its nodes back (an outage of one recovery window); moves add
spot in another zone, add on-demand, or remove a node. A node already held is
priced at `keep_fraction` of a new one so that the hedge does not flap. (4) It
never launches on-demand to cover spot that is only still cold (on-demand
launched now is ready no sooner), but keeps on-demand it holds until the spot
that replaces it is ready, and starts on-demand alongside a launch into a
zone that refused the last one (a guess). Zones that refuse back off
exponentially; a refusal reveals the zone's capacity (held = min(plan,
capacity)) until the backoff ends.

It sees only the Observation (past and present), never capacities or the future.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from tidal.capacity.policies.types import Observation, Plan

# Ages since a zone last took nodes or refused a launch at which the learned hazard changes bucket, as multiples of
# the recovery window (cold start + one decision): just after, a little later, ..., long calm.
AGE_EDGES = (1.0, 4.0, 16.0, 64.0)
AGES = len(AGE_EDGES) + 1


class TidalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overprovision: int = Field(default=0, ge=0, le=1000, description="spot nodes always held above the target")
    outage_value: float = Field(default=10.0, ge=0, description="an outage tick, in on-demand fleet-ticks")
    keep_fraction: float = Field(default=0.5, ge=0, le=1, description="price of keeping a held node vs a new one")
    cold_start_seconds: float = Field(default=120.0, ge=0)
    decision_seconds: float = Field(default=30.0, gt=0)
    prior_events_per_day: float = Field(default=4.0, gt=0, description="loss rate assumed before any is seen")
    prior_events: float = Field(default=1.0, gt=0, description="weight of each estimate's prior, in events")
    backoff_seconds: float = Field(default=60.0, gt=0)
    max_backoff_seconds: float = Field(default=1800.0, gt=0)
    max_moves: int = Field(default=64, ge=0)


@dataclass(frozen=True, slots=True)
class ZoneMemory:
    seen_at: float | None = None    # first look at the zone
    upset_at: float | None = None   # the zone's last preemption of our nodes or refused launch
    failures: int = 0               # consecutive refusals or losses, for the backoff
    retry_at: float = 0.0           # no new launch in the zone before this
    cap_hint: int | None = None     # the capacity a refusal revealed (held = min(plan, capacity)), until retry_at
    exposure: float = 0.0           # seconds with our nodes in the zone
    events: int = 0                 # preemptions of our nodes in the zone


@dataclass(frozen=True, slots=True)
class TidalState:
    zones: tuple[ZoneMemory, ...]
    exposure: tuple[float, ...]     # zone-seconds with nodes held, per (stressed, age) bucket, pooled over zones
    events: tuple[int, ...]         # preemptions seen, per bucket
    last_now: float | None = None
    partial: int = 0                # preemptions that left the zone some of our nodes
    whole: int = 0                  # preemptions that took all our nodes in the zone


def initial_state(params: TidalParams, zones: Sequence[str], seed: int) -> TidalState:
    return TidalState(zones=tuple(ZoneMemory() for _ in zones), exposure=(0.0,) * (3 * AGES), events=(0,) * (3 * AGES))


def _bucket(mem: ZoneMemory, at: float, window: float, tight: bool) -> int:
    since = mem.upset_at if mem.upset_at is not None else mem.seen_at
    age = at - (since if since is not None else at)
    offset = 2 * AGES if mem.cap_hint is not None else AGES if tight else 0
    for i, edge in enumerate(AGE_EDGES):
        if age < edge * window:
            return offset + i
    return offset + AGES - 1


def _learn(observation: Observation, params: TidalParams, state: TidalState, now: float,
           window: float) -> tuple[list[ZoneMemory], list[float], list[int], int, int]:
    dt = 0.0 if state.last_now is None else max(0.0, now - state.last_now)
    exposure, events, mems = list(state.exposure), list(state.events), []
    partial, whole = state.partial, state.whole
    for z, m in zip(observation.zones, state.zones):
        if m.seen_at is None:
            m = replace(m, seen_at=now)
        if dt > 0 and z.held + z.preempted > 0:  # exposed since the last decision, in the bucket it was in then
            b = _bucket(m, now - dt, window, any(x.cap_hint is not None for x in state.zones))
            exposure[b] += dt
            events[b] += 1 if z.preempted else 0
            m = replace(m, exposure=m.exposure + dt, events=m.events + (1 if z.preempted else 0))
            if z.preempted:
                partial, whole = (partial + 1, whole) if z.held else (partial, whole + 1)
        if z.lost:
            failures = m.failures + 1
            wait = min(params.max_backoff_seconds, params.backoff_seconds * 2 ** (failures - 1))
            m = replace(m, upset_at=now, failures=failures, retry_at=now + wait, cap_hint=z.held)
        elif z.held > 0 and m.failures:
            m = replace(m, failures=0)
        if m.cap_hint is not None and now >= m.retry_at:
            m = replace(m, cap_hint=None)
        mems.append(m)
    return mems, exposure, events, partial, whole


def decide(observation: Observation, params: TidalParams, state: TidalState, now: float) -> tuple[Plan, TidalState]:
    zones = observation.zones
    n, od_price = observation.target, observation.on_demand_price
    window = params.cold_start_seconds + params.decision_seconds
    mems, exposure, events, partial, whole = _learn(observation, params, state, now, window)
    # The share of losses that take one node rather than all of a zone's (a zone at partial capacity), shrunk
    # toward one half.
    one = (partial + params.prior_events) / (partial + whole + 2 * params.prior_events)

    # Loss rates: per bucket shrunk toward the pooled rate, itself shrunk toward the prior; a zone's own record
    # scales its bucket's rate. The hazard that matters is the one when a hedge launched now is ready.
    k = params.prior_events
    tight = any(m.cap_hint is not None for m in mems)  # some zone is refusing launches: capacity is scarce
    pooled = (sum(events) + k) / (sum(exposure) + k / (params.prior_events_per_day / 86400.0))
    rates = [(e + k) / (x + k / pooled) for e, x in zip(events, exposure)]
    p = [((m.events + k) / (m.exposure + k / pooled)) / pooled
         * rates[_bucket(m, now + params.cold_start_seconds, window, tight)] * params.decision_seconds for m in mems]

    held = [z.held for z in zones]
    usable = [i for i in range(len(zones)) if mems[i].retry_at <= now]

    def room(i: int, sp: list[int], extra: int = 1) -> bool:
        cap = mems[i].cap_hint
        # New nodes only where launches are allowed and under the capacity a refusal revealed; held ones always.
        return (i in usable and (cap is None or sp[i] + extra <= cap)) or sp[i] + extra <= held[i]

    # Capacity for the target: spot first, spread, calmest zone first; on-demand for what spot cannot give.
    spot = list(held)
    floor = n + params.overprovision
    while sum(spot) < floor:
        open_ = [i for i in usable if room(i, spot)]
        if not open_:
            break
        spot[min(open_, key=lambda i: (spot[i], p[i], zones[i].price, i))] += 1
    on_demand = max(0, n - sum(spot))
    first_spot = list(spot)

    event_value = params.outage_value * n * od_price * (window / params.decision_seconds + 1)

    def cost(sp: list[int], od: int) -> float:
        # A node already held is priced at keep_fraction: keeping it buys no new cold start.
        total = 0.0
        for count, have, price in [(od, observation.on_demand_held, od_price)] + \
                                  [(sp[i], held[i], zones[i].price) for i in range(len(sp))]:
            kept = min(count, have)
            total += price * (count - kept + params.keep_fraction * kept)
        return total

    def objective(sp: list[int], od: int) -> float:
        total = sum(sp) + od
        if total < n:
            return float("inf")
        # A loss takes one node (share `one`) or all the zone's; either is an outage if it leaves fewer than N.
        return cost(sp, od) + event_value * sum(
            p[i] * (one * (total - 1 < n) + (1 - one) * (total - sp[i] < n)) for i in range(len(sp)) if sp[i])

    best = objective(spot, on_demand)
    for _ in range(params.max_moves):
        candidates: list[tuple[list[int], int]] = []
        total = sum(spot) + on_demand
        for i in range(len(zones)):
            if spot[i]:
                short = n - (total - spot[i])
                if short > 0:  # the nodes elsewhere that make zone i's loss survivable
                    candidates.append((spot, on_demand + short))
                    for j in range(len(zones)):
                        if j != i and room(j, spot, short):
                            candidates.append((spot[:j] + [spot[j] + short] + spot[j + 1:], on_demand))
                if sum(spot) > floor or on_demand:
                    candidates.append((spot[:i] + [spot[i] - 1] + spot[i + 1:], on_demand))
            if room(i, spot):
                candidates.append((spot[:i] + [spot[i] + 1] + spot[i + 1:], on_demand))
        if on_demand:
            candidates.append((spot, on_demand - 1))
        if on_demand < n:
            candidates.append((spot, on_demand + 1))
        scored = [(objective(sp, od), sp, od) for sp, od in candidates if od <= n]
        value, sp, od = min(scored, key=lambda c: (c[0], sum(c[1]) + c[2]), default=(best, spot, on_demand))
        if value >= best - 1e-9:
            break
        best, spot, on_demand = value, list(sp), od

    # A launch into a zone that refused us last time it was tried is a guess: on-demand starts alongside it
    # (the rule below releases it as soon as the spot is ready), so a refusal costs no extra recovery window.
    doubtful = sum(max(0, spot[i] - held[i]) for i in range(len(zones)) if mems[i].failures)
    on_demand = max(on_demand, n - (sum(spot) - doubtful))
    # Keep on-demand that covers spot which is not ready yet (a replacement launched now would be no sooner).
    on_demand = max(on_demand, min(observation.on_demand_held, n - observation.spot_ready))
    if not any(m.exposure for m in mems) and observation.spot_held == 0:
        # No zone has yet held a node for us: the first spot launches may all be refused, so on-demand starts
        # alongside them (held only until the spot is ready, by the rule above).
        on_demand, spot = n, first_spot
    new_state = TidalState(zones=tuple(mems), exposure=tuple(exposure), events=tuple(events), last_now=now,
                           partial=partial, whole=whole)
    return Plan(on_demand=max(0, min(n, on_demand)), spot=tuple(spot)), new_state
