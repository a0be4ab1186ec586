"""The capacity executor (pure half and carry-out), shared by the control plane and the simulator: tables with fake times."""

from dataclasses import dataclass, field

import pytest

from tidal.capacity.executor import Ledger, PoolCommands, carry_out, launch_budget, pool_commands
from tidal.capacity.nodepool import Drain, Launch, PoolNode, Terminate
from tidal.capacity.policies.types import Plan
from tidal.errors import CapacityUnavailable
from tidal.sim.pool import SimPool

from tests.capacity.test_catalog_nodepool import CAT, NOW, POOL, n

ZONES = ["z-b", "z-a", "z-c"]
SPOT_B = Launch("p", "z-b", "gpu.small", "spot")
SPOT_A = Launch("p", "z-a", "gpu.small", "spot")
OD = Launch("p", "z-a", "gpu.small", "on-demand")

BUDGET = [
    # (id, nodes, terminating, expected room) with POOL.max_nodes = 10
    ("empty pool: the whole bound", [], 0, 10),
    ("3 ready nodes: 10 - 3", [n("a"), n("b"), n("c")], 0, 7),
    # a noticed node is still paid for until the provider takes it: 10 - 4 - 6 = 0, not 6
    ("noticed nodes count toward --max", [n(f"r{i}") for i in range(4)] + [n(f"x{i}", state="notified") for i in range(6)],
     0, 0),
    ("terminated rows do not count", [n("a"), n("gone", state="terminated")], 0, 9),
    ("nodes terminated this pass make room", [n(f"r{i}") for i in range(10)], 2, 2),
]


@pytest.mark.parametrize("nodes,terminating,room", [c[1:] for c in BUDGET], ids=[c[0] for c in BUDGET])
def test_launch_budget(nodes, terminating, room):
    assert launch_budget(POOL, nodes, terminating) == room


@dataclass
class Recorder:
    refuse: set = field(default_factory=set)     # zones whose spot launches are refused
    done: list = field(default_factory=list)

    def launch(self, launch, now):
        if launch.capacity_type == "spot" and launch.zone in self.refuse:
            raise CapacityUnavailable(f"no spot in {launch.zone}")
        self.done.append(launch)

    def terminate(self, terminate, now):
        self.done.append(terminate)

    def drain(self, drain, now):
        self.done.append(drain)


CARRY = [
    # (id, commands, budget, refused zones, carried out, launch_failed after)
    ("launches within the budget, in order", (SPOT_B, SPOT_B, OD), 2, set(), [SPOT_B, SPOT_B], {}),
    # the refused z-b launch spends nothing: the z-a launch behind it still goes
    ("a refused launch spends no budget", (SPOT_B, SPOT_A), 1, {"z-b"}, [SPOT_A], {"z-b": 1}),
    ("terminations and drains first, even with no budget", (SPOT_B, Terminate("s1", "x"), Drain("s2", "y")), 0, set(),
     [Terminate("s1", "x"), Drain("s2", "y")], {}),
    ("on-demand refusals are remembered but not counted against a zone", (OD,), 1, set(), [OD], {}),
]


@pytest.mark.parametrize("commands,budget,refused,done,failed", [c[1:] for c in CARRY], ids=[c[0] for c in CARRY])
def test_carry_out(commands, budget, refused, done, failed):
    rec = Recorder(refuse=refused)
    ledger = carry_out(PoolCommands(commands, budget), rec, Ledger(), NOW)
    assert rec.done == done
    assert dict(ledger.launch_failed) == failed
    assert set(ledger.unavailable) == {("gpu.small", z, "spot") for z in refused}


def test_a_refused_offering_is_skipped_for_a_while_then_tried_again():
    ledger = Ledger().refusal(SPOT_B, NOW)
    # 45 s later z-b's gpu.small is still skipped: the next offering in z-b (gpu.big) is launched instead
    out = pool_commands(POOL, Plan(0, (1, 0, 0)), ZONES, [], CAT, NOW + 45 - 1e-6, None, ledger, 45.0)
    assert out.commands == (Launch("p", "z-b", "gpu.big", "spot"),)
    out = pool_commands(POOL, Plan(0, (1, 0, 0)), ZONES, [], CAT, NOW + 45, None, ledger, 45.0)
    assert out.commands == (SPOT_B,)
    assert Ledger().refusal(SPOT_B, NOW).expire(NOW + 45, 45.0).unavailable == {}


def test_the_max_bound_holds_under_repeated_preemptions():
    # --max 4, 2 busy spot nodes, a plan of 3 spot; six reclaim notices in a row, each node reclaimed two passes
    # after its notice. Before noticed nodes counted, each notice let a replacement launch: 7 nodes for max 4.
    pool = POOL.model_copy(update={"max_nodes": 4})
    nodes = [n("s0"), n("s1")]
    noticed_at: dict[str, int] = {}
    launched = 0
    for i in range(8):
        nodes = [x for x in nodes if not (x.name in noticed_at and i - noticed_at[x.name] >= 2)]
        ready = [x for x in nodes if x.state == "ready"]
        if i < 6 and ready:
            noticed_at[ready[0].name] = i
            nodes = [PoolNode(x.name, x.zone, x.instance_type, x.billing, "notified", x.launched_at)
                     if x is ready[0] else x for x in nodes]
        planned = pool_commands(pool, Plan(0, (3, 0, 0)), ZONES, nodes, CAT, NOW + i, "gpu.small", Ledger(), 45.0)
        rec = Recorder()
        carry_out(planned, rec, Ledger(), NOW + i)
        nodes += [n(f"new{i}-{k}") for k, _ in enumerate(rec.done)]
        launched += len(rec.done)
        assert len(nodes) <= 4, f"pass {i}: {len(nodes)} nodes"
    assert sum(1 for x in nodes if x.state == "ready") == 3 and launched >= 6


def test_ledger_round_trips_through_json_and_resets_after_a_decision():
    ledger = Ledger().preemption("z-a").preemption("z-a").refusal(SPOT_B, NOW)
    assert Ledger.from_dict(ledger.to_dict()) == ledger
    assert ledger.decided().preempted == {} and ledger.decided().unavailable == ledger.unavailable


def test_sim_pool_refuses_over_capacity_and_reclaims_the_newest():
    pool = SimPool(["a", "b"], [1.0, 1.0], 3.0)
    pool.step(Plan(1, (3, 1)), [2, 1], 0.0)
    assert (pool.spot_held(), pool.on_demand_held(), dict(pool.ledger.launch_failed)) == ([2, 1], 1, {"a": 1})
    pool.step(Plan(1, (2, 1)), [2, 1], 30.0)
    assert dict(pool.ledger.launch_failed) == {}
    pool.set_capacity([1, 1])
    taken = pool.reclaim(60.0, notice_seconds=120.0)
    assert len(taken) == 1 and pool.spot_held() == [1, 1] and dict(pool.ledger.preempted) == {"a": 1}
    pool.expire_notices(179.0)
    assert len(pool.nodes) == 4
    pool.expire_notices(180.0)
    assert len(pool.nodes) == 3
