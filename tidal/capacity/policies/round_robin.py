"""The `round-robin` reference policy: N+k spot, new nodes placed by a zone pointer kept across decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from tidal.capacity.policies.placement import keep_at_most
from tidal.capacity.policies.types import Observation, Plan


class RoundRobinParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overprovision: int = Field(default=1, ge=0, le=1000)


@dataclass(frozen=True, slots=True)
class RoundRobinState:
    pointer: int = 0


def initial_state(params: RoundRobinParams, zones: Sequence[str], seed: int) -> RoundRobinState:
    return RoundRobinState()


def decide(observation: Observation, params: RoundRobinParams, state: RoundRobinState,
           now: float) -> tuple[Plan, RoundRobinState]:
    want = observation.target + params.overprovision
    spot = list(keep_at_most([z.held for z in observation.zones], want))
    pointer = state.pointer
    for _ in range(want - sum(spot)):
        spot[pointer % len(spot)] += 1
        pointer = (pointer + 1) % len(spot)
    return Plan(on_demand=0, spot=tuple(spot)), RoundRobinState(pointer)
