"""The `spot-only` policy: N+k spot in the cheapest zones, spread, skipping a zone whose last plan was not met."""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from tidal.capacity.policies.placement import fill_fewest, keep_at_most
from tidal.capacity.policies.types import Observation, Plan


class SpotOnlyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overprovision: int = Field(default=1, ge=0, le=1000)


def initial_state(params: SpotOnlyParams, zones: Sequence[str], seed: int) -> None:
    return None


def decide(observation: Observation, params: SpotOnlyParams, state: None, now: float) -> tuple[Plan, None]:
    zones = observation.zones
    want = observation.target + params.overprovision
    by_price = sorted(range(len(zones)), key=lambda i: (zones[i].price, i))
    # A zone that just refused or reclaimed nodes is likely to refuse the next launch too.
    usable = [i for i in by_price if zones[i].lost == 0] or by_price
    held = keep_at_most([z.held for z in zones], want, by_price)
    return Plan(on_demand=0, spot=fill_fewest(held, want - sum(held), usable)), None
