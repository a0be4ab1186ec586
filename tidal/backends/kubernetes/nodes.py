"""The cluster's Nodes as Tidal sees them: zone, billing, readiness and interruption signals (pure), followed by a watch.

A node "goes" when its provider or provisioner says so before it is gone: the providers' termination taints
(AWS Node Termination Handler, Karpenter's disruption, the cluster autoscaler's scale-down, GKE's impending
termination), a Node being deleted, or a Node that stops being Ready. Any of them is an interruption signal,
whatever the preset: a taint only one provider sets means the same on any cluster.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Mapping

from tidal.backends.kubernetes.informer import Informer
from tidal.backends.kubernetes.render import NodeLabels

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"

# Taint key -> what it says. Sources: aws-node-termination-handler's taints (README, "Node taints"),
# Karpenter's disruption taint (karpenter.sh/disrupted since v1; karpenter.sh/disruption before),
# the cluster autoscaler's ToBeDeletedByClusterAutoscaler, GKE's cloud.google.com/impending-node-termination
# (graceful node shutdown on Spot VMs), and Kubernetes' own out-of-service taint.
INTERRUPTION_TAINTS: Mapping[str, str] = {
    "aws-node-termination-handler/spot-itn": "spot interruption notice (AWS)",
    "aws-node-termination-handler/rebalance-recommendation": "rebalance recommendation (AWS)",
    "aws-node-termination-handler/scheduled-maintenance": "scheduled maintenance (AWS)",
    "aws-node-termination-handler/asg-lifecycle-termination": "Auto Scaling lifecycle termination (AWS)",
    "karpenter.sh/disrupted": "Karpenter is disrupting the node",
    "karpenter.sh/disruption": "Karpenter is disrupting the node",
    "ToBeDeletedByClusterAutoscaler": "the cluster autoscaler is removing the node",
    "cloud.google.com/impending-node-termination": "impending node termination (GKE)",
    "node.kubernetes.io/out-of-service": "the node is out of service",
}


class Billing(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"


@dataclass(frozen=True)
class NodeView:
    name: str
    zone: str
    billing: str          # spot, on-demand, or "" when the node carries neither of the preset's values
    instance_type: str
    labels: Mapping[str, str]
    ready: bool
    signal: str = ""      # why the node is going ("" while it is not)
    gpus: int = 0

    @property
    def usable(self) -> bool:
        return self.ready and not self.signal and bool(self.billing)


def billing_of(labels: Mapping[str, str], names: NodeLabels) -> str:
    value = labels.get(names.capacity_label)
    if value in names.spot_values:
        return Billing.SPOT
    if value == names.on_demand_value or (not names.on_demand_value and value is None):
        return Billing.ON_DEMAND
    return ""


def interruption(taints: list[tuple[str, str]], conditions: Mapping[str, str], deleting: bool,
                 unschedulable: bool) -> str:
    """Why the node is going, from its taints (key, value), its conditions (type -> status) and metadata."""
    if deleting:
        return "the Node is being deleted"
    for key, value in taints:
        if key in INTERRUPTION_TAINTS:
            return f"{INTERRUPTION_TAINTS[key]} ({key}{'=' + value if value else ''})"
    ready = conditions.get("Ready")
    if ready is not None and ready != "True":
        return f"the Node is not Ready (Ready={ready})"
    if unschedulable:
        return "the Node is cordoned (kubectl drain)"
    return ""


def node_view(node: Any, names: NodeLabels) -> NodeView:
    """A V1Node (the official client's model) as a NodeView."""
    meta, spec, status = node.metadata, node.spec, node.status
    labels = dict(meta.labels or {})
    conditions = {c.type: c.status for c in (status.conditions if status else None) or ()}
    taints = [(t.key, t.value or "") for t in (spec.taints if spec else None) or ()]
    signal = interruption(taints, conditions, bool(meta.deletion_timestamp), bool(spec and spec.unschedulable))
    allocatable = (status.allocatable if status else None) or {}
    try:
        gpus = int(allocatable.get("nvidia.com/gpu", "0"))
    except ValueError:
        gpus = 0
    return NodeView(name=meta.name, zone=labels.get(names.zone_label, ""), billing=billing_of(labels, names),
                    instance_type=labels.get(INSTANCE_TYPE_LABEL, ""), labels=labels,
                    ready=conditions.get("Ready") == "True", signal=signal, gpus=gpus)


class ClusterNodes:
    """The cluster's Nodes, listed once and then followed by a watch (no polling)."""

    def __init__(self, core: Any, names: NodeLabels, cond: threading.Condition | None = None) -> None:
        self.names = names

        @functools.wraps(core.list_node)  # the watch reads the return type from the docstring
        def list_nodes(_namespace, **kwargs):
            return core.list_node(**kwargs)

        self.informer = Informer(list_nodes, "", "", "Nodes", cond)

    def start(self) -> "ClusterNodes":
        self.informer.start()
        return self

    def views(self, fail_fast: bool = False) -> dict[str, NodeView]:
        return self.snapshot(fail_fast)[0]

    def snapshot(self, fail_fast: bool = False) -> tuple[dict[str, NodeView], frozenset[str]]:
        """The Nodes now, and the names the watch has seen deleted."""
        objects, deleted = self.informer.snapshot(fail_fast=fail_fast)
        return {name: node_view(obj, self.names) for name, obj in objects.items()}, deleted

    @property
    def changes(self) -> int:
        return self.informer.changes

    def stop(self) -> None:
        self.informer.stop()
