"""The `ess` policy: the seed's elastic node pool (Alibaba ESS "Cost Optimization"), as capacity.md maps it.

desired = target + overprovision. On-demand: the first `on_demand_base` nodes,
then `on_demand_percentage` of the rest, rounded up (in favour of on-demand, as
AWS's MixedInstancesPolicy does). Spot: the rest, spread evenly over the
`spot_pools` cheapest zones (COST_OPTIMIZED: ascending price, index breaks
ties), skipping a zone that just refused or reclaimed nodes. With
`compensate_with_on_demand`, every spot node wanted but not held is covered by
an on-demand one, released as soon as the spot node is back (ESS swaps back to
preemptible instances once they can be created). With `spot_remedy`, a node
under a preemption notice is replaced at once; without it the pool counts the
node as held until it is gone.
"""

from __future__ import annotations

import math
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


def split(desired: int, params: EssParams) -> tuple[int, int]:
    """(on-demand, spot) for a desired capacity: base first, then the percentage above base, rounded up."""
    base = min(desired, params.on_demand_base)
    above = desired - base
    on_demand = base + math.ceil(above * params.on_demand_percentage / 100)
    return on_demand, desired - on_demand


def initial_state(params: EssParams, zones: Sequence[str], seed: int) -> None:
    return None


def decide(observation: Observation, params: EssParams, state: None, now: float) -> tuple[Plan, None]:
    zones = observation.zones
    on_demand, spot_wanted = split(observation.target + params.overprovision, params)
    by_price = sorted(range(len(zones)), key=lambda i: (zones[i].price, i))
    usable = [i for i in by_price if zones[i].lost == 0] or by_price
    pools = usable[:params.spot_pools]
    held = [z.held + (0 if params.spot_remedy else z.noticed) for z in zones]
    kept = keep_at_most(held, spot_wanted, by_price)
    spot = fill_fewest(kept, spot_wanted - sum(kept), pools)
    if params.compensate_with_on_demand:
        on_demand += max(0, spot_wanted - sum(held))
    # Nodes under notice that the pool still counts (no remedy) are not relaunched: the plan excludes them.
    spot = tuple(s - (0 if params.spot_remedy else z.noticed) for s, z in zip(spot, zones))
    return Plan(on_demand=on_demand, spot=tuple(max(0, s) for s in spot)), None
