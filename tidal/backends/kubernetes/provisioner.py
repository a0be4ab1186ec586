"""Node pools on a cluster: Tidal's capacity policy claims the cluster's Nodes; the cluster's provisioner makes them.

Tidal does not create or delete Nodes on Kubernetes. A pool's "launch" of a spot node in zone Z claims a ready
Node of the cluster that is spot, in Z, carries the pool's labels (and its instance type, when the Node says
one) and no other pool holds; its "termination" releases the claim (the cluster's provisioner consolidates an
empty Node itself). When no such Node is free, the launch is still accepted as a provisional node: the replicas
placed on it become pods of their (billing, zone) slice that the cluster's provisioner (Karpenter, a cluster
autoscaler) makes a Node for. If it makes none, those pods stay unschedulable, and after a bounded time
(tidal.control.decide.cluster) that counts as the launch refused, so the policy falls back exactly as it does
locally when a zone has no spot capacity (and an on-demand launch tries the pool's next zone).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tidal.backends.base import NodeLaunch, ReplicaLaunch
from tidal.backends.kubernetes.nodes import ClusterNodes, NodeView
from tidal.backends.kubernetes.render import Placement
from tidal.capacity.catalog import Catalog, InstanceType
from tidal.errors import CapacityUnavailable, NotFound

PROVISIONAL = "provisional"


@dataclass(frozen=True)
class Claim:
    node: str
    pool: str
    billing: str
    zone: str
    instance_type: str
    cluster_node: bool  # False: provisional (no Node of the cluster yet)


def free_node(views: dict[str, NodeView], claimed: set[str], launch: NodeLaunch, pool_labels: dict[str, str]) -> str | None:
    """The cluster Node a launch claims (pure): usable, of its billing and zone, with the pool's labels."""
    fits = [v for v in views.values()
            if v.usable and v.name not in claimed and v.billing == launch.billing and v.zone == launch.zone
            and all(v.labels.get(k) == val for k, val in pool_labels.items())
            and (not v.instance_type or v.instance_type == launch.instance_type)]
    return min(fits, key=lambda v: v.name).name if fits else None


def cluster_catalog(base: Catalog, views: dict[str, NodeView]) -> Catalog:
    """The catalog with the cluster's zones: an instance type is offered where Nodes of it are, or (a type the
    cluster's provisioner may make anywhere) in every zone the cluster has. Prices stay the catalog's."""
    all_zones = sorted({v.zone for v in views.values() if v.zone})
    if not all_zones:
        return base
    types = []
    for t in base.types.values():
        zones = sorted({v.zone for v in views.values() if v.zone and v.instance_type == t.name}) or all_zones
        mean = (sum(t.spot_prices.values()) / len(t.spot_prices)) if t.spot_prices else t.on_demand_price
        types.append(InstanceType(**{**t.model_dump(), "spot_prices": {z: t.spot_prices.get(z, mean) for z in zones}}))
    return Catalog(types)


class KubernetesProvisioner:
    """Claims and releases the cluster's Nodes for Tidal's node pools (see the module's note)."""

    def __init__(self, nodes: ClusterNodes, pool_labels) -> None:
        self.nodes = nodes
        self.pool_labels = pool_labels  # pool name -> its labels (the store's, read when a launch comes)
        self._lock = threading.Lock()
        self.claims: dict[str, Claim] = {}

    def launch_node(self, node: NodeLaunch, spot_held_in_zone: int, now: float) -> str:
        """Claim a free Node of the cluster (its name is the node's), or accept a provisional one."""
        views = self.nodes.views()
        try:
            labels = self.pool_labels(node.pool)
        except NotFound:
            raise CapacityUnavailable(f"node pool {node.pool} was deleted meanwhile") from None
        with self._lock:
            name = free_node(views, set(self.claims), node, labels)
            claim = Claim(name or node.name, node.pool, node.billing, node.zone, node.instance_type, name is not None)
            self.claims[claim.node] = claim
            return claim.node

    def terminate_node(self, name: str) -> None:
        with self._lock:
            self.claims.pop(name, None)

    def adopt_node(self, node: NodeLaunch) -> None:
        views = self.nodes.views()
        with self._lock:
            self.claims[node.name] = Claim(node.name, node.pool, node.billing, node.zone, node.instance_type,
                                           node.name in views)

    def spot_capacity(self, pool: str, zone: str, now: float) -> int | None:
        return None  # the cluster says no by leaving pods unschedulable, not ahead of time

    def placement(self, launch: ReplicaLaunch) -> Placement:
        """A replica's slice: the billing and zone of the node the control plane placed it on."""
        with self._lock:
            claim = self.claims.get(launch.node)
        if claim is None:
            raise ValueError(f"node {launch.node} is not one of Tidal's node pools' nodes")
        return Placement(claim.billing, claim.zone)

    def is_provisional(self, name: str) -> bool:
        with self._lock:
            claim = self.claims.get(name)
        return claim is not None and not claim.cluster_node
