"""The `tidal-hedge` policy: a spot spare sized by the pool's own record of losses, not fixed (Tidal's default until
version 3; now the opt-in for pools that would rather bet on calm than pay for SpotHedge's fixed spare).

Each decision it (1) learns, from what the pool has shown so far, the rate at
which a zone takes back our spot nodes, by how long ago that zone last took
nodes or refused a launch (losses come in cascades), by whether it is
refusing launches now (a zone at partial capacity is about to be emptied) and
by whether another zone is (capacity is scarce); rates are pooled over zones,
shrunk toward a prior, and scaled by each zone's own record; (2) lays out, for
each spare level s = 0..max_spare, the target N plus s spares: the nodes held
stay (cold ones go first when there are too many), new spot nodes go to the
zone holding the fewest, calmest first, only where launches are allowed and
below the capacity a refusal revealed; on-demand covers what spot cannot give
(SpotHedge's fallback, for the spares too); (3) keeps the layout with the
least cost + `outage_value` x risk, where the risk is the expected outage
ticks from a zone taking its nodes in the next decision (a loss takes one node
or all of the zone's, in the shares seen so far; an outage lasts one recovery
window) and a held node is priced at `keep_fraction` of a new one, so that the
spare does not flap. In calm it holds no spare, after a loss one or two, on the
zones least likely to go next; none beside nodes that all sit in one zone.
(4) On-demand starts alongside every spot
launch not yet confirmed (a refusal then costs no extra recovery window), and
on-demand held is released only once ready spot takes its place. Zones that
refuse or reclaim back off exponentially; a refusal reveals the zone's
capacity (held = min(plan, capacity)) until the backoff ends.

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


class HedgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overprovision: int = Field(default=0, ge=0, le=1000, description="spot nodes always held above the target")
    max_spare: int = Field(default=2, ge=0, le=1000, description="most nodes held above the target as a hedge")
    outage_value: float = Field(default=30.0, ge=0, description="an outage tick, in ticks of the all-on-demand fleet")
    keep_fraction: float = Field(default=0.5, ge=0, le=1, description="price of keeping a held node vs a new one")
    cold_start_seconds: float = Field(default=120.0, ge=0)
    decision_seconds: float = Field(default=30.0, gt=0)
    prior_events_per_day: float = Field(default=4.0, gt=0, description="loss rate assumed before any is seen")
    prior_events: float = Field(default=1.0, gt=0, description="weight of each estimate's prior, in events")
    backoff_seconds: float = Field(default=60.0, gt=0)
    max_backoff_seconds: float = Field(default=1800.0, gt=0)


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
class HedgeState:
    zones: tuple[ZoneMemory, ...]
    exposure: tuple[float, ...]     # zone-seconds with nodes held, per (stressed, age) bucket, pooled over zones
    events: tuple[int, ...]         # preemptions seen, per bucket
    last_now: float | None = None
    partial: int = 0                # preemptions that left the zone some of our nodes
    whole: int = 0                  # preemptions that took all our nodes in the zone


def initial_state(params: HedgeParams, zones: Sequence[str], seed: int) -> HedgeState:
    return HedgeState(zones=tuple(ZoneMemory() for _ in zones), exposure=(0.0,) * (3 * AGES), events=(0,) * (3 * AGES))


def _bucket(mem: ZoneMemory, at: float, window: float, tight: bool) -> int:
    since = mem.upset_at if mem.upset_at is not None else mem.seen_at
    age = at - (since if since is not None else at)
    offset = 2 * AGES if mem.cap_hint is not None else AGES if tight else 0
    for i, edge in enumerate(AGE_EDGES):
        if age < edge * window:
            return offset + i
    return offset + AGES - 1


def _learn(observation: Observation, params: HedgeParams, state: HedgeState, now: float,
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
            wait = min(params.max_backoff_seconds, params.backoff_seconds * 2.0 ** min(failures - 1, 40))
            m = replace(m, upset_at=now, failures=failures, retry_at=now + wait, cap_hint=z.held)
        elif z.held > 0 and m.failures:
            m = replace(m, failures=0)
        if m.cap_hint is not None and now >= m.retry_at:
            m = replace(m, cap_hint=None)
        mems.append(m)
    return mems, exposure, events, partial, whole


def decide(observation: Observation, params: HedgeParams, state: HedgeState, now: float) -> tuple[Plan, HedgeState]:
    zones = observation.zones
    n, od_price = observation.target, observation.on_demand_price
    window = params.cold_start_seconds + params.decision_seconds
    windows = window / params.decision_seconds  # an outage lasts one recovery window: cold start + one decision
    mems, exposure, events, partial, whole = _learn(observation, params, state, now, window)
    # The share of losses that take one node rather than all of a zone's (a zone at partial capacity), shrunk
    # toward one half.
    one = (partial + params.prior_events) / (partial + whole + 2 * params.prior_events)

    # Loss rates: per bucket shrunk toward the pooled rate, itself shrunk toward the prior; a zone's own record
    # scales its bucket's rate. The hazard that matters is the one when a node launched now is ready.
    k = params.prior_events
    tight = any(m.cap_hint is not None for m in mems)  # some zone is refusing launches: capacity is scarce
    pooled = (sum(events) + k) / (sum(exposure) + k / (params.prior_events_per_day / 86400.0))
    rates = [(e + k) / (x + k / pooled) for e, x in zip(events, exposure)]
    p = [min(1.0, ((m.events + k) / (m.exposure + k / pooled)) / pooled
             * rates[_bucket(m, now + params.cold_start_seconds, window, tight)] * params.decision_seconds)
         for m in mems]

    held = [z.held for z in zones]
    ready = [z.ready for z in zones]
    usable = {i for i in range(len(zones)) if mems[i].retry_at <= now}

    def room(i: int, sp: list[int]) -> bool:
        cap = mems[i].cap_hint
        # New nodes only where launches are allowed and under the capacity a refusal revealed; held ones always.
        return (i in usable and (cap is None or sp[i] < cap)) or sp[i] < held[i]

    def layout(total: int) -> list[int]:
        sp = list(held)
        while sum(sp) > total:  # too many: cold nodes first, then the fullest and shakiest zone
            sp[max((i for i in range(len(sp)) if sp[i]), key=lambda i: (sp[i] > ready[i], sp[i], p[i], i))] -= 1
        while sum(sp) < total:  # too few: the zone holding the fewest, calmest first
            open_ = [i for i in range(len(sp)) if room(i, sp)]
            if not open_:
                break
            sp[min(open_, key=lambda i: (sp[i], p[i], zones[i].price, i))] += 1
        return sp

    def cost(sp: list[int], od: int) -> float:
        # A node already held is priced at keep_fraction: keeping it buys no new cold start.
        total = 0.0
        for count, have, price in [(od, observation.on_demand_held, od_price)] + \
                                  [(sp[i], held[i], zones[i].price) for i in range(len(sp))]:
            kept = min(count, have)
            total += price * (count - kept + params.keep_fraction * kept)
        return total

    def risk(sp: list[int], od: int) -> float:
        """Expected outage ticks from a loss in the next decision."""
        total = sum(sp) + od
        if total < n:
            return windows
        # With every spot node in one zone, a loss there is valued as taking them all: the last zone with
        # capacity mostly empties at once (AWS2: 79 of 93 such losses took everything, 12 two nodes or more),
        # so a spare beside the others buys little. (The share learned from the pool's own record, as for
        # spread nodes, did not give this: it wins fewer rows of benchmarks/sim/synthetic_table.py.)
        single = one if sum(1 for x in sp if x) > 1 else 0.0
        return windows * sum(p[i] * (single * (total - 1 < n) + (1 - single) * (total - sp[i] < n))
                             for i in range(len(sp)) if sp[i])

    value = params.outage_value * n * od_price
    best: tuple[float, list[int], int] | None = None
    for spare in range(params.overprovision, max(params.overprovision, params.max_spare) + 1):
        spot = layout(n + spare)
        on_demand = min(n, max(0, n + spare - sum(spot)))
        score = cost(spot, on_demand) + value * risk(spot, on_demand)
        if best is None or score < best[0] - 1e-12:
            best = (score, spot, on_demand)
    assert best is not None
    _, spot, on_demand = best

    # A launch is a guess until the zone takes it: on-demand starts alongside (and is held until the spot is
    # ready), so a refusal costs no extra recovery window.
    kept = sum(min(a, b) for a, b in zip(spot, held))
    on_demand = max(on_demand, n - kept)
    # Held on-demand goes only once ready spot takes its place (releasing it for cold or unconfirmed spot would
    # open a gap of one cold start).
    on_demand = max(on_demand, min(observation.on_demand_held, sum(spot) + on_demand - observation.spot_ready))
    new_state = HedgeState(zones=tuple(mems), exposure=tuple(exposure), events=tuple(events), last_now=now,
                           partial=partial, whole=whole)
    return Plan(on_demand=max(0, min(n, on_demand)), spot=tuple(spot)), new_state
