"""A simulated node pool: the control plane's capacity executor (`tidal.capacity.executor`) run against spot
capacity traces, so every simulated decision is carried out by the code that carries out live ones.

`SimPool` is the executor's `Provider`: a spot launch is refused when its zone already holds as many of our nodes
as the trace gives it at that moment; on-demand launches always succeed. After the commands, `reclaim` takes the
nodes a zone holds above its capacity (the provider's newest first) and records them in the ledger as
preemptions, either at once (the protocol) or after a notice (the fuller model).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from tidal.capacity.catalog import Catalog, InstanceType
from tidal.capacity.executor import Ledger, carry_out, pool_commands
from tidal.capacity.nodepool import Drain, Launch, PoolNode, Terminate
from tidal.capacity.policies.types import Plan
from tidal.errors import CapacityUnavailable
from tidal.spec import NodePoolSpec

NODE_TYPE = "sim"


def sim_pool(zones: Sequence[str], spot_prices: Sequence[float], on_demand_price: float,
             scale_in_after_seconds: float = 0.0) -> tuple[NodePoolSpec, Catalog]:
    """One instance type offered spot in each zone at its price, on-demand at one price; no bound but the trace."""
    catalog = Catalog([InstanceType(name=NODE_TYPE, vcpu=1, memory_gib=1, on_demand_price=on_demand_price,
                                    spot_prices=dict(zip(zones, spot_prices)))])
    pool = NodePoolSpec(name="sim", spot=True, policy="spothedge", instance_types=[NODE_TYPE], zones=list(zones),
                        multi_zone="priority", max_nodes=1000, scale_in_after_seconds=scale_in_after_seconds)
    return pool, catalog


class SimPool:
    """Nodes of one simulated pool; `step` runs one decision's Plan through the shared executor."""

    def __init__(self, zones: Sequence[str], spot_prices: Sequence[float], on_demand_price: float,
                 scale_in_after_seconds: float = 0.0) -> None:
        self.zones = list(zones)
        self.pool, self.catalog = sim_pool(zones, spot_prices, on_demand_price, scale_in_after_seconds)
        self.nodes: dict[str, PoolNode] = {}
        self.capacity: dict[str, int] = {}
        self.ledger = Ledger()
        self.refuse = None   # an extra reason to refuse a launch (the fuller model's random failures), or None
        self._next = 0

    # -- the executor's Provider
    def launch(self, launch: Launch, now: float) -> None:
        if launch.capacity_type == "spot":
            held = sum(1 for n in self.nodes.values() if n.billing == "spot" and n.zone == launch.zone
                       and n.state == "ready")
            if held >= self.capacity.get(launch.zone, 0):
                raise CapacityUnavailable(f"no spot capacity in {launch.zone}")
        if self.refuse is not None and self.refuse(launch):
            raise CapacityUnavailable(f"launch refused in {launch.zone}")
        self._next += 1
        name = f"n{self._next}"
        self.nodes[name] = PoolNode(name, launch.zone, launch.instance_type, launch.capacity_type, "ready", now,
                                    empty_since=now)

    def terminate(self, terminate: Terminate, now: float) -> None:
        del self.nodes[terminate.node]

    def drain(self, drain: Drain, now: float) -> None:
        self.nodes[drain.node] = replace(self.nodes[drain.node], cordoned=True)

    def place(self, replicas: int, now: float) -> None:
        """One replica per node: on spot nodes first, then on-demand (the fallback the policies shed first; the
        control plane's scheduler likewise places last on a kind its pool is shrinking), oldest first, never on a
        node being drained. Those are busy; the rest are empty (since they last held a replica, or since launch).
        A drained node's replica has moved: it is empty."""
        order = sorted((n for n in self.nodes.values() if n.state == "ready" and not n.cordoned),
                       key=lambda n: (n.billing != "spot", n.launched_at, n.name))
        busy = {n.name for n in order[:replicas]}
        for n in list(self.nodes.values()):
            if n.state != "ready":
                continue
            if n.name in busy:
                if n.empty_since is not None:
                    self.nodes[n.name] = replace(n, empty_since=None)
            elif n.empty_since is None:
                self.nodes[n.name] = replace(n, empty_since=now)

    # -- one decision
    def step(self, plan: Plan, capacity: Sequence[int], now: float) -> None:
        """The Plan carried out against this moment's capacity (zone order as `zones`)."""
        self.capacity = dict(zip(self.zones, capacity))
        self.ledger = self.ledger.decided()
        planned = pool_commands(self.pool, plan, self.zones, list(self.nodes.values()), self.catalog, now,
                                NODE_TYPE, self.ledger, 0.0)
        self.ledger = carry_out(planned, self, self.ledger, now)

    def reclaim(self, now: float, notice_seconds: float | None = None) -> list[PoolNode]:
        """Ready spot nodes above their zone's capacity, newest first, are reclaimed: removed at once when
        `notice_seconds` is None, else noticed (they serve until `now + notice_seconds`). Returns them."""
        taken: list[PoolNode] = []
        for zone in self.zones:
            ready = sorted((n for n in self.nodes.values() if n.billing == "spot" and n.zone == zone
                            and n.state == "ready"), key=lambda n: (n.launched_at, n.name))
            over = len(ready) - self.capacity.get(zone, 0)
            if over <= 0:
                continue
            for n in ready[-over:]:
                taken.append(n)
                if notice_seconds is None:
                    del self.nodes[n.name]
                else:
                    self.nodes[n.name] = replace(n, state="notified", reclaim_at=now + notice_seconds)
            self.ledger = self.ledger.preemption(zone, over)
        return taken

    def expire_notices(self, now: float) -> None:
        """Noticed nodes whose notice has run out go."""
        for n in [n for n in self.nodes.values() if n.state == "notified" and n.reclaim_at <= now]:
            del self.nodes[n.name]

    def spot_held(self) -> list[int]:
        counts = dict.fromkeys(self.zones, 0)
        for n in self.nodes.values():
            if n.billing == "spot" and n.state == "ready":
                counts[n.zone] += 1
        return [counts[z] for z in self.zones]

    def on_demand_held(self) -> int:
        return sum(1 for n in self.nodes.values() if n.billing == "on-demand")
