"""A simulated node pool: the control plane's capacity executor (`tidal.capacity.executor`) run against spot
capacity traces, so every simulated decision is carried out by the code that carries out live ones.

`SimPool` is the executor's `Provider`. Its spot offerings are the trace's series: zones of one instance type
(the published traces), or (instance type, zone) pairs. A spot launch is refused when its offering already holds
as many of our nodes as the trace gives it at that moment; on-demand launches always succeed. After the
commands, `reclaim` takes the nodes an offering holds above its capacity (the provider's newest first) and
records them in the ledger as preemptions, either at once (the protocol) or after a notice (the fuller model).
The policy sees zones, or each (type, zone) pair when it spreads over types (`PolicyDef.by_type`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from tidal.capacity.catalog import Catalog, InstanceType
from tidal.capacity.executor import Ledger, carry_out, pool_commands
from tidal.capacity.nodepool import Drain, Launch, PoolNode, Terminate, offer_key
from tidal.capacity.policies.types import Observation, Plan, ZoneView
from tidal.errors import CapacityUnavailable
from tidal.spec import NodePoolSpec

NODE_TYPE = "sim"


def sim_pool(zones: Sequence[str], spot_prices: Sequence[float], on_demand_price: float,
             scale_in_after_seconds: float = 0.0,
             instance_types: Sequence[str] | None = None) -> tuple[NodePoolSpec, Catalog]:
    """The offerings (one type per zone, or the given type of each series) spot at their prices, on-demand at one
    price; no bound but the trace. Types are tried in the order the series first name them."""
    types = list(instance_types) if instance_types else [NODE_TYPE] * len(zones)
    prices: dict[str, dict[str, float]] = {}
    for t, z, p in zip(types, zones, spot_prices):
        prices.setdefault(t, {})[z] = p
    catalog = Catalog([InstanceType(name=t, vcpu=1, memory_gib=1, on_demand_price=on_demand_price, spot_prices=zp)
                       for t, zp in prices.items()])
    pool = NodePoolSpec(name="sim", spot=True, policy="spothedge", instance_types=list(prices),
                        zones=sorted(set(zones)), multi_zone="priority", max_nodes=1000,
                        scale_in_after_seconds=scale_in_after_seconds)
    return pool, catalog


class SimPool:
    """Nodes of one simulated pool; `step` runs one decision's Plan through the shared executor."""

    def __init__(self, zones: Sequence[str], spot_prices: Sequence[float], on_demand_price: float,
                 scale_in_after_seconds: float = 0.0, instance_types: Sequence[str] | None = None,
                 by_type: bool = False, unavailable_seconds: float = 0.0) -> None:
        types = list(instance_types) if instance_types else [NODE_TYPE] * len(zones)
        self.offers = list(zip(types, zones))   # the trace's series
        self.typed = bool(instance_types)
        self.by_type = by_type
        # What the policy sees and the Plan follows: (type, zone) pairs, or zones in first-seen order.
        self.keys = [offer_key(t, z) for t, z in self.offers] if by_type else list(dict.fromkeys(zones))
        self.zones = self.keys
        self.pool, self.catalog = sim_pool(zones, spot_prices, on_demand_price, scale_in_after_seconds,
                                           instance_types)
        self.on_demand_price = on_demand_price
        self.unavailable_seconds = unavailable_seconds
        self.nodes: dict[str, PoolNode] = {}
        self.capacity: dict[tuple[str, str], int] = {}
        self.ledger = Ledger()
        self.refuse = None   # an extra reason to refuse a launch (the fuller model's random failures), or None
        self._next = 0
        self._gone: dict[str, int] = {}  # nodes whose notice ran out since the last decision, by key
        self._views: dict[tuple, ZoneView] = {}

    def set_capacity(self, capacity: Sequence[int]) -> None:
        """This moment's capacity, one per series (the `offers` order)."""
        self.capacity = dict(zip(self.offers, capacity))

    # -- the executor's Provider
    def launch(self, launch: Launch, now: float) -> None:
        if launch.capacity_type == "spot":
            held = sum(1 for n in self.nodes.values() if n.billing == "spot" and n.zone == launch.zone
                       and n.instance_type == launch.instance_type and n.state == "ready")
            if held >= self.capacity.get((launch.instance_type, launch.zone), 0):
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
    def observation(self, target: int, now: float, cold_start_seconds: float, prices: Sequence[float],
                    notice_blind: bool = False) -> Observation:
        """The policy's view, as `nodepool.observe` builds it from a live pool: per key held (not under notice),
        ready (past the cold start), noticed, and the losses since the last decision. `prices` per series.
        `notice_blind`: nodes under notice look held and ready until they go, and a loss is seen when the node
        goes (a policy that detects preemption by failed probes, as SkyServe's SpotHedge does)."""
        ready_at = now - cold_start_seconds
        held = dict.fromkeys(self.keys, 0)
        ready = dict.fromkeys(self.keys, 0)
        noticed = dict.fromkeys(self.keys, 0)
        od_held = od_ready = 0
        self.last_noticed = noticed
        by_type = self.by_type
        for n in self.nodes.values():
            if n.billing != "spot":
                od_held += 1
                od_ready += n.launched_at <= ready_at
                continue
            key = f"{n.instance_type}@{n.zone}" if by_type else n.zone
            if n.state == "ready" or notice_blind:
                held[key] += 1
                ready[key] += n.launched_at <= ready_at
            else:
                noticed[key] += 1
        price: dict[str, float] = {}
        for (t, z), p in zip(self.offers, prices):
            key = f"{t}@{z}" if by_type else z
            price[key] = min(p, price.get(key, p))
        preempted, failed = self.ledger.counts()
        if notice_blind:
            preempted = self._gone
        # ZoneViews are immutable and most ticks repeat the last ones: built once per distinct view.
        views = self._views
        if len(views) > 50_000:
            views.clear()
        zones = []
        for k in self.keys:
            fields = (k, held[k], ready[k], preempted.get(k, 0), failed.get(k, 0), noticed[k], price[k])
            view = views.get(fields)
            if view is None:
                view = views[fields] = ZoneView(*fields)
            zones.append(view)
        return Observation(target=target, zones=tuple(zones), on_demand_held=od_held, on_demand_ready=od_ready,
                           on_demand_price=self.on_demand_price)

    def step(self, plan: Plan, capacity: Sequence[int] | None, now: float) -> None:
        """The Plan carried out against this moment's capacity (`offers` order; None: as `set_capacity` left it)."""
        if capacity is not None:
            self.set_capacity(capacity)
        self.ledger = self.ledger.decided()
        self._gone = {}
        if not self._settled(plan):
            planned = pool_commands(self.pool, plan, self.keys, list(self.nodes.values()), self.catalog, now,
                                    None if self.typed else NODE_TYPE, self.ledger, self.unavailable_seconds)
            self.ledger = carry_out(planned, self, self.ledger, now)
        if self.unavailable_seconds:
            self.ledger = self.ledger.expire(now, self.unavailable_seconds)

    def _settled(self, plan: Plan) -> bool:
        """Whether the live nodes already are the Plan, kind by kind, none drained: the executor's diff then
        holds no command (`plan_decisions` launches, terminates and drains only where a kind's count differs,
        or a drained node waits), so a long run skips it in the many calm ticks."""
        counts = dict.fromkeys(self.keys, 0)
        on_demand = 0
        by_type = self.by_type
        for n in self.nodes.values():
            if n.state != "ready":
                continue
            if n.cordoned:
                return False
            if n.billing != "spot":
                on_demand += 1
                continue
            key = f"{n.instance_type}@{n.zone}" if by_type else n.zone
            if key not in counts:
                return False
            counts[key] += 1
        return on_demand == plan.on_demand and tuple(counts.values()) == tuple(plan.spot)

    def reclaim(self, now: float, notice_seconds: float | None = None) -> list[PoolNode]:
        """Ready spot nodes above their offering's capacity, newest first, are reclaimed: removed at once when
        `notice_seconds` is None, else noticed (they serve until `now + notice_seconds`). Returns them."""
        taken: list[PoolNode] = []
        by_offer: dict[tuple[str, str], list[PoolNode]] = {}
        for n in self.nodes.values():
            if n.billing == "spot" and n.state == "ready":
                by_offer.setdefault((n.instance_type, n.zone), []).append(n)
        for offer in self.offers:
            ready = by_offer.get(offer)
            if not ready:
                continue
            over = len(ready) - self.capacity.get(offer, 0)
            if over <= 0:
                continue
            ready.sort(key=lambda n: (n.launched_at, n.name))
            for n in ready[-over:]:
                taken.append(n)
                if notice_seconds is None:
                    del self.nodes[n.name]
                else:
                    self.nodes[n.name] = replace(n, state="notified", reclaim_at=now + notice_seconds)
            self.ledger = self.ledger.preemption(offer[1], over, offer[0] if self.typed or self.by_type else None)
        return taken

    def expire_notices(self, now: float) -> int:
        """Noticed nodes whose notice has run out go (a notice-blind policy learns of the loss now)."""
        gone = [n for n in self.nodes.values() if n.state == "notified" and n.reclaim_at <= now]
        counts = dict(self._gone)
        for n in gone:
            del self.nodes[n.name]
            key = f"{n.instance_type}@{n.zone}" if self.by_type else n.zone
            counts[key] = counts.get(key, 0) + 1
        self._gone = counts
        return len(gone)

    def spot_held(self) -> list[int]:
        counts = dict.fromkeys(self.keys, 0)
        for n in self.nodes.values():
            if n.billing == "spot" and n.state == "ready":
                counts[f"{n.instance_type}@{n.zone}" if self.by_type else n.zone] += 1
        return [counts[z] for z in self.keys]

    def on_demand_held(self) -> int:
        return sum(1 for n in self.nodes.values() if n.billing == "on-demand")
