"""Spot-aware scale-in and moves back to spot: which replicas go first, and when one moves."""

from dataclasses import replace

import pytest

from tidal.control.commands import DrainReplica, NotifyReplica
from tidal.control.decide import placement, replicas as replica_step
from tidal.control.decide.spot import Risk, risks, scale_in_order
from tidal.control.settings import ControlSettings
from tidal.states import NodeState, ReplicaState as S

from .build import CAT, NOW, node, pool, replica, service, snap

# One pool, base of one on-demand node: od-1 (oldest) is the base, od-2 above it.
NODES = [node("od-1", billing="on-demand", launched_at=1.0), node("od-2", billing="on-demand", launched_at=2.0),
         node("spot-a", zone="z-a"), node("spot-b", zone="z-b")]
NOTICED = replace(node("spot-n", zone="z-b"), state=NodeState.NOTIFIED, reclaim_at=NOW + 60, notified_at=NOW - 10)
GONE_IN_A = replace(node("spot-gone", zone="z-a"), state=NodeState.TERMINATED, notified_at=NOW - 300)


def world(reps, desired, nodes=NODES, lost=(), base=1, percentage=0):
    s = snap(services=[service("s", desired=desired)],
             pools=[pool(on_demand_base=base, spot=True, on_demand_percentage=percentage)], nodes=nodes, replicas=reps)
    return replace(s, lost=tuple(lost))


def test_risk_classes():
    s = world([], 0, nodes=NODES + [NOTICED], lost=[GONE_IN_A])
    assert risks(s) == {"od-1": Risk.ON_DEMAND_BASE, "od-2": Risk.ON_DEMAND_ABOVE_BASE,
                        "spot-a": Risk.AT_RISK,  # its zone lost a node 300 s ago (within 900 s)
                        "spot-b": Risk.AT_RISK,  # its zone has a node under notice
                        "spot-n": Risk.AT_RISK}
    assert risks(world([], 0))["spot-b"] == Risk.SPOT


CASES = [
    # (id, replica id -> node, created_at order is the id's number, desired, lost nodes, removed ids)
    ("on-demand above the base goes before spot, spot before the base",
     {"r1": "od-1", "r2": "od-2", "r3": "spot-b"}, 2, (), ["r2"]),
    ("two to remove: above the base, then spot", {"r1": "od-1", "r2": "od-2", "r3": "spot-b"}, 1, (), ["r2", "r3"]),
    ("a zone with a recent loss goes first, even before on-demand above the base",
     {"r1": "od-2", "r2": "spot-a", "r3": "spot-b"}, 2, [GONE_IN_A], ["r2"]),
    ("a loss older than the window does not count: on-demand above the base first",
     {"r1": "od-2", "r2": "spot-a", "r3": "spot-b"}, 2, [replace(GONE_IN_A, notified_at=NOW - 901)], ["r1"]),
    ("within a class the newest goes", {"r1": "spot-a", "r2": "spot-b"}, 1, (), ["r2"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_scale_in_removes_capacity_at_risk_then_dear_capacity(case):
    _, placed, desired, lost, removed = case
    reps = [replica(rid, S.READY, n, created_at=float(rid[1:])) for rid, n in placed.items()]
    cmds, _ = replica_step.lifecycle(world(reps, desired, lost=lost), ControlSettings(), replica_step.ReplicaMemory())
    assert [c.replica for c in cmds if isinstance(c, DrainReplica)] == removed


def test_pending_and_starting_still_go_before_ready_ones():
    reps = [replica("r1", S.READY, "od-2"), replica("r2", S.STARTING, "spot-b"), replica("r3", S.PENDING)]
    assert [r.id for r in scale_in_order(world(reps, 0), reps)] == ["r3", "r2", "r1"]


MOVE_CASES = [
    # (id, replicas (id, node, state), desired, base, on-demand percentage, moved ids)
    # 4 nodes, base 1: the ratio wants 1 + ceil(3 x pct / 100) on-demand; 2 are on-demand.
    ("0%: od-2 stands in for spot, and spot has room: its newest replica moves (one per pass)",
     [("r1", "od-2", S.READY), ("r2", "od-2", S.READY)], 2, 1, 0, ["r2"]),
    ("30%: 1 + ceil(0.9) = 2 on-demand wanted: od-2 is the ratio's, it stays",
     [("r1", "od-2", S.READY)], 1, 1, 30, []),
    ("within the base: it stays", [("r1", "od-1", S.READY)], 1, 1, 0, []),
    ("base of two: od-2 is base too, nothing moves", [("r1", "od-2", S.READY)], 1, 2, 0, []),
    ("the service is scaling (a replica starting): not now",
     [("r1", "od-2", S.READY), ("r2", "spot-a", S.STARTING)], 2, 1, 0, []),
    ("already moving one (notified): not another",
     [("r1", "od-2", S.READY), ("r2", "od-2", S.NOTIFIED)], 1, 1, 0, []),
]


@pytest.mark.parametrize("case", MOVE_CASES, ids=[c[0] for c in MOVE_CASES])
def test_replicas_move_back_to_spot(case):
    _, reps, desired, base, percentage, moved = case
    s = world([replica(rid, st, n, created_at=float(rid[1:])) for rid, n, st in reps], desired, base=base,
              percentage=percentage)
    cmds = placement.move_to_spot(s, CAT, {})
    assert [c.replica for c in cmds if isinstance(c, NotifyReplica)] == moved
    assert all(c.drain_at is None for c in cmds if isinstance(c, NotifyReplica))  # drains once replaced


def test_no_move_when_spot_is_full_or_at_risk():
    # cpu.large has 8 vCPU; a replica asks 1 by default. Spot nodes filled with 8 replicas each have no room.
    fill = [replica(f"f{k}{i}", S.READY, n, service="other") for k, n in enumerate(("spot-a", "spot-b"))
            for i in range(8)]
    s = snap(services=[service("s", desired=1), service("other", desired=16)],
             pools=[pool(on_demand_base=1, spot=True, on_demand_percentage=0)], nodes=NODES, replicas=[replica("r1", S.READY, "od-2")] + fill)
    assert placement.move_to_spot(s, CAT, {}) == []
    s = world([replica("r1", S.READY, "od-2")], 1, nodes=NODES[:2] + [NOTICED])
    assert placement.move_to_spot(s, CAT, {}) == []


def test_the_replacement_is_placed_on_spot_before_dear_on_demand():
    # No base: every on-demand node is above it. The emptier od-3 would win on spreading alone.
    s = world([replica("r1", S.NOTIFIED, "od-2"), replica("r2", S.PENDING), replica("x", S.READY, "spot-b")], 1,
              nodes=[node("od-2", billing="on-demand", launched_at=2.0),
                     node("od-3", billing="on-demand", launched_at=3.0), node("spot-b", zone="z-b")], base=0)
    cmds, _ = placement.place(s, CAT, {}, placement.PlacementMemory(), can_grow=False)
    assert [c.node for c in cmds if hasattr(c, "node")] == ["spot-b"]


def test_the_snapshot_keeps_nodes_lost_within_the_window(tmp_path):
    from tidal.control.snapshot import take
    from tidal.control.store import Store
    store = Store(tmp_path / "state.db")
    store.add_node(replace(node("gone-recently"), state=NodeState.TERMINATED, notified_at=NOW - 600,
                           terminated_at=NOW - 480))
    store.add_node(replace(node("gone-long-ago"), state=NodeState.TERMINATED, notified_at=NOW - 1000,
                           terminated_at=NOW - 880))
    store.add_node(replace(node("scaled-in"), state=NodeState.TERMINATED, terminated_at=NOW - 10))
    store.add_node(node("alive"))
    s = take(store, NOW)
    assert [n.name for n in s.lost] == ["gone-recently"] and [n.name for n in s.nodes] == ["alive"]
