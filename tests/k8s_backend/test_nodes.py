"""Nodes as Tidal sees them (pure): billing and zone per preset, interruption signals, claims, the cluster's catalog."""

from __future__ import annotations

import pytest

pytest.importorskip("kubernetes", reason="the Kubernetes client is missing (pip install tidal[kubernetes])")
from kubernetes.client import V1Node, V1NodeCondition, V1NodeSpec, V1NodeStatus, V1ObjectMeta, V1Taint  # noqa: E402

from tidal.backends.base import NodeLaunch  # noqa: E402
from tidal.backends.kubernetes.nodes import NodeView, interruption, node_view  # noqa: E402
from tidal.backends.kubernetes.presets import preset  # noqa: E402
from tidal.backends.kubernetes.provisioner import cluster_catalog, free_node  # noqa: E402
from tidal.capacity.catalog import Catalog, InstanceType  # noqa: E402


@pytest.mark.parametrize("taints,conditions,deleting,cordoned,expected", [
    ([], {"Ready": "True"}, False, False, ""),
    ([("aws-node-termination-handler/spot-itn", "")], {"Ready": "True"}, False, False, "spot interruption notice"),
    ([("karpenter.sh/disrupted", "")], {"Ready": "True"}, False, False, "Karpenter"),
    ([("cloud.google.com/impending-node-termination", "true")], {"Ready": "True"}, False, False, "GKE"),
    ([("ToBeDeletedByClusterAutoscaler", "1700000000")], {"Ready": "True"}, False, False, "cluster autoscaler"),
    ([], {"Ready": "True"}, True, False, "being deleted"),
    ([], {"Ready": "Unknown"}, False, False, "not Ready"),
    ([], {"Ready": "True"}, False, True, "cordoned"),
    ([("example.com/other", "x")], {"Ready": "True"}, False, False, ""),
])
def test_interruption_signals(taints, conditions, deleting, cordoned, expected):
    got = interruption(taints, conditions, deleting, cordoned)
    assert (expected in got) if expected else got == ""


def node(name="n1", labels=None, taints=(), ready="True", gpus=None) -> V1Node:
    alloc = {"cpu": "4"} | ({"nvidia.com/gpu": gpus} if gpus else {})
    return V1Node(metadata=V1ObjectMeta(name=name, labels=labels or {}),
                  spec=V1NodeSpec(taints=[V1Taint(key=k, value=v, effect="NoSchedule") for k, v in taints]),
                  status=V1NodeStatus(conditions=[V1NodeCondition(type="Ready", status=ready)], allocatable=alloc))


@pytest.mark.parametrize("provider,labels,billing", [
    ("karpenter", {"karpenter.sh/capacity-type": "spot"}, "spot"),
    ("karpenter", {"karpenter.sh/capacity-type": "on-demand"}, "on-demand"),
    ("karpenter", {}, ""),  # the preset's label missing: not a node a pool can claim
    ("eks", {"eks.amazonaws.com/capacityType": "SPOT"}, "spot"),
    ("gke", {"cloud.google.com/gke-spot": "true"}, "spot"),
    ("gke", {}, "on-demand"),
    ("aks", {"kubernetes.azure.com/scalesetpriority": "spot"}, "spot"),
])
def test_node_view_billing_zone(provider, labels, billing):
    v = node(labels={**labels, "topology.kubernetes.io/zone": "zone-a",
                     "node.kubernetes.io/instance-type": "t1"}, gpus="1")
    view = node_view(v, preset(provider))
    assert (view.billing, view.zone, view.instance_type, view.gpus, view.ready) == (billing, "zone-a", "t1", 1, True)
    assert view.usable == bool(billing)


def nv(name, billing, zone, ready=True, signal="", labels=None, itype="t1") -> NodeView:
    return NodeView(name, zone, billing, itype, {"inference": "tensorflow", **(labels or {})}, ready, signal)


VIEWS = {v.name: v for v in (
    nv("b", "spot", "zone-a"), nv("a", "spot", "zone-a"), nv("c", "spot", "zone-b"),
    nv("d", "spot", "zone-a", signal="going"), nv("e", "spot", "zone-a", ready=False),
    nv("f", "on-demand", "zone-a"), nv("g", "spot", "zone-a", itype="t2"))}


@pytest.mark.parametrize("claimed,billing,zone,labels,expected", [
    (set(), "spot", "zone-a", {"inference": "tensorflow"}, "a"),
    ({"a"}, "spot", "zone-a", {}, "b"),
    ({"a", "b"}, "spot", "zone-a", {}, None),  # d is going, e not ready, g another type
    (set(), "on-demand", "zone-a", {}, "f"),
    (set(), "spot", "zone-a", {"inference": "pytorch"}, None),
    (set(), "spot", "zone-c", {}, None),
])
def test_free_node(claimed, billing, zone, labels, expected):
    launch = NodeLaunch("pool-spot-1", "pool", zone, "t1", billing, 0)
    assert free_node(VIEWS, claimed, launch, labels) == expected


def test_cluster_catalog_uses_the_cluster_zones():
    base = Catalog([InstanceType(name="t1", vcpu=4, memory_gib=16, on_demand_price=1.0,
                                 spot_prices={"cn-a": 0.2, "cn-b": 0.4}),
                    InstanceType(name="t3", vcpu=4, memory_gib=16, on_demand_price=1.0, spot_prices={"cn-a": 0.3})])
    cat = cluster_catalog(base, VIEWS)
    assert cat.get("t1").zones == ["zone-a", "zone-b"] and cat.get("t1").price("zone-a", "spot") == pytest.approx(0.3)
    assert cat.get("t3").zones == ["zone-a", "zone-b"]  # no Node of it yet: wherever the cluster has zones
    assert cluster_catalog(base, {}) is base


class FakeNodes:
    def __init__(self, views):
        self.current = views

    def views(self, fail_fast=False):
        return self.current


def test_provisioner_claims_then_goes_provisional():
    from tidal.backends.base import ReplicaLaunch
    from tidal.backends.kubernetes.provisioner import KubernetesProvisioner
    from tidal.backends.kubernetes.render import Placement
    nodes = FakeNodes(VIEWS)
    prov = KubernetesProvisioner(nodes, lambda pool: {"inference": "tensorflow"})
    launch = NodeLaunch("pool-spot-1", "pool", "zone-a", "t1", "spot", 0)
    assert prov.launch_node(launch, 0, 0.0) == "a"
    assert prov.launch_node(NodeLaunch("pool-spot-2", "pool", "zone-a", "t1", "spot", 0), 1, 0.0) == "b"
    # no free spot Node left in zone-a: accepted as provisional, under Tidal's name (the cluster may make one)
    assert prov.launch_node(NodeLaunch("pool-spot-3", "pool", "zone-a", "t1", "spot", 0), 2, 0.0) == "pool-spot-3"
    assert prov.is_provisional("pool-spot-3") and not prov.is_provisional("a")
    replica = ReplicaLaunch("r1", "bert", "pool-spot-3", "bert", "s3://m", "latest", 0)
    assert prov.placement(replica) == Placement("spot", "zone-a")
    prov.terminate_node("a")  # released: the next launch claims it again
    assert prov.launch_node(NodeLaunch("pool-spot-4", "pool", "zone-a", "t1", "spot", 0), 2, 0.0) == "a"
    with pytest.raises(ValueError, match="not one of Tidal's"):
        prov.placement(ReplicaLaunch("r2", "bert", "elsewhere", "bert", "s3://m", "latest", 0))
    # after a restart: the store's nodes are claimed again; one no Node stands for is provisional
    again = KubernetesProvisioner(nodes, lambda pool: {})
    again.adopt_node(NodeLaunch("b", "pool", "zone-a", "t1", "spot", 0))
    again.adopt_node(NodeLaunch("pool-spot-3", "pool", "zone-a", "t1", "spot", 0))
    assert not again.is_provisional("b") and again.is_provisional("pool-spot-3")
    assert again.spot_capacity("pool", "zone-a", 0.0) is None
