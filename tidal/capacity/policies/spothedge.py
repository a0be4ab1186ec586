"""The `spothedge` policy: SkyServe's SpotHedge (EuroSys 2025) as spot-simulation.md states it.

Spot: hold N+k spot nodes always. A zone whose last plan was not fully met
becomes "preempted"; one whose plan for at least one node was met becomes
"active" again (a zone planned no node has met nothing and keeps its status,
which is what reproduces the rerun numbers of the spec); when at most
min(1, zones - 3) zones stay active, all become active. A new spot node goes to
a random active zone holding none, else to a random active zone.
On-demand fallback: min(N, N+k - spot ready) when positive, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from tidal.capacity.policies.keyed_random import choice, seed_key
from tidal.capacity.policies.placement import keep_at_most
from tidal.capacity.policies.types import Observation, Plan, ZoneView


class SpotHedgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overprovision: int = Field(default=1, ge=0, le=1000)


@dataclass(frozen=True, slots=True)
class SpotHedgeState:
    active: tuple[bool, ...]
    key: int


def initial_state(params: SpotHedgeParams, zones: Sequence[str], seed: int) -> SpotHedgeState:
    return SpotHedgeState(active=(True,) * len(zones), key=seed_key(seed))


def active_zones(zones: Sequence[ZoneView], was: Sequence[bool]) -> tuple[bool, ...]:
    """SpotHedge's active set after one look: a zone that lost nodes goes out, one holding nodes comes back."""
    active = tuple(False if z.lost else (True if z.held > 0 else w) for z, w in zip(zones, was))
    if sum(active) <= min(1, len(zones) - 3) or not any(active):  # the second test: pools of 1 or 2 zones
        active = (True,) * len(zones)
    return active


def spread(held: Sequence[int], want: int, active: Sequence[bool], key: int) -> tuple[list[int], int]:
    """The held nodes kept up to `want`, then each new one in a random active zone holding none, else a random
    active zone. Returns the counts and the random key after the draws."""
    spot = list(keep_at_most(held, want))
    live = [i for i in range(len(held)) if active[i]]
    for _ in range(want - sum(spot)):
        empty = [i for i in live if spot[i] == 0]
        zone, key = choice(key, empty or live)
        spot[zone] += 1
    return spot, key


def decide(observation: Observation, params: SpotHedgeParams, state: SpotHedgeState,
           now: float) -> tuple[Plan, SpotHedgeState]:
    n, want = observation.target, observation.target + params.overprovision
    active = active_zones(observation.zones, state.active)
    spot, key = spread([z.held for z in observation.zones], want, active, state.key)
    on_demand = max(0, min(n, want - observation.spot_ready))
    return Plan(on_demand=on_demand, spot=tuple(spot)), SpotHedgeState(active=active, key=key)
