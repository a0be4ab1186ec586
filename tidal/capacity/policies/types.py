"""What a capacity policy sees (Observation), what it answers (Plan), and the signature every policy has.

An Observation is one look at a node pool for one service (or one pool), taken
just before a decision. It is built the same way from the simulator's trace
state and from a live pool:

- `target`: the replicas (nodes) that must be ready to serve (the autoscaler's
  desired count; the protocol's N).
- `zones`: one `ZoneView` per spot pool (zone or zone x instance type), in a
  fixed order that the policy's state and the Plan both follow:
  - `held`: spot nodes held now (launched and not gone, ready or still cold),
    not counting those under a preemption notice;
  - `ready`: the part of `held` that has finished its cold start;
  - `noticed`: spot nodes under a preemption notice (still serving, going away);
  - `preempted`: spot nodes reclaimed since the previous decision;
  - `launch_failed`: spot launches refused (no capacity) since the previous decision;
  - `price`: the spot price per node-second (any unit, same as `on_demand_price`).
- `on_demand_held`, `on_demand_ready`: the same for on-demand nodes.

In the simulator a decision at tick t sees the counts after tick t-1's
clipping; in the control plane it sees the nodes table and the events since the
last reconcile. `preempted + launch_failed > 0` is "the last plan for this zone
was not fully met".

A Plan is the count to hold: `on_demand` nodes and `spot[i]` nodes in
`observation.zones[i]`. The caller turns the difference between the Plan and
what it holds into launches and terminations (newest first, so that ready nodes
survive a scale-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Protocol, Sequence

from pydantic import BaseModel


def offer_key(instance_type: str, zone: str) -> str:
    """A spot pool of one instance type in one zone, as a policy that spreads over types sees it."""
    return f"{instance_type}@{zone}"


@lru_cache(maxsize=4096)  # a pure parse of a few keys, asked millions of times by the simulator
def split_key(key: str) -> tuple[str | None, str]:
    """(instance type or None, zone) of a spot pool's key: a zone alone, or `offer_key`'s type@zone."""
    itype, sep, zone = key.rpartition("@")
    return (itype, zone) if sep else (None, key)


@dataclass(frozen=True, slots=True)
class ZoneView:
    name: str
    held: int
    ready: int
    preempted: int = 0
    launch_failed: int = 0
    noticed: int = 0
    price: float = 1.0

    @property
    def lost(self) -> int:
        """Nodes the zone did not give us since the last decision: its last plan was not met."""
        return self.preempted + self.launch_failed


@dataclass(frozen=True, slots=True)
class Observation:
    target: int
    zones: tuple[ZoneView, ...]
    on_demand_held: int = 0
    on_demand_ready: int = 0
    on_demand_price: float = 3.0

    @property
    def spot_held(self) -> int:
        return sum(z.held for z in self.zones)

    @property
    def spot_ready(self) -> int:
        return sum(z.ready for z in self.zones)


@dataclass(frozen=True, slots=True)
class Plan:
    on_demand: int
    spot: tuple[int, ...]

    def spot_by_zone(self, observation: Observation) -> dict[str, int]:
        return {z.name: n for z, n in zip(observation.zones, self.spot)}

    @property
    def total(self) -> int:
        return self.on_demand + sum(self.spot)


class Decide(Protocol):
    def __call__(self, observation: Observation, params: Any, state: Any, now: float) -> tuple[Plan, Any]: ...


@dataclass(frozen=True, slots=True)
class PolicyDef:
    """A policy as the registry holds it: its parameters' model, its first state, and its decision."""
    name: str
    params: type[BaseModel]
    initial_state: Callable[[Any, Sequence[str], int], Any]  # (params, zone names, seed) -> state
    decide: Decide
    summary: str
    by_type: bool = False  # its spot pools are (instance type, zone) pairs, not zones
    acts_on_notice: bool = False  # replaces a node when its notice comes: its pools replace the replicas then too
