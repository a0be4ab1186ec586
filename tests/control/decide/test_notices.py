"""Preemption notices: a node's notice in, NotifyNode and what happens to its replicas out; notices that run out."""

from tidal.control.commands import Event, NotifyNode, NotifyReplica, StopReplica, TerminateNode
from tidal.control.decide import notices
from tidal.states import NodeState, ReplicaState as S

from .build import NOW, node, pool, replica, service, snap


def test_with_the_spot_remedy_replicas_are_replaced_at_once():
    p = pool(spot=True, spot_remedy=True, notice_seconds=120)
    n = node("n1")
    s = snap(services=[service()], pools=[p], nodes=[n],
             replicas=[replica("r1", S.READY, "n1"), replica("r2", S.STARTING, "n1"),
                       replica("r3", S.NOTIFIED, "n1", drain_at=None), replica("r4", S.READY, "n2")])
    cmds = notices.notify(s, n, p, "preemption injected", None, margin_seconds=10)
    assert cmds == [
        NotifyNode("n1", "p", "z-a", NOW + 120, Event("PreemptionNotice", "node/n1",
                                                      "preemption injected: reclaimed in 120s; 2 replica(s) on it "
                                                      "replaced now (spot remedy)")),
        NotifyReplica("r1", NOW + 110),
        # Not serving yet: it stops (it would count as available while it covers nothing).
        StopReplica("r2", "its node n1 is going away before it was ready",
                    Event("ReplicaStopped", "replica/r2", "its node n1 is going away before it was ready")),
        # Already moving off for a capacity drain, with no deadline: now it has the notice's.
        NotifyReplica("r3", NOW + 110),
    ]


def test_without_the_spot_remedy_replicas_stay_until_the_node_goes():
    p = pool(spot=True, spot_remedy=False)
    n = node("n1")
    cmds = notices.notify(snap(services=[service()], pools=[p], nodes=[n], replicas=[replica("r1", S.READY, "n1")]),
                          n, p, "x", 30, 10)
    assert [type(c) for c in cmds] == [NotifyNode]
    assert cmds[0].event.message == "x: reclaimed in 30s; 1 replica(s) on it replaced when it goes (no spot remedy)"


def test_a_notice_that_ran_out_stops_the_replicas_and_takes_the_node():
    s = snap(nodes=[node("n1", state=NodeState.NOTIFIED, reclaim_at=NOW, launched_at=NOW - 300),
                    node("n2", state=NodeState.NOTIFIED, reclaim_at=NOW + 1)],
             replicas=[replica("r1", S.DRAINING, "n1")])
    assert notices.expire(s) == [
        StopReplica("r1", "its node was reclaimed", Event("ReplicaStopped", "replica/r1", "its node was reclaimed")),
        TerminateNode("n1", "spot instance reclaimed at the end of its notice", Event(
            "NodeTerminated", "node/n1", "spot instance reclaimed at the end of its notice (lived 300s, spot)")),
    ]


def test_a_trace_drop_reclaims_the_emptiest_newest_nodes():
    p = pool(spot=True, spot_trace="/trace")
    s = snap(pools=[p], nodes=[node("old", launched_at=1), node("new", launched_at=2),
                               node("idle", launched_at=0, empty_since=NOW - 5)])
    cmds = notices.reclaims(s, {("p", "z-a"): 1}, 10)
    assert [c.node for c in cmds if isinstance(c, NotifyNode)] == ["idle", "new"]
    assert notices.reclaims(s, {("p", "z-a"): 3}, 10) == []


def test_an_injected_preemption_picks_the_busiest_spot_node():
    p = pool(spot=True)
    s = snap(pools=[p], nodes=[node("a", launched_at=1), node("b", launched_at=2), node("od", billing="on-demand")],
             replicas=[replica("r", S.READY, "b")])
    assert [n.name for n in notices.choose_victims(s, p, None, 1)] == ["b"]
    assert [n.name for n in notices.choose_victims(s, p, None, 5)] == ["b", "a"]
