"""Placement: selector, CPU, memory and GPUs decide where a replica goes; what fits nowhere is pending."""

import pytest

from tidal.scheduling import Bind, NodeInfo, ReplicaRequest, Resources, nodes_needed, schedule

GPU_NODE = Resources(cpu=4, memory_mib=15 * 1024, gpus=1)
CPU_NODE = Resources(cpu=2, memory_mib=4096, gpus=0)
TF = {"inference": "tensorflow"}


def node(name, labels=TF, size=GPU_NODE, schedulable=True):
    return NodeInfo(name, labels, size, schedulable)


def req(name, selector=TF, cpu=1.0, mem=512.0, gpus=0):
    return ReplicaRequest(name, selector, Resources(cpu, mem, gpus))


CASES = [
    # (id, requests, nodes, used, binds, pending)
    ("selector mismatch is pending", [req("r1", {"inference": "pytorch"})], [node("n1")], {}, [], ["r1"]),
    ("no selector goes anywhere", [req("r1", {})], [node("n1", labels={})], {}, [("r1", "n1")], []),
    ("one GPU each: 2 replicas, 2 GPU nodes", [req("r1", gpus=1), req("r2", gpus=1)],
     [node("n1"), node("n2")], {}, [("r1", "n1"), ("r2", "n2")], []),
    ("one GPU each: 3rd replica has no GPU left", [req("r1", gpus=1), req("r2", gpus=1), req("r3", gpus=1)],
     [node("n1"), node("n2")], {}, [("r1", "n1"), ("r2", "n2")], ["r3"]),
    ("GPU asked on a CPU node: pending", [req("r1", gpus=1)], [node("c1", size=CPU_NODE)], {}, [], ["r1"]),
    # 2 CPUs: 1.5 used + 1 asked > 2
    ("CPU exhausted by what is used", [req("r1", cpu=1)], [node("c1", size=CPU_NODE)],
     {"c1": Resources(1.5, 0, 0)}, [], ["r1"]),
    # 4096 MiB: 3800 used + 512 asked > 4096
    ("memory exhausted", [req("r1", cpu=0.1, mem=512)], [node("c1", size=CPU_NODE)],
     {"c1": Resources(0, 3800, 0)}, [], ["r1"]),
    ("a node under notice takes nothing", [req("r1")], [node("n1", schedulable=False)], {}, [], ["r1"]),
    # most allocated wins: n2 already half used, so r1 packs there and n1 stays empty
    ("bin packing prefers the fuller node", [req("r1", cpu=1, mem=0)],
     [node("n1", size=CPU_NODE), node("n2", size=CPU_NODE)], {"n2": Resources(1, 0, 0)}, [("r1", "n2")], []),
    ("ties go to the lowest name", [req("r1")], [node("n2"), node("n1")], {}, [("r1", "n1")], []),
    # n1 is fuller, but its pool is shedding it: the replica goes to n2
    ("a node the pool is shrinking comes last", [req("r1", cpu=1, mem=0)],
     [NodeInfo("n1", TF, CPU_NODE, preferred=False), node("n2", size=CPU_NODE)], {"n1": Resources(1, 0, 0)},
     [("r1", "n2")], []),
    ("a shrinking node still takes what fits nowhere else", [req("r1")],
     [NodeInfo("n1", TF, GPU_NODE, preferred=False)], {}, [("r1", "n1")], []),
    ("fractional CPUs add up exactly", [req("r1", cpu=0.1, mem=0), req("r2", cpu=0.2, mem=0)],
     [node("c", size=Resources(0.3, 100, 0))], {}, [("r1", "c"), ("r2", "c")], []),
]


@pytest.mark.parametrize("requests,nodes,used,binds,pending", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schedule(requests, nodes, used, binds, pending):
    placement = schedule(requests, nodes, used)
    assert placement.binds == [Bind(r, n) for r, n in binds]
    assert placement.pending == pending


NEEDED = [
    ("nothing pending", [], GPU_NODE, 0),
    ("one GPU replica per GPU node", [Resources(1, 512, 1)] * 3, GPU_NODE, 3),
    # 4 vCPU nodes, 1.5 CPU each: 2 per node -> 5 replicas need 3 nodes
    ("CPU packing", [Resources(1.5, 100, 0)] * 5, Resources(4, 8192, 0), 3),
    ("a replica larger than the node never fits", [Resources(8, 0, 0)], Resources(4, 8192, 0), -1),
]


@pytest.mark.parametrize("requests,size,expected", [c[1:] for c in NEEDED], ids=[c[0] for c in NEEDED])
def test_nodes_needed(requests, size, expected):
    assert nodes_needed(requests, size) == expected
