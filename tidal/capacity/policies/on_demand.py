"""The `on-demand` policy: every needed node on demand, no spot (the cost baseline)."""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel, ConfigDict

from tidal.capacity.policies.types import Observation, Plan


class OnDemandParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def initial_state(params: OnDemandParams, zones: Sequence[str], seed: int) -> None:
    return None


def decide(observation: Observation, params: OnDemandParams, state: None, now: float) -> tuple[Plan, None]:
    # On-demand is never reclaimed, so overprovisioning buys nothing: hold exactly the target.
    return Plan(on_demand=observation.target, spot=(0,) * len(observation.zones)), None
