"""The cluster step (tidal.control.decide.cluster), a pure decision on a snapshot and a fake `now`: interruption
signals become notices that replace replicas first, Nodes that left end their claims, and pods that find no
spot Node for a bounded time count as a refused launch."""

from __future__ import annotations

import pytest

from tidal.control.commands import FailReplica, NotifyNode, NotifyReplica, RefuseLaunch, StopReplica, TerminateNode
from tidal.control.decide.cluster import ClusterMemory, ClusterView, decide, move
from tidal.control.snapshot import Snapshot
from tidal.control.store import NodeRow, ReplicaRow
from tidal.spec import NodePoolSpec
from tidal.states import NodeState, ReplicaState as S

NOW = 1_000.0
POOL = NodePoolSpec(name="gpu-pool", spot=True, spot_remedy=True, notice_seconds=120, instance_types=["t1"])
NODES = (
    NodeRow("spot-a-1", "gpu-pool", "zone-a", "t1", "spot", NodeState.READY, 0.0),
    NodeRow("spot-b-1", "gpu-pool", "zone-b", "t1", "spot", NodeState.READY, 0.0),
    NodeRow("od-a-1", "gpu-pool", "zone-a", "t1", "on-demand", NodeState.READY, 0.0),
    NodeRow("gpu-pool-spot-9", "gpu-pool", "zone-c", "t1", "spot", NodeState.READY, 900.0),  # provisional
)


def snap(*replicas: ReplicaRow, nodes=NODES) -> Snapshot:
    return Snapshot(now=NOW, pools={"gpu-pool": POOL}, nodes=nodes, replicas=replicas)


def rep(rid: str, node: str, state=S.READY) -> ReplicaRow:
    return ReplicaRow(rid, "bert", "r1", node, state, 0.0)


PRESENT = frozenset({"spot-a-1", "spot-b-1", "od-a-1", "other-1"})
PROVISIONAL = frozenset({"gpu-pool-spot-9"})


def view(present=PRESENT, **kw) -> ClusterView:
    return ClusterView(present, **{"provisional": PROVISIONAL, **kw})


def kinds(cmds) -> list[tuple[str, str]]:
    out = []
    for c in cmds:
        key = getattr(c, "replica", None) or getattr(c, "node", None) or getattr(c, "pool", "")
        out.append((type(c).__name__, key))
    return out


CASES = [
    pytest.param(snap(rep("r1", "spot-a-1"), rep("r2", "od-a-1")), view(PRESENT), ClusterMemory(), [],
                 id="quiet-cluster-nothing"),
    pytest.param(snap(rep("r1", "spot-a-1"), rep("r2", "spot-a-1", S.STARTING)),
                 view(PRESENT, signals={"spot-a-1": "spot interruption notice (AWS)"}), ClusterMemory(),
                 [("NotifyNode", "spot-a-1"), ("NotifyReplica", "r1"), ("StopReplica", "r2")],
                 id="signal-notifies-node-ready-replica-replaced-first-starting-one-stops"),
    pytest.param(snap(rep("r1", "spot-a-1"), nodes=(NODES[0].__class__(**{**NODES[0].__dict__,
                                                                            "state": NodeState.NOTIFIED}),)),
                 view(PRESENT, signals={"spot-a-1": "x"}), ClusterMemory(), [],
                 id="already-notified-once-only"),
    pytest.param(snap(rep("r1", "spot-b-1")), view(PRESENT - {"spot-b-1"}), ClusterMemory(),
                 [("StopReplica", "r1"), ("TerminateNode", "spot-b-1")], id="node-gone-claim-ends"),
    pytest.param(snap(rep("r1", "od-a-1")),
                 view(PRESENT, signals={"other-1": "the Node is being deleted"}, pod_nodes={"r1": "other-1"}),
                 ClusterMemory(), [("Note", ""), ("NotifyReplica", "r1")], id="pod-on-signalled-node-elsewhere-replaced"),
    pytest.param(snap(rep("r1", "od-a-1")), view(pod_nodes={"r1": "vanished-1"}, deleted=frozenset({"vanished-1"})),
                 ClusterMemory(), [("StopReplica", "r1")], id="pod-on-a-deleted-node-stops-and-is-replaced"),
    pytest.param(snap(rep("r1", "od-a-1")), view(pod_nodes={"r1": "new-1"}), ClusterMemory(), [],
                 id="pod-on-a-node-the-watch-has-not-shown-yet-is-fine"),
    pytest.param(snap(rep("r9", "gpu-pool-spot-9", S.STARTING), rep("r8", "gpu-pool-spot-9", S.STARTING)),
                 view(unschedulable={"r9": "no node", "r8": "no node"}), ClusterMemory({"r9": 0.0, "r8": 0.0}),
                 [("FailReplica", "r9"), ("FailReplica", "r8"), ("RefuseLaunch", "gpu-pool"),
                  ("TerminateNode", "gpu-pool-spot-9")], id="one-refusal-per-node-however-many-pods"),
    pytest.param(snap(rep("r9", "gpu-pool-spot-9", S.STARTING)),
                 view(unschedulable={"r9": "0/4 nodes are available"}),
                 ClusterMemory(), [], id="unschedulable-starts-the-clock"),
    pytest.param(snap(rep("r9", "gpu-pool-spot-9", S.STARTING)),
                 view(unschedulable={"r9": "0/4 nodes are available"}),
                 ClusterMemory({"r9": NOW - 59}), [], id="unschedulable-not-long-enough"),
    pytest.param(snap(rep("r9", "gpu-pool-spot-9", S.STARTING)),
                 view(unschedulable={"r9": "0/4 nodes are available"}),
                 ClusterMemory({"r9": NOW - 60}),
                 [("FailReplica", "r9"), ("RefuseLaunch", "gpu-pool"), ("TerminateNode", "gpu-pool-spot-9")],
                 id="unschedulable-bound-reached-refused-launch"),
    pytest.param(snap(rep("r3", "od-a-1", S.STARTING)),
                 view(PRESENT, unschedulable={"r3": "Insufficient cpu"}), ClusterMemory({"r3": 0.0}),
                 [("FailReplica", "r3"), ("RefuseLaunch", "gpu-pool"), ("TerminateNode", "od-a-1")],
                 id="on-demand-unschedulable-refused-too-the-next-zone-is-tried"),
    pytest.param(snap(rep("r9", "gpu-pool-spot-9", S.STARTING)),
                 view(), ClusterMemory(), [],
                 id="provisional-node-is-not-gone"),
]


@pytest.mark.parametrize("snapshot,view,memory,expected", CASES)
def test_cluster_decision(snapshot, view, memory, expected):
    cmds, _ = decide(snapshot, view, memory, unschedulable_seconds=60, margin_seconds=10)
    assert kinds(cmds) == expected


def test_notice_deadlines_and_refusal_offering():
    cmds, memory = decide(snap(rep("r1", "spot-a-1")), view(PRESENT, signals={"spot-a-1": "why"}),
                          ClusterMemory(), 60, 10)
    notice = next(c for c in cmds if isinstance(c, NotifyNode))
    assert notice.reclaim_at == NOW + 120 and "why" in notice.event.message
    assert next(c for c in cmds if isinstance(c, NotifyReplica)).drain_at == NOW + 110
    waiting = view(unschedulable={"r9": "no node"})
    starting = snap(rep("r9", "gpu-pool-spot-9", S.STARTING))
    _, memory = decide(starting, waiting, ClusterMemory(), 60, 10)
    assert memory.unschedulable_since == {"r9": NOW}
    later = Snapshot(now=NOW + 60, pools=starting.pools, nodes=starting.nodes, replicas=starting.replicas)
    cmds, memory = decide(later, waiting, memory, 60, 10)
    refused = next(c for c in cmds if isinstance(c, RefuseLaunch))
    assert refused.offering == ("t1", "zone-c", "spot")
    assert next(c for c in cmds if isinstance(c, FailReplica)).stop
    assert next(c for c in cmds if isinstance(c, TerminateNode)).force
    assert memory.unschedulable_since == {}
    # a pod scheduled meanwhile forgets its clock
    _, memory = decide(starting, view(), ClusterMemory({"r9": 1.0}), 60, 10)
    assert memory.unschedulable_since == {}
    assert not [c for c in cmds if isinstance(c, StopReplica)]


def test_a_kubernetes_context_without_the_client_is_one_line(monkeypatch):
    import sys

    from tidal.backends.kubernetes.contexts import Context, ContextKind
    from tidal.backends.kubernetes.wiring import connect
    from tidal.capacity.catalog import Catalog
    from tidal.errors import UserError
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    with pytest.raises(UserError, match=r"pip install 'tidal\[kubernetes\]'"):
        connect(Context(name="prod", kind=ContextKind.KUBERNETES, namespace="serving"), Catalog([]))


@pytest.mark.parametrize("replicas,pod_nodes,expected", [
    ((rep("r1", "spot-a-1"),), {"r1": "spot-a-1"}, []),
    # the pods of a slice swapped Nodes: both replicas follow
    ((rep("r1", "spot-a-1"), rep("r2", "spot-a-2")), {"r1": "spot-a-2", "r2": "spot-a-1"},
     [("MoveReplica", "r1"), ("MoveReplica", "r2")]),
    ((rep("r1", "spot-a-1"),), {"r1": "od-a-1"}, []),          # another billing: not its slice, stays
    ((rep("r1", "spot-a-1"),), {"r1": "unclaimed-1"}, []),     # a Node the pool holds no claim on: stays
    ((rep("r1", "spot-a-1"),), {}, []),                         # no pod yet
])
def test_replicas_follow_their_pods(replicas, pod_nodes, expected):
    nodes = NODES + (NodeRow("spot-a-2", "gpu-pool", "zone-a", "t1", "spot", NodeState.READY, 0.0),)
    cmds = move(snap(*replicas, nodes=nodes), view(pod_nodes=pod_nodes))
    assert kinds(cmds) == expected
    assert all(c.node == pod_nodes[c.replica] for c in cmds)
