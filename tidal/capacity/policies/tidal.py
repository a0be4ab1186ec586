"""The `tidal` policy, Tidal's default: SpotHedge's insurance, without paying for on-demand that cannot pay out.

SpotHedge's cost is nearly all insurance: N+k spot nodes spread over the zones
that have kept theirs, and on-demand whenever fewer than N+k spot nodes are
ready. The spot spare is what absorbs a lost node, and a policy that holds less
of it, even after a long calm, is less available than SpotHedge on any trace
whose next loss comes then (docs/capacity-policy.md). So `tidal` places spot
exactly as SpotHedge does (the same active zones, the same random draws, N+k)
and saves only on-demand that cannot help:
- a cold spare gets no on-demand of its own. On-demand starts alongside each
  new spot launch (the zone may refuse it) and goes once the launch is held,
  unless ready spot is short of N; SpotHedge instead pays for on-demand through
  every spare's cold start;
- on-demand that is ready stands in for the spare until ready spot takes its
  place (N+k ready), so the pool is never left without a ready spare for one
  cold start (what `spothedge-lean`, which releases it at N, loses);
- after the target rises, SpotHedge's on-demand until ready spot reaches the
  new N+k: the old spare is now target and the new one is cold;
- and SpotHedge's on-demand for a cold spare wherever a second loss within one
  recovery window is likely: the pool's own loss rate per spot node (shrunk
  toward 4 a day by one loss) x the ready spot nodes x the window >=
  `insure_above` (0.1). Big pools that churn need it; the protocol's N = 3
  rarely does.
Opt-in (`lone_evidence` > 0): no spare beside a lone active zone once the pool
has seen that many losses take every node of a zone holding two or more, and
none leave a zone some of its nodes; cheaper where zones empty at once, within
noise of SpotHedge's availability but not always at or above it
(benchmarks/sim/synthetic_table.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from tidal.capacity.policies.keyed_random import seed_key
from tidal.capacity.policies.spothedge import active_zones, spread
from tidal.capacity.policies.spothedge_lean import on_demand_for
from tidal.capacity.policies.types import Observation, Plan


class TidalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overprovision: int = Field(default=1, ge=0, le=1000, description="spot nodes held above the target")
    lone_evidence: int = Field(default=0, ge=0, le=1000,
                               description="0: off; else losses that emptied a zone of 2+ nodes (and none that "
                                           "left a zone some) before a lone zone goes without its spare")
    insure_above: float = Field(default=0.1, ge=0,
                                description="expected further losses within one recovery window above which a "
                                            "cold spare is covered by on-demand, as SpotHedge covers it")
    prior_losses_per_day: float = Field(default=4.0, gt=0, description="per spot node, before any loss is seen "
                                                                        "(weighed as one loss)")
    cold_start_seconds: float = Field(default=120.0, ge=0)
    decision_seconds: float = Field(default=30.0, gt=0)


@dataclass(frozen=True, slots=True)
class TidalState:
    active: tuple[bool, ...]  # SpotHedge's active zones
    key: int                  # SpotHedge's random stream
    emptied: int = 0          # preemptions that took every node (two or more) of a zone
    partial: int = 0          # preemptions or refusals that left a zone some of our nodes
    target: int = 0           # the target at the last decision
    growing: bool = False     # the target rose and ready spot has not yet reached target + spare since
    last_now: float | None = None
    exposure: float = 0.0     # spot node-seconds held
    losses: int = 0           # spot nodes reclaimed


def initial_state(params: TidalParams, zones: Sequence[str], seed: int) -> TidalState:
    return TidalState(active=(True,) * len(zones), key=seed_key(seed))


def decide(observation: Observation, params: TidalParams, state: TidalState, now: float) -> tuple[Plan, TidalState]:
    zones, n = observation.zones, observation.target
    # Only a zone that held two or more and lost them all says "losses take the whole zone": with one node
    # there, a single-node loss looks the same.
    emptied = state.emptied + sum(1 for z in zones if z.preempted >= 2 and not z.held)
    partial = state.partial + sum(1 for z in zones if z.lost and z.held)
    active = active_zones(zones, state.active)
    lone = len(zones) > 1 and sum(active) == 1
    spare = params.overprovision
    if params.lone_evidence and lone and emptied >= params.lone_evidence and not partial:
        spare = 0  # a loss there takes the spare with the rest
    want = n + spare
    spot, key = spread([z.held for z in zones], want, active, state.key)
    on_demand = on_demand_for(observation, want, keep_ready=True)
    # A scale-out makes the ready spare part of the target and starts the new spare cold: until spot has caught
    # up, SpotHedge's on-demand is the only cover for a loss (without it the fuller model's scale run had 15
    # fewer ready service-ticks than SpotHedge). The first target (from 0) is no scale-out: nothing is ready.
    growing = (0 < state.target < n or (state.growing and n >= state.target)) and observation.spot_ready < want
    # The pool's own loss rate per spot node, shrunk toward the prior by one loss. With many nodes and frequent
    # losses a second loss before the cold spare is ready is likely, and SpotHedge's on-demand for that spare is
    # what covers it (without this, 20-replica pools under heavy churn were 0.65 point less available).
    dt = 0.0 if state.last_now is None else max(0.0, now - state.last_now)
    reclaimed = sum(z.preempted for z in zones)
    exposure = state.exposure + dt * (observation.spot_held + reclaimed)
    losses = state.losses + reclaimed
    rate = (losses + 1) / (exposure + 86400.0 / params.prior_losses_per_day)
    window = params.cold_start_seconds + params.decision_seconds
    risky = rate * observation.spot_ready * window >= params.insure_above
    if growing or risky:
        on_demand = max(on_demand, min(n, want - observation.spot_ready))
    return (Plan(on_demand=on_demand, spot=tuple(spot)),
            TidalState(active=active, key=key, emptied=emptied, partial=partial, target=n, growing=growing,
                       last_now=now, exposure=exposure, losses=losses))
