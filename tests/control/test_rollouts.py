"""The rollout actions over a real SQLite store and a fake clock: what they record, and bad input refused in one
line with nothing changed (weights that do not sum to 100, an unknown release, promote with no canary, two rollouts
at once); and an older state database opens with room for rollouts."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from tidal.clock import FakeClock
from tidal.control.executor import Executor
from tidal.control.releases import Phase, load
from tidal.control.rollouts import Rollouts
from tidal.control.store import Store
from tidal.errors import FailedPrecondition, InvalidArgument, NotFound
from tidal.control.operations import Operations
from tidal.spec import ServiceSpec

from .fakes import FakeBackend, FakeGateway


class Core:
    def __init__(self, tmp_path) -> None:
        self.store = Store(tmp_path / "state.db")
        self.clock = FakeClock(1_700_000_000.0)
        self.lock = asyncio.Lock()
        self.executor = Executor(self.store, FakeBackend(), FakeGateway(), self.clock, None, 1.0)

    def event(self, kind, obj, message):
        self.store.add_event(self.clock.now(), kind, obj, message)


@pytest.fixture
def core(tmp_path):
    c = Core(tmp_path)
    c.store.create_service(ServiceSpec(name="bert", version="1", model_path="/models/a"), c.clock.now())
    return c


def run(coro):
    return asyncio.run(coro)


def record(core):
    return core.store.get_rollout_record("bert")


CANARY = {"changes": {"version": "2", "model_path": "/models/b"}, "canary_traffic_percent": 10}


def test_start_traffic_promote(core):
    ops = Rollouts(core, lambda: None)
    done = run(ops.start("bert", {**CANARY, "steps": "10,50,100", "bake": "5m"}))
    assert done.message == ("service bert: canary bert-2 started at 10% beside bert-1 "
                            "(steps 10,50,100% baking 300s each)")
    r = load(record(core), "bert")
    assert (r.phase, r.weight, r.steps, r.bake_seconds, r.canary.model_path) == (
        Phase.PROGRESSING, 10, (10, 50, 100), 300.0, "/models/b")
    done = run(ops.traffic("bert", {"weights": {"1": 75, "bert-2": 25}}))  # a version names its release too
    assert done.message == "service bert: bert-1=75, bert-2=25 (its steps stop: weights are set by hand now)"
    assert (load(record(core), "bert").phase, load(record(core), "bert").weight) == (Phase.MANUAL, 25)
    run(ops.promote("bert"))
    assert core.store.get_service("bert").spec.version == "2"
    assert load(record(core), "bert").phase == Phase.PROMOTED
    kinds = [e.kind for e in core.store.events()]
    assert kinds == ["RolloutStarted", "RolloutTraffic", "RolloutPromoted"]


BAD = [
    ("weights that do not sum to 100", "traffic", {"weights": {"bert-1": 90, "bert-2": 5}}, InvalidArgument,
     "weights sum to 95, not 100 (bert-1=90, bert-2=5)"),
    ("an unknown release", "traffic", {"weights": {"bert-1": 90, "bert-9": 10}}, NotFound,
     "service bert has no release 'bert-9' (releases: bert-1 (stable), bert-2 (canary))"),
    ("a weight that is not a percent", "traffic", {"weights": {"bert-1": 110, "bert-2": -10}}, InvalidArgument,
     "weight of bert-1 must be a whole percent from 0 to 100, got 110"),
    ("two rollouts at once", "start", {**CANARY, "changes": {"version": "3", "model_path": "/models/c"}},
     FailedPrecondition, "service bert already has a rollout in progress (canary bert-2 at 10% (weights set by "
                         "hand)): promote it or roll it back first"),
]


@pytest.mark.parametrize("case,action,body,error,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_during_a_rollout_changes_nothing(core, case, action, body, error, message):
    ops = Rollouts(core, lambda: None)
    run(ops.start("bert", CANARY))
    before, events = record(core), len(core.store.events())
    with pytest.raises(error) as exc:
        run(getattr(ops, action)("bert", body))
    assert exc.value.message == message and "\n" not in message
    assert record(core) == before and len(core.store.events()) == events


NO_CANARY = [
    ("promote with no canary", "promote", "service bert has no canary to promote (it runs one release, bert-1; "
                                          "start one with `tidal serve update bert --canary-traffic-percent 10 "
                                          "--model-path ...`)"),
    ("roll back with no canary", "rollback", "service bert has no canary to roll back (it runs one release, "
                                             "bert-1; start one with `tidal serve update bert "
                                             "--canary-traffic-percent 10 --model-path ...`)"),
]


@pytest.mark.parametrize("case,action,message", NO_CANARY, ids=[c[0] for c in NO_CANARY])
def test_promote_or_rollback_with_no_canary(core, case, action, message):
    with pytest.raises(FailedPrecondition) as exc:
        run(getattr(Rollouts(core, lambda: None), action)("bert"))
    assert exc.value.message == message
    assert record(core) is None and core.store.events() == []


START = [
    ("the stable release's own version", {**CANARY, "changes": {"version": "1"}},
     "the canary needs a version other than the stable release's (1): give --version"),
    ("a field a canary does not change", {**CANARY, "changes": {"gpus": 1}},
     "a canary changes only version, image, model_path, model_config_file, version_policy, env, not gpus"),
    ("steps from 0%", {**CANARY, "canary_traffic_percent": 0, "steps": "10,100"}, "a rollout with --steps starts"),
    ("falling steps", {**CANARY, "steps": "50,25"}, "each step must send more traffic than the one before"),
    ("a bake that is not a duration", {**CANARY, "bake": "soon"}, "invalid duration 'soon'"),
    ("a percent above 100", {**CANARY, "canary_traffic_percent": 120}, "less than or equal to 100"),
]


@pytest.mark.parametrize("case,body,message", START, ids=[s[0] for s in START])
def test_a_bad_start_changes_nothing(core, case, body, message):
    with pytest.raises(InvalidArgument) as exc:
        run(Rollouts(core, lambda: None).start("bert", body))
    assert message in exc.value.message and "\n" not in exc.value.message
    assert record(core) is None


def test_an_unknown_service_and_a_change_to_the_stable_release_during_a_rollout(core):
    ops = Rollouts(core, lambda: None)
    with pytest.raises(NotFound, match="service 'nope' not found"):
        run(ops.start("nope", CANARY))
    run(ops.start("bert", CANARY))
    with pytest.raises(FailedPrecondition, match="has a rollout in progress .* before changing model_path"):
        Operations(core, lambda: None).update_service("bert", {"model_path": "/models/z"})
    Operations(core, lambda: None).update_service("bert", {"replicas": 3})  # the count is not a release change
    assert core.store.get_service("bert").spec.model_path == "/models/a"


def test_a_rollout_is_deleted_with_its_service(core):
    run(Rollouts(core, lambda: None).start("bert", CANARY))
    core.store.delete_service("bert")
    assert record(core) is None


def test_an_older_state_database_opens_with_a_rollouts_table(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                     "CREATE TABLE services (name TEXT PRIMARY KEY, spec TEXT NOT NULL, desired INTEGER NOT NULL, "
                     "created_at REAL NOT NULL);")
    db.execute("INSERT INTO services VALUES (?, ?, 1, 0)",
               ("bert", ServiceSpec(name="bert", version="1", model_path="/m").model_dump_json()))
    db.commit()
    db.close()
    store = Store(path)
    assert store.list_services()[0].spec.name == "bert" and store.rollout_records() == {}
    store.put_rollout_record("bert", '{"version": 99}', 1.0)
    assert load(store.get_rollout_record("bert"), "bert") is None  # another version's record: dropped, logged

