"""The `spothedge-lean` policy: SpotHedge's spot placement and spare, with less on-demand and no useless spare.

It places spot exactly as SpotHedge does (N+k spread over the active zones, the
same active/preempted bookkeeping and random draws), so every loss SpotHedge's
spare absorbs, its spare absorbs too. It saves where SpotHedge pays for nothing:
- on-demand: SpotHedge holds min(N, N+k - ready spot), which buys on-demand for
  a spare that is merely cold. Here on-demand starts alongside each new spot
  launch (it may be refused) and stays while ready spot is short of N, not of
  N+k;
- a spare beside a lone zone: with one zone active, all N+k nodes sit in it,
  and a loss that takes all of them takes the spare too. Once the pool has seen
  `lone_evidence` losses that emptied a zone and none that left a zone some
  nodes (a preemption or a refusal that cut a zone down but not out), the lone
  zone holds N.
It never holds more than SpotHedge; it is the safe choice where availability
must not drop below SpotHedge's (benchmarks/sim/synthetic_table.py), and
`tidal` the cheaper one where calm periods can be bet on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from tidal.capacity.policies.keyed_random import seed_key
from tidal.capacity.policies.spothedge import active_zones, spread
from tidal.capacity.policies.types import Observation, Plan


class SpotHedgeLeanParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overprovision: int = Field(default=1, ge=0, le=1000)
    lone_evidence: int = Field(default=3, ge=0, le=1000,
                               description="zone-emptying losses seen (and no partial ones) before a lone zone "
                                           "goes without its spare")


@dataclass(frozen=True, slots=True)
class SpotHedgeLeanState:
    active: tuple[bool, ...]
    key: int
    emptied: int = 0   # preemptions that took all our nodes in a zone
    partial: int = 0   # preemptions or refusals that left a zone some of our nodes


def initial_state(params: SpotHedgeLeanParams, zones: Sequence[str], seed: int) -> SpotHedgeLeanState:
    return SpotHedgeLeanState(active=(True,) * len(zones), key=seed_key(seed))


def decide(observation: Observation, params: SpotHedgeLeanParams, state: SpotHedgeLeanState,
           now: float) -> tuple[Plan, SpotHedgeLeanState]:
    zones, n = observation.zones, observation.target
    emptied = state.emptied + sum(1 for z in zones if z.preempted and not z.held)
    partial = state.partial + sum(1 for z in zones if z.lost and z.held)
    active = active_zones(zones, state.active)
    lone = len(zones) > 1 and sum(active) == 1
    spare = 0 if lone and emptied >= params.lone_evidence and not partial else params.overprovision
    want = n + spare
    spot, key = spread([z.held for z in zones], want, active, state.key)
    return (Plan(on_demand=on_demand_for(observation, want, keep_ready=False), spot=tuple(spot)),
            SpotHedgeLeanState(active=active, key=key, emptied=emptied, partial=partial))


def on_demand_for(observation: Observation, want: int, keep_ready: bool) -> int:
    """On-demand beside `want` spot nodes placed as SpotHedge places them, covering the target, not a cold spare:
    one node alongside each new spot launch (the zone may refuse it), and those held stay while ready spot is
    short of N. With `keep_ready`, on-demand that is ready also stays, up to `want`, until ready spot takes its
    place: there it is the spare, and releasing it for a cold spot node leaves none for one cold start."""
    n = observation.target
    kept = min(observation.spot_held, want)  # held nodes the plan keeps; the rest of `want` is new launches
    on_demand = max(min(n, want - kept), min(observation.on_demand_held, n - observation.spot_ready))
    if keep_ready:
        on_demand = max(on_demand, min(observation.on_demand_ready, want - observation.spot_ready))
    return max(0, min(n, on_demand))
