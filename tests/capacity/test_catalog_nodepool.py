"""Instance catalog, the pool's demand, Plan -> Launch/Terminate, and cost accounting (pure, fake times)."""

import json

import pytest

from tidal.capacity.catalog import Catalog, InstanceType, load_catalog
from tidal.capacity.cost import NodeLife, summarize
from tidal.capacity.nodepool import Launch, PoolNode, Terminate, demand, observe, plan_decisions, pool_zones
from tidal.capacity.policies.types import Plan
from tidal.errors import InvalidArgument
from tidal.scheduling import Resources
from tidal.spec import NodePoolSpec

CAT = Catalog([
    InstanceType(name="gpu.small", vcpu=4, memory_gib=16, gpus=1, on_demand_price=1.0,
                 spot_prices={"z-a": 0.30, "z-b": 0.25, "z-c": 0.40}),
    InstanceType(name="gpu.big", vcpu=8, memory_gib=32, gpus=2, on_demand_price=3.0,
                 spot_prices={"z-a": 0.90, "z-b": 1.00}),
    InstanceType(name="cpu.small", vcpu=2, memory_gib=4, gpus=0, on_demand_price=0.1,
                 spot_prices={"z-a": 0.02}),
])
POOL = NodePoolSpec(name="p", labels={"inference": "tensorflow"}, spot=True, on_demand_percentage=30,
                    compensate_with_on_demand=True, multi_zone="cost-optimized",
                    instance_types=["gpu.small", "gpu.big"], max_nodes=10, scale_in_after_seconds=60)
GPU = Resources(1, 1024, 1)
NOW = 1000.0


def n(name, billing="spot", zone="z-b", state="ready", empty_since=None, itype="gpu.small", launched=0.0):
    return PoolNode(name, zone, itype, billing, state, launched, empty_since)


def test_default_catalog_loads_and_user_file_overrides(tmp_path):
    cat = load_catalog()
    assert "ecs.gn6i-c4g1.xlarge" in cat.types and cat.types["ecs.gn6i-c4g1.xlarge"].gpus == 1
    user = tmp_path / "catalog.json"
    user.write_text(json.dumps({"instance_types": [
        {"name": "ecs.gn6i-c4g1.xlarge", "vcpu": 4, "memory_gib": 15, "gpus": 1, "on_demand_price": 9.0,
         "spot_prices": {"z": 1.0}},
        {"name": "mine.1", "vcpu": 1, "memory_gib": 1, "on_demand_price": 0.01}]}))
    cat = load_catalog(user)
    assert cat.types["ecs.gn6i-c4g1.xlarge"].on_demand_price == 9.0 and "mine.1" in cat.types
    user.write_text('{"instance_types": [{"name": "x", "vcpu": -1, "memory_gib": 1, "on_demand_price": 1}]}')
    with pytest.raises(InvalidArgument, match="vcpu"):
        load_catalog(user)


def test_cost_optimized_order_is_vcpu_unit_price():
    offers = CAT.offerings(["gpu.small", "gpu.big"], [], "spot", "cost-optimized")
    # per vCPU: small z-b .0625, small z-a .075, small z-c .10, big z-a .1125, big z-b .125
    assert [(o.instance_type, o.zone) for o in offers] == [
        ("gpu.small", "z-b"), ("gpu.small", "z-a"), ("gpu.small", "z-c"), ("gpu.big", "z-a"), ("gpu.big", "z-b")]
    assert pool_zones(POOL, CAT) == ["z-b", "z-a", "z-c"]
    with pytest.raises(InvalidArgument, match="unknown instance type"):
        CAT.validate_pool(["nope"], [])


DEMAND = [
    # (id, nodes, pending, expected target)
    ("empty pool, 3 GPU replicas pending: 3 nodes", [], [GPU] * 3, 3),
    ("2 busy nodes, 1 pending: 3", [n("a"), n("b")], [GPU], 3),
    # empty for 100 s >= 60 s: it goes (2 - 1)
    ("an empty node past the delay is not needed", [n("a"), n("b", empty_since=NOW - 100)], [], 1),
    # kept by the diff until the delay, but the workload does not need it
    ("an empty node inside the delay does not count", [n("a"), n("b", empty_since=NOW - 10)], [], 1),
    ("min keeps the floor", [], [], 0),
    ("a node under notice does not count", [n("a"), n("b", state="notified")], [GPU], 2),
    ("max caps the target", [], [GPU] * 20, 10),
    # the CPU node (empty, inside or past the delay) cannot take the GPU replica: 1 held + 1 new
    ("an empty CPU node is no room for a pending GPU replica", [n("c", itype="cpu.small", empty_since=NOW - 10)],
     [GPU], 2),
    ("nor when it is past the delay", [n("c", itype="cpu.small", empty_since=NOW - 100)], [GPU], 2),
    ("busy CPU node + pending GPU replica: 2", [n("c", itype="cpu.small")], [GPU], 2),
    # nothing pending: the empty CPU node is just empty (1 busy GPU node)
    ("without pending replicas an empty node does not count", [n("g"), n("c", itype="cpu.small", empty_since=NOW - 10)],
     [], 1),
]


@pytest.mark.parametrize("nodes,pending,target", [c[1:] for c in DEMAND], ids=[c[0] for c in DEMAND])
def test_demand(nodes, pending, target):
    assert demand(POOL, nodes, pending, CAT, NOW).target == target


def test_demand_picks_a_type_that_fits():
    # 2 GPUs do not fit gpu.small: gpu.big is the node type
    d = demand(POOL, [], [Resources(1, 1024, 2)], CAT, NOW)
    assert (d.target, d.node_type) == (1, "gpu.big")
    d = demand(POOL, [], [Resources(1, 1024, 3)], CAT, NOW)
    assert (d.target, d.node_type) == (0, None)


ZONES = ["z-b", "z-a", "z-c"]
FEWER_B = "the plan holds fewer spot nodes in z-b"
# On-demand costs the same in every zone, so its first offering is the first zone by name (z-a).
DIFF = [
    ("launch the plan from nothing", Plan(1, (2, 0, 0)), [], [
        Launch("p", "z-a", "gpu.small", "on-demand"),
        Launch("p", "z-b", "gpu.small", "spot"), Launch("p", "z-b", "gpu.small", "spot")]),
    ("already there: nothing", Plan(1, (1, 0, 0)), [n("o", "on-demand"), n("s")], []),
    # scale-in delay 60 s: s2 (70 s) and s3 (100 s) may go, longest-empty first; s4 (5 s) stays
    ("fewer spot in z-b: the longest-empty go first, busy ones stay", Plan(0, (1, 0, 0)),
     [n("s1"), n("s2", empty_since=NOW - 70), n("s3", empty_since=NOW - 100), n("s4", empty_since=NOW - 5)],
     [Terminate("s3", FEWER_B), Terminate("s2", FEWER_B)]),
    ("a node empty for less than the delay stays", Plan(0, (1, 0, 0)), [n("s1"), n("s2", empty_since=NOW - 5)], []),
    ("a drained (cordoned) empty node goes at once", Plan(0, (1, 0, 0)),
     [n("s1"), PoolNode("s2", "z-b", "gpu.small", "spot", "ready", 0.0, NOW - 1, cordoned=True)],
     [Terminate("s2", FEWER_B)]),
    ("busy nodes are never taken to fix the mix", Plan(0, (1, 0, 0)), [n("s1"), n("s2")], []),
    ("spot in a zone the plan does not name is excess", Plan(0, (1, 0, 0)),
     [n("s1"), n("s9", zone="z-x", empty_since=NOW - 61)], [Terminate("s9", "the plan holds fewer spot nodes in z-x")]),
    ("the plan moved a node from spot to on-demand", Plan(1, (0, 0, 0)), [n("s1", empty_since=NOW - 100)],
     [Launch("p", "z-a", "gpu.small", "on-demand"), Terminate("s1", FEWER_B)]),
]


@pytest.mark.parametrize("plan,nodes,expected", [c[1:] for c in DIFF], ids=[c[0] for c in DIFF])
def test_plan_decisions(plan, nodes, expected):
    assert plan_decisions(POOL, plan, ZONES, nodes, CAT, NOW, "gpu.small") == expected


def test_total_kept_when_the_kind_to_remove_is_busy():
    # plan: 0 on-demand, 1 spot; o1 (busy, on-demand) cannot go; s2 expired-empty spot goes for the total.
    nodes = [n("o1", "on-demand"), n("s2", empty_since=NOW - 100)]
    assert plan_decisions(POOL, Plan(0, (1, 0, 0)), ZONES, nodes, CAT, NOW, "gpu.small") == [
        Terminate("s2", "empty past the scale-in delay")]


def test_unavailable_offering_is_skipped():
    out = plan_decisions(POOL, Plan(0, (1, 0, 0)), ZONES, [], CAT, NOW, "gpu.small",
                         unavailable=frozenset({("gpu.small", "z-b", "spot")}))
    assert out == [Launch("p", "z-b", "gpu.big", "spot")]  # the next type in order that holds the replica
    out = plan_decisions(POOL, Plan(0, (0, 1, 0)), ZONES, [], CAT, NOW, "gpu.small",
                         unavailable=frozenset({("gpu.small", "z-a", "spot")}))
    assert out == [Launch("p", "z-a", "gpu.big", "spot")]


def test_observe_counts_per_zone():
    nodes = [n("s1", launched=NOW - 500), n("s2", launched=NOW - 1), n("s3", zone="z-a", state="notified"),
             n("o1", "on-demand", launched=NOW - 500)]
    obs = observe(POOL, CAT, nodes, 4, ZONES, "gpu.small", {"z-a": 1}, {}, 30.0, NOW)
    zb, za, zc = obs.zones
    assert (zb.held, zb.ready, zb.price) == (2, 1, 0.25)
    assert (za.held, za.noticed, za.preempted) == (0, 1, 1)
    assert (obs.on_demand_held, obs.on_demand_ready, obs.on_demand_price) == (1, 1, 1.0)


def test_cost_per_second_by_billing_and_savings():
    lives = [NodeLife("s", "gpu.small", "z-b", "spot", 0.0, 3600.0),           # 1 h x 0.25
             NodeLife("o", "gpu.small", "z-a", "on-demand", 0.0, None),        # 2 h (until now) x 1.0
             NodeLife("x", "gone.type", "z-a", "spot", 0.0, 10.0)]             # unknown type: left out
    s = summarize(lives, CAT, 7200.0)
    assert s.spot_cost == pytest.approx(0.25) and s.on_demand_cost == pytest.approx(2.0)
    assert s.all_on_demand == pytest.approx(3.0)  # 1 h + 2 h at 1.0
    assert s.savings == pytest.approx(0.75) and s.savings_ratio == pytest.approx(0.25)


def test_busy_excess_node_is_drained_onto_an_empty_kept_node():
    # plan 0 od / 2 spot; we hold a busy od node and 2 spot (one empty, fresh): the od node's replicas move.
    from tidal.capacity.nodepool import Drain
    nodes = [n("o1", "on-demand"), n("s1"), n("s2", empty_since=NOW - 1)]
    out = plan_decisions(POOL, Plan(0, (2, 0, 0)), ZONES, nodes, CAT, NOW, "gpu.small")
    assert out == [Drain("o1", "the plan holds fewer on-demand nodes: its replicas move to a node the plan keeps")]
    # already moving (cordoned): no second drain
    nodes[0] = PoolNode("o1", "z-b", "gpu.small", "on-demand", "ready", 0.0, None, cordoned=True)
    assert plan_decisions(POOL, Plan(0, (2, 0, 0)), ZONES, nodes, CAT, NOW, "gpu.small") == []
    # no empty node to move to: nothing (the spot launch comes first)
    assert plan_decisions(POOL, Plan(0, (2, 0, 0)), ZONES, [n("o1", "on-demand"), n("s1")], CAT, NOW,
                          "gpu.small") == [Launch("p", "z-b", "gpu.small", "spot")]


def test_no_drain_while_an_empty_node_of_the_excess_kind_waits_out_its_delay():
    # od excess 1, but od2 is already empty (10 s of 60): it will go by itself; moving o1's replicas is churn.
    nodes = [n("o1", "on-demand"), n("o2", "on-demand", empty_since=NOW - 10), n("s1"), n("s2", empty_since=NOW - 1)]
    assert plan_decisions(POOL, Plan(1, (2, 0, 0)), ZONES, nodes, CAT, NOW, "gpu.small") == []


def test_shedding_names_the_nodes_of_kinds_in_excess():
    from tidal.capacity.nodepool import shedding
    nodes = [n("o1", "on-demand"), n("o2", "on-demand"), n("s1"), n("s2", zone="z-a"), n("s3", state="notified")]
    # plan: 1 od (2 held: both shed), z-b 1 spot (1 held, ok), z-a 0 (1 held: shed); a noticed node is not live
    assert shedding(Plan(1, (1, 0, 0)), ZONES, nodes) == {"o1", "o2", "s2"}
    assert shedding(Plan(2, (1, 1, 0)), ZONES, nodes) == set()
