"""The `ess` policy: the reference procedure's elastic node pool (ESS "Cost Optimization"), as capacity.md maps it.

desired = target + overprovision. On-demand: the first `on_demand_base` nodes,
then `on_demand_percentage` of the rest, rounded up (in favour of on-demand, as
AWS's MixedInstancesPolicy does). Spot: the rest, spread evenly over the
`spot_pools` cheapest zones (COST_OPTIMIZED: ascending price, index breaks
ties) among those not refusing: a zone that refused a launch or reclaimed a
node is skipped for `unavailable_seconds` (Karpenter's unavailable-offering
cache), and when every zone is refusing no new spot is placed at all. With
`compensate_with_on_demand`, on-demand covers the spot that no usable zone can
take, decided after the spot is placed (so a scale-out buys no on-demand for
spot it has not yet tried); on-demand already held for that stays until the
spot replacing it is held (ESS swaps back to preemptible instances once they
can be created), then goes. With `spot_remedy`, a node under a preemption
notice is replaced at once; without it the pool counts the node as held until
it is gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from tidal.capacity.policies.placement import fill_fewest, keep_at_most
from tidal.capacity.policies.types import Observation, Plan


class EssParams(BaseModel):
    """The knobs, named as `tidal.spec.NodePoolSpec` names them so a pool spec can build them."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    overprovision: int = Field(default=0, ge=0, le=1000)
    on_demand_base: int = Field(default=0, ge=0, le=1000)
    on_demand_percentage: int = Field(default=30, ge=0, le=100)
    spot_pools: int = Field(default=2, ge=1, le=10)
    compensate_with_on_demand: bool = True
    spot_remedy: bool = True
    # How long a zone that refused or reclaimed spot is left out (Karpenter caches unavailable offerings 45 s).
    unavailable_seconds: float = Field(default=45.0, ge=0, le=3600)


@dataclass(frozen=True, slots=True)
class EssState:
    refused_until: tuple[float, ...]  # per zone, in the Observation's order: no new spot there before this time


def split(desired: int, params: EssParams) -> tuple[int, int]:
    """(on-demand, spot) for a desired capacity: base first, then the percentage above base, rounded up."""
    base = min(desired, params.on_demand_base)
    above = desired - base
    on_demand = base + math.ceil(above * params.on_demand_percentage / 100)
    return on_demand, desired - on_demand


def initial_state(params: EssParams, zones: Sequence[str], seed: int) -> EssState:
    return EssState(refused_until=(-math.inf,) * len(zones))


def decide(observation: Observation, params: EssParams, state: EssState, now: float) -> tuple[Plan, EssState]:
    zones = observation.zones
    share, spot_wanted = split(observation.target + params.overprovision, params)
    refused_until = tuple(now + params.unavailable_seconds if z.lost else until
                          for z, until in zip(zones, state.refused_until))
    by_price = sorted(range(len(zones)), key=lambda i: (zones[i].price, i))
    # No fallback to a refusing zone: spot that no usable zone takes is on-demand's to cover.
    pools = [i for i in by_price if now >= refused_until[i]][:params.spot_pools]
    held = [z.held + (0 if params.spot_remedy else z.noticed) for z in zones]
    kept = keep_at_most(held, spot_wanted, by_price)
    spot = fill_fewest(kept, spot_wanted - sum(kept), pools)
    on_demand = share
    if params.compensate_with_on_demand:
        unplaceable = spot_wanted - sum(spot)
        # Swap back only once the spot is held: dropping the on-demand while the spot is merely planned
        # would leave the gap uncovered if the launch fails again (each retry a fresh on-demand cold start).
        still_covering = min(observation.on_demand_held - share, spot_wanted - sum(held))
        on_demand += max(0, unplaceable, still_covering)
    # Nodes under notice that the pool still counts (no remedy) are not relaunched: the plan excludes them.
    spot = tuple(s - (0 if params.spot_remedy else z.noticed) for s, z in zip(spot, zones))
    return Plan(on_demand=on_demand, spot=tuple(max(0, s) for s in spot)), EssState(refused_until)
