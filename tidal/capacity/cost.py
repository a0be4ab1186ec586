"""Cost accounting (pure): each node is charged per second of its life at its billing type's price, next to what on-demand would have cost."""

from __future__ import annotations

from dataclasses import dataclass

from tidal.capacity.catalog import Catalog, CapacityType


@dataclass(frozen=True)
class NodeLife:
    name: str
    instance_type: str
    zone: str
    billing: CapacityType
    launched_at: float
    terminated_at: float | None


@dataclass(frozen=True)
class NodeCost:
    name: str
    billing: CapacityType
    seconds: float
    cost: float
    on_demand_cost: float


@dataclass(frozen=True)
class CostSummary:
    nodes: list[NodeCost]
    spot_cost: float
    on_demand_cost: float
    spot_seconds: float
    on_demand_seconds: float

    @property
    def total(self) -> float:
        return self.spot_cost + self.on_demand_cost

    @property
    def all_on_demand(self) -> float:
        """What the same node-seconds would have cost on on-demand."""
        return sum(n.on_demand_cost for n in self.nodes)

    @property
    def savings(self) -> float:
        return self.all_on_demand - self.total

    @property
    def savings_ratio(self) -> float:
        return self.savings / self.all_on_demand if self.all_on_demand > 0 else 0.0

    def as_dict(self) -> dict:
        return {"total": round(self.total, 6), "spot": round(self.spot_cost, 6),
                "on_demand": round(self.on_demand_cost, 6), "all_on_demand": round(self.all_on_demand, 6),
                "savings": round(self.savings, 6), "savings_ratio": round(self.savings_ratio, 4),
                "spot_node_seconds": round(self.spot_seconds, 3),
                "on_demand_node_seconds": round(self.on_demand_seconds, 3)}


def node_cost(life: NodeLife, catalog: Catalog, now: float) -> NodeCost:
    end = life.terminated_at if life.terminated_at is not None else now
    seconds = max(0.0, end - life.launched_at)
    t = catalog.lookup(life.instance_type, life.zone)  # the type as listed in the region of the node's zone
    if t is None:  # a type since removed from the catalog: its cost is unknown, not zero-by-accident
        return NodeCost(life.name, life.billing, seconds, float("nan"), float("nan"))
    price = t.price(life.zone, life.billing)
    return NodeCost(life.name, life.billing, seconds, price * seconds / 3600.0, t.on_demand_price * seconds / 3600.0)


def summarize(lives: list[NodeLife], catalog: Catalog, now: float) -> CostSummary:
    costs = [node_cost(n, catalog, now) for n in lives]
    known = [c for c in costs if c.cost == c.cost]
    return CostSummary(
        nodes=known,
        spot_cost=sum(c.cost for c in known if c.billing == "spot"),
        on_demand_cost=sum(c.cost for c in known if c.billing == "on-demand"),
        spot_seconds=sum(c.seconds for c in known if c.billing == "spot"),
        on_demand_seconds=sum(c.seconds for c in known if c.billing == "on-demand"),
    )
