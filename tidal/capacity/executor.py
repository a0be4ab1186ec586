"""One executor of capacity Plans, run by the control plane and the simulator alike: which nodes to launch, drain
and terminate, in which order, within the pool's bound, and what a refused launch does.

A pass has two halves:
- `pool_commands` (pure): the Plan diffed against the pool's nodes (`nodepool.plan_decisions`: launches in the
  pool's offering order, only empty nodes terminated, busy nodes of a kind in excess drained), with the launch
  budget the pool's `max_nodes` leaves.
- `carry_out`: the commands in order through a `Provider` (the local backend and the store; a Kubernetes
  cluster's provisioner; a trace of spot capacity in the simulator), spending the budget on launches that
  succeed. A refused launch (`CapacityUnavailable`) is remembered in the `Ledger`: its zone's `launch_failed`
  count reaches the policy at the next decision (SpotHedge and ESS move away from the zone), and the offering
  is skipped for `unavailable_seconds` so the next pass tries the pool's next offering.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Protocol, Sequence

from tidal.capacity.catalog import Catalog
from tidal.capacity.nodepool import Drain, Launch, PoolNode, Terminate, offer_key, plan_decisions
from tidal.capacity.policies.types import Plan
from tidal.errors import CapacityUnavailable
from tidal.spec import NodePoolSpec

Command = Launch | Drain | Terminate
Offer = tuple[str, str, str]  # (instance type, zone, capacity type)


@dataclass(frozen=True)
class Ledger:
    """What a pool's executor remembers between decisions (typed, JSON-able through `to_dict`/`from_dict`)."""
    preempted: Mapping[str, int] = field(default_factory=dict)      # zone -> spot nodes reclaimed since the last decision
    launch_failed: Mapping[str, int] = field(default_factory=dict)  # zone -> spot launches refused since then
    unavailable: Mapping[Offer, float] = field(default_factory=dict)  # offering -> when it was last refused
    # The same counts by (type, zone) pool (`offer_key`), for a policy that spreads spot over types.
    offers_preempted: Mapping[str, int] = field(default_factory=dict)
    offers_failed: Mapping[str, int] = field(default_factory=dict)

    def preemption(self, zone: str, count: int = 1, instance_type: str | None = None) -> "Ledger":
        out = replace(self, preempted={**self.preempted, zone: self.preempted.get(zone, 0) + count})
        if instance_type is None:
            return out
        key = offer_key(instance_type, zone)
        return replace(out, offers_preempted={**self.offers_preempted, key: self.offers_preempted.get(key, 0) + count})

    def refusal(self, launch: Launch, now: float) -> "Ledger":
        failed, offers = dict(self.launch_failed), dict(self.offers_failed)
        if launch.capacity_type == "spot":
            key = offer_key(launch.instance_type, launch.zone)
            failed[launch.zone] = failed.get(launch.zone, 0) + 1
            offers[key] = offers.get(key, 0) + 1
        return replace(self, launch_failed=failed, offers_failed=offers,
                       unavailable={**self.unavailable, (launch.instance_type, launch.zone, launch.capacity_type): now})

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(preempted, launch_failed) by zone and by (type, zone) pool, as `nodepool.observe` looks them up."""
        return {**self.preempted, **self.offers_preempted}, {**self.launch_failed, **self.offers_failed}

    def decided(self) -> "Ledger":
        """After a decision has seen the losses: counting starts again."""
        return replace(self, preempted={}, launch_failed={}, offers_preempted={}, offers_failed={})

    def skipped(self, now: float, unavailable_seconds: float) -> frozenset[Offer]:
        """Offerings refused within the last `unavailable_seconds`: launches try the pool's next offering."""
        return frozenset(k for k, t in self.unavailable.items() if now - t < unavailable_seconds)

    def expire(self, now: float, unavailable_seconds: float) -> "Ledger":
        kept = {k: t for k, t in self.unavailable.items() if now - t < unavailable_seconds}
        return self if len(kept) == len(self.unavailable) else replace(self, unavailable=kept)

    def to_dict(self) -> dict:
        return {"preempted": {**self.preempted, **self.offers_preempted},
                "launch_failed": {**self.launch_failed, **self.offers_failed},
                "unavailable": [[*k, t] for k, t in self.unavailable.items()]}

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "Ledger":
        if not data:
            return cls()
        def split(counts: Mapping | None, offers: bool) -> dict[str, int]:
            return {str(k): int(v) for k, v in (counts or {}).items() if ("@" in str(k)) == offers}
        pre, failed = data.get("preempted"), data.get("launch_failed")
        return cls(split(pre, False), split(failed, False),
                   {(str(a), str(b), str(c)): float(t) for a, b, c, t in data.get("unavailable") or ()},
                   split(pre, True), split(failed, True))


@dataclass(frozen=True)
class PoolCommands:
    commands: tuple[Command, ...]
    launch_budget: int   # launches that may succeed this pass: `max_nodes` minus every node not yet terminated


def launch_budget(pool: NodePoolSpec, nodes: Iterable[PoolNode], terminating: int = 0) -> int:
    """Room under the pool's `max_nodes`. Every node the pool still pays for counts, a node under a reclaim
    notice too (it runs until the provider takes it): replacing noticed nodes beyond the bound would let a burst
    of reclaims take the pool past `--max`. Nodes this pass terminates make room at once."""
    held = sum(1 for n in nodes if n.state != "terminated")
    return max(0, pool.max_nodes - held + terminating)


def pool_commands(pool: NodePoolSpec, plan: Plan, zones: Sequence[str], nodes: Sequence[PoolNode], catalog: Catalog,
                  now: float, node_type: str | None, ledger: Ledger, unavailable_seconds: float) -> PoolCommands:
    """The commands that move the pool toward `plan` (pure; see the module docstring)."""
    skipped = ledger.skipped(now, unavailable_seconds)
    commands = plan_decisions(pool, plan, list(zones), list(nodes), catalog, now, node_type, skipped)
    terminating = sum(1 for c in commands if isinstance(c, Terminate))
    return PoolCommands(tuple(commands), launch_budget(pool, nodes, terminating))


class Provider(Protocol):
    """What carries capacity commands out: launches may be refused with `CapacityUnavailable`."""

    def launch(self, launch: Launch, now: float) -> None: ...

    def terminate(self, terminate: Terminate, now: float) -> None: ...

    def drain(self, drain: Drain, now: float) -> None: ...


def carry_out(planned: PoolCommands, provider: Provider, ledger: Ledger, now: float) -> Ledger:
    """Terminations and drains first (they free room and never fail), then launches in the Plan's order while
    the budget lasts; a refused launch spends no budget, so the next launch of the list is still tried."""
    budget = planned.launch_budget
    for cmd in planned.commands:
        if isinstance(cmd, Terminate):
            provider.terminate(cmd, now)
        elif isinstance(cmd, Drain):
            provider.drain(cmd, now)
    for cmd in planned.commands:
        if not isinstance(cmd, Launch) or budget <= 0:
            continue
        try:
            provider.launch(cmd, now)
        except CapacityUnavailable:
            ledger = ledger.refusal(cmd, now)
        else:
            budget -= 1
    return ledger
