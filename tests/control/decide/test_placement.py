"""Placement decisions: pending replicas in, StartReplica (or staying pending) out; spread, holds, never back."""

import pytest

from tidal.control.commands import Note, StartReplica
from tidal.control.decide.placement import PlacementMemory, capacity_ran, place
from tidal.states import NodeState, ReplicaState as S

from .build import CAT, node, pool, replica, service, snap

CPU = {"cpu": 1.0, "memory_mib": 1024.0}


def starts(cmds):
    return {c.replica: c.node for c in cmds if isinstance(c, StartReplica)}


CASES = [
    # (id, services, pools, nodes, replicas, shedding, memory, expected {replica: node})
    ("spread over nodes: the node without a replica of the service",
     [service(**CPU)], [pool(max_nodes=2)], [node("n1"), node("n2")],
     [replica("a", S.READY, "n1"), replica("b", S.PENDING)], {}, None, {"b": "n2"}),
    ("spread over zones: an empty node in the other zone wins",
     [service(**CPU)], [pool(max_nodes=3)], [node("n1", "z-a"), node("n2", "z-a"), node("n3", "z-b")],
     [replica("a", S.READY, "n1"), replica("b", S.PENDING)], {}, None, {"b": "n3"}),
    ("bin packing still holds across services: the other service's node is fuller",
     [service(**CPU), service("t", **CPU)], [pool(max_nodes=2)], [node("n1"), node("n2")],
     [replica("a", S.READY, "n1", service="t"), replica("b", S.PENDING)], {}, None, {"b": "n1"}),
    ("only a shared node fits and the pool can grow: pending once (demand launches a node)",
     [service(**CPU)], [pool(max_nodes=2)], [node("n1")],
     [replica("a", S.READY, "n1"), replica("b", S.PENDING)], {}, None, {}),
    ("held, the capacity step has not seen it yet: still pending",
     [service(**CPU)], [pool(max_nodes=2)], [node("n1")],
     [replica("a", S.READY, "n1"), replica("b", S.PENDING)], {}, PlacementMemory(held=frozenset({"b"})), {}),
    ("held, and the capacity step has had its chance: it shares",
     [service(**CPU)], [pool(max_nodes=2)], [node("n1")],
     [replica("a", S.READY, "n1"), replica("b", S.PENDING)], {},
     capacity_ran(PlacementMemory(held=frozenset({"b"}))), {"b": "n1"}),
    ("the pool is at its maximum: it shares at once",
     [service(**CPU)], [pool(max_nodes=1)], [node("n1")],
     [replica("a", S.READY, "n1"), replica("b", S.PENDING)], {}, None, {"b": "n1"}),
    ("never back on the node a replica of its service is leaving (draining)",
     [service(**CPU)], [pool(max_nodes=1)], [node("n1")],
     [replica("a", S.DRAINING, "n1"), replica("b", S.PENDING)], {}, None, {}),
    ("never back on the node a replica of its service is leaving (noticed)",
     [service(**CPU)], [pool(max_nodes=2)], [node("n1"), node("n2")],
     [replica("a", S.NOTIFIED, "n1"), replica("b", S.PENDING)], {}, None, {"b": "n2"}),
    ("another service's leaving replica does not keep it off",
     [service(**CPU), service("t", **CPU)], [pool(max_nodes=1)], [node("n1")],
     [replica("a", S.DRAINING, "n1", service="t"), replica("b", S.PENDING)], {}, None, {"b": "n1"}),
    ("a cordoned node takes nothing",
     [service(**CPU)], [pool(max_nodes=2)], [node("n1", cordoned=1)], [replica("b", S.PENDING)], {}, None, {}),
    ("a node under notice takes nothing",
     [service(**CPU)], [pool(max_nodes=2)], [node("n1", state=NodeState.NOTIFIED)], [replica("b", S.PENDING)],
     {}, None, {}),
    ("a node its pool sheds is used last",
     [service(**CPU), service("t", **CPU)], [pool(max_nodes=2)], [node("n1"), node("n2")],
     [replica("x", S.READY, "n1", service="t"), replica("b", S.PENDING)], {"p": frozenset({"n1"})}, None,
     {"b": "n2"}),
    ("a node its pool sheds, and the pool can grow: pending (a node the plan keeps is launched for it)",
     [service(**CPU)], [pool(max_nodes=2)], [node("n1")], [replica("b", S.PENDING)], {"p": frozenset({"n1"})},
     None, {}),
    ("a node its pool sheds is used when nothing else fits, at the maximum",
     [service(**CPU)], [pool(max_nodes=1)], [node("n1")], [replica("b", S.PENDING)], {"p": frozenset({"n1"})},
     None, {"b": "n1"}),
    ("two pending replicas of one service go to two nodes",
     [service(**CPU)], [pool(max_nodes=2)], [node("n1"), node("n2")],
     [replica("a", S.PENDING), replica("b", S.PENDING)], {}, None, {"a": "n1", "b": "n2"}),
    ("a GPU each: the second has no GPU left",
     [service(gpus=1)], [pool(max_nodes=1, instance_types=["gpu.small"])], [node("g1", instance_type="gpu.small")],
     [replica("a", S.PENDING), replica("b", S.PENDING)], {}, None, {"a": "g1"}),
]


@pytest.mark.parametrize("services, pools, nodes, reps, shedding, memory, want", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_place(services, pools, nodes, reps, shedding, memory, want):
    cmds, _ = place(snap(services=services, pools=pools, nodes=nodes, replicas=reps), CAT, shedding,
                    memory or PlacementMemory())
    assert starts(cmds) == want


def test_a_replica_that_fits_nowhere_says_so_once():
    s = snap(services=[service(gpus=1, selector={"inference": "tensorflow"})], pools=[pool()], nodes=[node("n1")],
             replicas=[replica("b", S.PENDING)])
    cmds, mem = place(s, CAT, {}, PlacementMemory())
    assert [c.event.kind for c in cmds if isinstance(c, Note)] == ["FailedScheduling"]
    assert cmds[0].event.message == ("no node with labels {'inference': 'tensorflow'} has room for 1 GPU, 0 CPU, "
                                     "0 MiB: pending (the pool scales out if it can)")
    again, _ = place(s, CAT, {}, mem)
    assert again == []


def test_a_start_records_where_it_runs():
    s = snap(services=[service(cpu=1, memory_mib=1024)], pools=[pool()], nodes=[node("n1")],
             replicas=[replica("b", S.PENDING)])
    (cmd,), _ = place(s, CAT, {}, PlacementMemory())
    assert (cmd.event.kind, cmd.event.message) == ("ReplicaScheduled", "started on node n1 at {endpoint}")


def test_without_a_provisioner_nothing_waits_for_a_node():
    s = snap(services=[service(cpu=1, memory_mib=1024)], pools=[pool(max_nodes=3)], nodes=[node("n1")],
             replicas=[replica("a", S.READY, "n1"), replica("b", S.PENDING)])
    cmds, _ = place(s, CAT, {}, PlacementMemory(), can_grow=False)
    assert starts(cmds) == {"b": "n1"}
