"""Capacity decisions: a pool's nodes and pending replicas in, LaunchNode / TerminateNode / DrainNode out."""

import json

from tidal.control.commands import (CarryOutPool, DrainNode, Event, LaunchNode, LaunchRefused, MarkEmpty, Preempted,
                                    SavePolicyState, StopReplica, TerminateNode, Uncordon, Warn)
from tidal.control.decide import capacity
from tidal.control.settings import ControlSettings
from tidal.states import ReplicaState as S

from .build import CAT, NOW, kinds, node, pool, replica, service, snap

T = ControlSettings(unavailable_seconds=45.0)
CPU = {"cpu": 6.0, "memory_mib": 1024.0}  # one per cpu.large node


def decide(s, memory=None):
    return capacity.decide(s, CAT, memory or {}, T)


def flat(cmds):
    """The control-plane commands, with each pool's CarryOutPool opened up (in the Plan's order)."""
    out = []
    for c in cmds:
        out += c.flat() if isinstance(c, CarryOutPool) else [c]
    return out


def of(cmds, cls):
    return [c for c in flat(cmds) if isinstance(c, cls)]


def budget(cmds):
    (carry,) = [c for c in cmds if isinstance(c, CarryOutPool)]
    return carry.planned.launch_budget


def test_a_pending_replica_launches_a_node_with_its_event():
    s = snap(services=[service(**CPU)], pools=[pool(max_nodes=4)], replicas=[replica("a", S.PENDING)])
    cmds, mem = decide(s)
    (launch,) = of(cmds, LaunchNode)
    assert (launch.pool, launch.instance_type, launch.capacity_type, launch.zone) == ("p", "cpu.large", "on-demand",
                                                                                     "z-a")
    assert launch.event == Event("NodeLaunched", "node/{name}", "on-demand cpu.large in z-a ($0.400/h) for pool p")
    assert mem["p"].last_plan["target"] == 1 and mem["p"].last_plan["pending"] == 1


def test_max_nodes_bounds_the_launches():
    # Three pending replicas, one node each, room for two more under --max 3.
    s = snap(services=[service(**CPU)], pools=[pool(max_nodes=3)], nodes=[node("n1", billing="on-demand")],
             replicas=[replica("a", S.READY, "n1")] + [replica(f"p{i}", S.PENDING) for i in range(3)])
    cmds, _ = decide(s)
    # the demand is clamped to --max (3 nodes: 2 to launch) and the executor may launch 3 - 1 held = 2
    assert len(of(cmds, LaunchNode)) == 2 and budget(cmds) == 2
    at_max = snap(services=[service(**CPU)], pools=[pool(max_nodes=1)], nodes=[node("n1", billing="on-demand")],
                  replicas=[replica("a", S.READY, "n1"), replica("b", S.PENDING)])
    assert of(decide(at_max)[0], LaunchNode) == []


def test_spot_launches_count_what_the_zone_holds_for_the_provider(tmp_path):
    # Two spot launches in z-a, which holds n1 and has room for 2: the provider is told the zone holds 1, then 2
    # (counted at each launch by the executor), so the second is refused and reaches the policy.
    from tests.control.fakes import FakeBackend, FakeGateway
    from tidal.clock import FakeClock
    from tidal.control.executor import Executor
    from tidal.control.store import Store

    p = pool(spot=True, on_demand_percentage=0, spot_pools=1, max_nodes=4)
    s = snap(services=[service(**CPU)], pools=[p], nodes=[node("n1", "z-a")],
             replicas=[replica("a", S.READY, "n1")] + [replica(f"p{i}", S.PENDING) for i in range(2)])
    cmds = decide(s)[0]
    assert [(c.zone, c.capacity_type) for c in of(cmds, LaunchNode)] == [("z-a", "spot"), ("z-a", "spot")]
    store = Store(tmp_path / "state.db")
    store.create_pool(p, NOW)
    store.add_node(node("n1", "z-a"))
    backend, told = FakeBackend(), []
    backend.spot_caps = {"z-a": 2}
    launch = backend.launch_node
    backend.launch_node = lambda n, held, now: (told.append(held), launch(n, held, now))
    out = Executor(store, backend, FakeGateway(), FakeClock(NOW), None, 1.0).run(
        [c for c in cmds if isinstance(c, CarryOutPool)])
    assert told == [1, 2]
    assert [r.offering for r in out.refused] == [("cpu.large", "z-a", "spot")]


def test_a_refused_offering_is_skipped_and_reaches_the_policy():
    p = pool(spot=True, on_demand_percentage=0, spot_pools=1, max_nodes=4, compensate_with_on_demand=True)
    s = snap(services=[service(**CPU)], pools=[p], replicas=[replica("a", S.PENDING)])
    _, mem = decide(s)
    fed = capacity.feed(mem, [LaunchRefused("p", ("cpu.large", "z-a", "spot"), NOW)], [Preempted("p", "z-b")])
    assert fed["p"].ledger.launch_failed == {"z-a": 1} and fed["p"].ledger.preempted == {"z-b": 1}
    assert fed["p"].ledger.unavailable == {("cpu.large", "z-a", "spot"): NOW}
    cmds, after = decide(snap(now=NOW + 5, services=[service(**CPU)], pools=[p], replicas=[replica("a", S.PENDING)]),
                         fed)
    # ESS compensates the refused spot node with on-demand, and does not ask z-a for spot again for 45 s.
    assert [(c.zone, c.capacity_type) for c in of(cmds, LaunchNode)] == [("z-a", "on-demand")]
    assert after["p"].ledger.launch_failed == {} and after["p"].ledger.preempted == {}  # consumed by this decision
    expired, _ = decide(snap(now=NOW + 50, services=[service(**CPU)], pools=[p], replicas=[replica("a", S.PENDING)]),
                        after)
    assert ("z-a", "spot") in [(c.zone, c.capacity_type) for c in of(expired, LaunchNode)]


def test_nodes_are_marked_empty_and_busy():
    s = snap(services=[service(**CPU)], pools=[pool()],
             nodes=[node("n1", empty_since=NOW - 5), node("n2"), node("n3", empty_since=NOW - 9)],
             replicas=[replica("a", S.READY, "n1")])
    assert capacity.track_empty(s) == [MarkEmpty("n1", None), MarkEmpty("n2", NOW)]


def test_an_empty_node_goes_after_the_scale_in_delay():
    p = pool(max_nodes=4, scale_in_after_seconds=60)
    young = snap(pools=[p], nodes=[node("n1", billing="on-demand", launched_at=NOW - 100, empty_since=NOW - 59)])
    assert of(decide(young)[0], TerminateNode) == []
    old = snap(pools=[p], nodes=[node("n1", billing="on-demand", launched_at=NOW - 100, empty_since=NOW - 60)])
    assert of(decide(old)[0], TerminateNode) == [TerminateNode("n1", "the plan holds fewer on-demand nodes", Event(
        "NodeTerminated", "node/n1", "the plan holds fewer on-demand nodes (lived 100s, on-demand)"))]


def test_a_drained_node_stays_cordoned_while_its_pool_sheds_it():
    """The bug: a spot node drained for a swap, once empty, was uncordoned and took a replica back 16 s later."""
    p = pool(spot=True, on_demand_percentage=100, max_nodes=4, scale_in_after_seconds=600)
    # The plan holds on-demand only: the empty, cordoned spot node is shed: it stays cordoned (and goes).
    shed = snap(services=[service(**CPU)], pools=[p],
                nodes=[node("od1", billing="on-demand"), node("s1", cordoned=1, empty_since=NOW - 1)],
                replicas=[replica("a", S.READY, "od1")])
    cmds, mem = decide(shed)
    assert of(cmds, Uncordon) == [] and "s1" in mem["p"].shedding
    assert [c.node for c in of(cmds, TerminateNode)] == ["s1"]
    # A plan that wants it again: an ordinary node again.
    kept = snap(services=[service(**CPU)], pools=[pool(max_nodes=4, scale_in_after_seconds=600)],
                nodes=[node("od1", billing="on-demand"), node("od2", billing="on-demand", cordoned=1,
                                                             empty_since=NOW - 1)],
                replicas=[replica("a", S.READY, "od1"), replica("b", S.PENDING)])
    assert of(decide(kept)[0], Uncordon) == [Uncordon("od2")]


def test_a_swap_drains_the_busy_node_and_stops_what_has_not_started_serving():
    # ESS at 0% on-demand holding one busy on-demand node, a spot node standing empty: the on-demand node drains.
    p = pool(spot=True, on_demand_percentage=0, spot_pools=1, max_nodes=4)
    s = snap(services=[service(cpu=3.0, memory_mib=1024.0)], pools=[p],
             nodes=[node("od1", billing="on-demand", launched_at=1), node("s1", "z-a", empty_since=NOW - 1)],
             replicas=[replica("a", S.READY, "od1"), replica("b", S.STARTING, "od1")])
    cmds, _ = decide(s)
    assert of(cmds, StopReplica)[0].replica == "b"
    (drain,) = of(cmds, DrainNode)
    assert drain.node == "od1" and drain.replicas == ("a",) and drain.event.kind == "NodeDrain"


def test_a_pickled_policy_state_is_dropped_with_a_line_and_stored_as_json():
    p = pool(spot=True, policy="spothedge", max_nodes=4)
    s = snap(pools=[p], policy_states={"p": "gASVKAAAAAAAAACMA2Vzc5SMA3otYZSMA3otYpSGlIwIYnVpbHRpbnOUjAZvYmplY3SUk5SHlC4="})
    cmds, mem = decide(s)
    (warn,) = of(cmds, Warn)
    assert warn.message.startswith("node pool p: the stored policy state is not JSON")
    (save,) = of(cmds, SavePolicyState)
    record = json.loads(save.text)
    assert record["policy"] == "spothedge" and record["zones"] == list(mem["p"].zones)
    # Loaded once: the next pass neither warns nor reloads.
    again, _ = decide(snap(now=NOW + 5, pools=[p], policy_states={"p": save.text}), mem)
    assert of(again, Warn) == []


def test_every_command_kind_a_pass_can_return():
    s = snap(services=[service(**CPU)], pools=[pool(max_nodes=2)], replicas=[replica("a", S.PENDING)])
    cmds = decide(s)[0]
    assert set(kinds(cmds)) <= {"MarkEmpty", "CarryOutPool", "Uncordon", "SavePolicyState", "Warn"}
    assert set(kinds(flat(cmds))) <= {"MarkEmpty", "LaunchNode", "TerminateNode", "DrainNode", "StopReplica",
                                      "Uncordon", "SavePolicyState", "Warn"}
