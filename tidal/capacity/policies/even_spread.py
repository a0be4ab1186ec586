"""The `even-spread` reference policy: N+k spot, each new node in the zone holding the fewest (ties: lowest index)."""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from tidal.capacity.policies.placement import fill_fewest, keep_at_most
from tidal.capacity.policies.types import Observation, Plan


class EvenSpreadParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overprovision: int = Field(default=1, ge=0, le=1000)


def initial_state(params: EvenSpreadParams, zones: Sequence[str], seed: int) -> None:
    return None


def decide(observation: Observation, params: EvenSpreadParams, state: None, now: float) -> tuple[Plan, None]:
    want = observation.target + params.overprovision
    held = keep_at_most([z.held for z in observation.zones], want)
    spot = fill_fewest(held, want - sum(held), list(range(len(held))))
    return Plan(on_demand=0, spot=spot), None
