"""A node pool's capacity decisions (pure): how many nodes it needs, and a capacity Plan turned into Launch/Terminate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tidal.capacity.catalog import Catalog, CapacityType, InstanceType
from tidal.capacity.policies.types import Observation, Plan, ZoneView, offer_key, split_key
from tidal.scheduling import Resources, nodes_needed
from tidal.spec import NodePoolSpec

NodeState = Literal["ready", "notified", "terminated"]


def in_key(node: "PoolNode", key: str) -> bool:
    itype, zone = split_key(key)
    return node.zone == zone and (itype is None or node.instance_type == itype)


@dataclass(frozen=True)
class PoolNode:
    """What the pool decisions need to know about one of its nodes."""
    name: str
    zone: str
    instance_type: str
    billing: CapacityType
    state: NodeState
    launched_at: float
    empty_since: float | None = None  # None while a replica is bound to it
    cordoned: bool = False            # its replicas are moving off it (a Drain in progress)
    reclaim_at: float | None = None   # a noticed spot node: when the provider takes it


@dataclass(frozen=True)
class Launch:
    pool: str
    zone: str
    instance_type: str
    capacity_type: CapacityType


@dataclass(frozen=True)
class Terminate:
    node: str
    reason: str


@dataclass(frozen=True)
class Drain:
    """Move a busy node's replicas elsewhere (replacements first), so the node empties and can go."""
    node: str
    reason: str


@dataclass(frozen=True)
class Demand:
    """The pool's target node count and why."""
    target: int
    live: int
    expired_empty: int
    for_pending: int
    node_type: str | None


def resources_of(t: InstanceType) -> Resources:
    return Resources(cpu=float(t.vcpu), memory_mib=float(t.memory_gib) * 1024.0, gpus=int(t.gpus))


def node_type_for(pool: NodePoolSpec, catalog: Catalog, requests: list[Resources],
                  capacity_type: CapacityType = "spot") -> InstanceType | None:
    """The first type, in the pool's multi-zone order, that holds the largest pending replica."""
    catalog = catalog.for_pool(pool)
    offers = catalog.offerings(pool.instance_types, pool.zones, capacity_type, pool.multi_zone)
    for offer in offers:
        t = catalog.get(offer.instance_type)
        if all(r.fits_in(resources_of(t)) for r in requests):
            return t
    return None


def live_nodes(nodes: list[PoolNode]) -> list[PoolNode]:
    """Nodes that count toward the pool's capacity: a node under a reclaim notice does not
    (the policy sees it as `noticed` and, per its spot-remedy knob, replaces it at once or not)."""
    return [n for n in nodes if n.state == "ready"]


def demand(pool: NodePoolSpec, nodes: list[PoolNode], pending: list[Resources], catalog: Catalog,
           now: float) -> Demand:
    """The nodes the workload needs: busy live nodes plus the new nodes the pending replicas need,
    clamped to [min, max].

    Empty nodes do not count: the Plan diff keeps them until they have been empty for
    `scale_in_after_seconds` (cluster-autoscaler's unneeded time), so a dip in load
    does not throw capacity away, while the policy's mix follows the real need.
    """
    catalog = catalog.for_pool(pool)
    live = live_nodes(nodes)
    busy = [n for n in live if n.empty_since is None]
    expired = [n for n in live if n.empty_since is not None and now - n.empty_since >= pool.scale_in_after_seconds]
    node_type = node_type_for(pool, catalog, pending) if pending else None
    extra = 0
    if pending and node_type is not None:
        extra = max(0, nodes_needed(pending, resources_of(node_type)))
    # An empty node that cannot hold any pending replica (a CPU node while a GPU replica waits) is no capacity
    # for it: counted as held, so the Plan launches the new node beside it rather than counting it as that node.
    unfit = [n for n in live if n.empty_since is not None and pending and n.instance_type in catalog.types
             and not any(r.fits_in(resources_of(catalog.types[n.instance_type])) for r in pending)]
    target = max(pool.min_nodes, min(pool.max_nodes, len(busy) + len(unfit) + extra))
    return Demand(target, len(live), len(expired), extra, node_type.name if node_type else None)


def plan_decisions(pool: NodePoolSpec, plan: Plan, zones: list[str], nodes: list[PoolNode], catalog: Catalog,
                   now: float, node_type: str | None = None,
                   unavailable: frozenset[tuple[str, str, str]] = frozenset()) -> list[Launch | Terminate | Drain]:
    """Diff a Plan against the pool's live nodes.

    Launches fill each deficit with the first offering in the pool's multi-zone
    order (skipping (type, zone, capacity type) offerings recently found unavailable). Only
    nodes empty for `scale_in_after_seconds` (or drained on purpose) are terminated,
    longest-empty first: a busy node is never taken
    from under its replicas. Once the per-kind diff is done, any node empty past
    the scale-in delay still above the plan's total goes too; a node younger in its
    emptiness stays, ready for the next burst. Where a kind is in
    excess but all its nodes are busy while a node the plan keeps stands empty
    (ESS swapping a compensating on-demand node back to spot), the busy node is
    drained: its replicas move to the empty node, and it goes once empty.
    """
    catalog = catalog.for_pool(pool)
    live = live_nodes(nodes)
    decisions: list[Launch | Terminate | Drain] = []
    terminated: set[str] = set()
    unmet: list[tuple[list[PoolNode], int, str]] = []

    def empties(cands: list[PoolNode]) -> list[PoolNode]:
        # Notified nodes go by themselves at the end of their notice.
        e = [n for n in cands if n.state == "ready" and n.empty_since is not None and n.name not in terminated]
        return sorted(e, key=lambda n: (n.empty_since, n.name))

    def removable(n: PoolNode) -> bool:
        # Empty past the scale-in delay, or emptied on purpose by a Drain (a swap to the other kind).
        return n.cordoned or now - (n.empty_since or now) >= pool.scale_in_after_seconds

    def shrink(cands: list[PoolNode], excess: int, why: str, swap: bool = True) -> None:
        gone = [n for n in empties(cands) if removable(n)][:max(0, excess)]
        for n in gone:
            terminated.add(n.name)
            decisions.append(Terminate(n.name, why))
        if swap and excess > len(gone):
            unmet.append((cands, excess - len(gone), why))

    # On-demand.
    od = [n for n in live if n.billing == "on-demand"]
    if plan.on_demand > len(od):
        offer = _first_offer(pool, catalog, "on-demand", None, node_type, unavailable)
        if offer is not None:
            decisions += [Launch(pool.name, offer[1], offer[0], "on-demand")] * (plan.on_demand - len(od))
    elif plan.on_demand < len(od):
        shrink(od, len(od) - plan.on_demand, "the plan holds fewer on-demand nodes")

    # Spot, pool by pool (a zone, or a type in a zone); spot nodes in pools the plan does not name are excess.
    spot = [n for n in live if n.billing == "spot"]
    wanted = dict(zip(zones, plan.spot))
    by_type = any("@" in z for z in zones)
    groups: dict[str, list[PoolNode]] = {}
    for n in spot:
        groups.setdefault(offer_key(n.instance_type, n.zone) if by_type else n.zone, []).append(n)
    for key in list(zones) + sorted(set(groups) - set(zones)):
        want = wanted.get(key, 0)
        have = groups.get(key, [])
        itype, zone = split_key(key)
        if want > len(have):
            offer = (itype, zone) if itype is not None and (itype, zone, "spot") not in unavailable \
                else None if itype is not None else _first_offer(pool, catalog, "spot", zone, node_type, unavailable)
            if offer is not None:
                decisions += [Launch(pool.name, zone, offer[0], "spot")] * (want - len(have))
        elif want < len(have):
            shrink(have, len(have) - want, f"the plan holds fewer spot nodes in {key}")

    remaining = [n for n in live if n.name not in terminated]
    launches = sum(1 for d in decisions if isinstance(d, Launch))
    over = len(remaining) + launches - plan.total
    if over > 0:
        expired = [n for n in remaining if n.empty_since is not None
                   and now - n.empty_since >= pool.scale_in_after_seconds]
        shrink(expired, over, "empty past the scale-in delay", swap=False)

    in_excess = {n.name for cands, _, _ in unmet for n in cands}
    spare = [n for n in empties([n for n in live if n.name not in in_excess])]
    for cands, count, why in unmet:
        # Nodes of the kind already empty (waiting out the delay) or being emptied settle the excess by themselves.
        moving = sum(1 for n in cands if n.cordoned or n.empty_since is not None)
        busy = sorted((n for n in cands if n.empty_since is None and not n.cordoned),
                      key=lambda n: (-n.launched_at, n.name))
        for n in busy[:max(0, min(count - moving, len(spare)))]:
            spare.pop(0)
            decisions.append(Drain(n.name, f"{why}: its replicas move to a node the plan keeps"))
    return decisions


def shedding(plan: Plan, zones: list[str], nodes: list[PoolNode]) -> set[str]:
    """Live nodes of a kind (on-demand, or spot in a zone) that the plan holds fewer of than there are:
    the scheduler places replicas on them last, so a replica does not land where the pool is shrinking."""
    live = live_nodes(nodes)
    out: set[str] = set()
    od = [n.name for n in live if n.billing == "on-demand"]
    if len(od) > plan.on_demand:
        out.update(od)
    wanted = dict(zip(zones, plan.spot))
    by_type = any("@" in z for z in zones)
    for key in {offer_key(n.instance_type, n.zone) if by_type else n.zone for n in live if n.billing == "spot"}:
        have = [n.name for n in live if n.billing == "spot" and in_key(n, key)]
        if len(have) > wanted.get(key, 0):
            out.update(have)
    return out


def _first_offer(pool: NodePoolSpec, catalog: Catalog, capacity_type: CapacityType, zone: str | None,
                 node_type: str | None, unavailable: frozenset[tuple[str, str, str]]) -> tuple[str, str] | None:
    offers = catalog.offerings(pool.instance_types, pool.zones, capacity_type, pool.multi_zone)
    if node_type is not None:
        preferred = [o for o in offers if o.instance_type == node_type]
        # The type that fits the pending replicas first, then the rest in order.
        offers = preferred + [o for o in offers if o.instance_type != node_type
                              and _at_least(catalog.get(o.instance_type), catalog.get(node_type))]
    for o in offers:
        if zone is not None and o.zone != zone:
            continue
        if (o.instance_type, o.zone, o.capacity_type) in unavailable:
            continue
        return o.instance_type, o.zone
    return None


def _at_least(t: InstanceType, ref: InstanceType) -> bool:
    return t.vcpu >= ref.vcpu and t.memory_gib >= ref.memory_gib and t.gpus >= ref.gpus


def pool_zones(pool: NodePoolSpec, catalog: Catalog, by_type: bool = False) -> list[str]:
    """The zones where the pool can get spot nodes, in its multi-zone order of preference; `by_type`: each
    (instance type, zone) pair as its own spot pool (`offer_key`), for a policy that spreads over types."""
    catalog = catalog.for_pool(pool)
    seen: list[str] = []
    for o in catalog.offerings(pool.instance_types, pool.zones, "spot", pool.multi_zone):
        key = offer_key(o.instance_type, o.zone) if by_type else o.zone
        if key not in seen:
            seen.append(key)
    return seen



def observe(pool: NodePoolSpec, catalog: Catalog, nodes: list[PoolNode], target: int, zones: list[str],
            node_type: str | None, preempted: dict[str, int], launch_failed: dict[str, int],
            cold_start_seconds: float, now: float) -> Observation:
    """The policy's view of a live pool: counts per zone from the nodes table, losses since the last decision."""
    catalog = catalog.for_pool(pool)

    def is_ready(n: PoolNode) -> bool:
        return now - n.launched_at >= cold_start_seconds

    views = []
    for zone in zones:
        held = [n for n in nodes if n.billing == "spot" and in_key(n, zone) and n.state == "ready"]
        noticed = sum(1 for n in nodes if n.billing == "spot" and in_key(n, zone) and n.state == "notified")
        views.append(ZoneView(name=zone, held=len(held), ready=sum(1 for n in held if is_ready(n)),
                              preempted=preempted.get(zone, 0), launch_failed=launch_failed.get(zone, 0),
                              noticed=noticed, price=_zone_price(pool, catalog, zone, node_type)))
    od = [n for n in nodes if n.billing == "on-demand" and n.state == "ready"]
    od_offers = catalog.offerings(pool.instance_types, pool.zones, "on-demand", pool.multi_zone)
    od_price = min((o.price for o in od_offers if node_type is None or o.instance_type == node_type),
                   default=min((o.price for o in od_offers), default=1.0))
    return Observation(target=target, zones=tuple(views), on_demand_held=len(od),
                       on_demand_ready=sum(1 for n in od if is_ready(n)), on_demand_price=od_price)


def _zone_price(pool: NodePoolSpec, catalog: Catalog, key: str, node_type: str | None) -> float:
    itype, zone = split_key(key)
    if itype is not None:
        return catalog.get(itype).price(zone, "spot")
    offers = [o for o in catalog.offerings(pool.instance_types, pool.zones, "spot", pool.multi_zone) if o.zone == zone]
    preferred = [o.price for o in offers if o.instance_type == node_type]
    return min(preferred or [o.price for o in offers] or [0.0])
