"""The operations' rules, once for the API and the console: tables over a real SQLite store, a fake clock and a
minimal reconciler-like core (only the members the operations may use)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from tidal.capacity.catalog import load_catalog
from tidal.clock import FakeClock
from tidal.control.home import Home
from tidal.control.operations import Operations, ScaleRequest, decode
from tidal.control.store import NodeRow, Store
from tidal.errors import FailedPrecondition, InvalidArgument, NotFound, TidalError
from tidal.spec import Admission, NodePoolSpec, ServiceSpec

HPA = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
       "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "svc"}, "minReplicas": 1, "maxReplicas": 10,
                "metrics": [{"type": "External", "external": {"metric": {"name": "sls_ingress_qps"},
                                                              "target": {"type": "AverageValue",
                                                                         "averageValue": 10}}}]}}


class Core:
    """What the operations see of a reconciler: store, catalog, clock, home, lock and the few calls below."""

    def __init__(self, tmp_path) -> None:
        self.store = Store(tmp_path / "state.db")
        self.catalog = load_catalog()
        self.clock = FakeClock(1_700_000_000.0)
        self.home = Home(tmp_path / "home").ensure()
        self.lock = asyncio.Lock()
        self.preempted: list[tuple] = []
        self.traces: list[str] = []

    def event(self, kind: str, obj: str, message: str) -> None:
        self.store.add_event(self.clock.now(), kind, obj, message)

    def preempt(self, pool_name, node, count, notice_seconds) -> list[str]:
        self.store.get_pool(pool_name)
        self.preempted.append((pool_name, node, count, notice_seconds))
        return [node] if node else [f"{pool_name}-{i}" for i in range(count)]

    def resolve_target(self, name: str) -> str:
        for s in self.store.list_services():
            if name in (s.spec.name, s.spec.release, s.spec.workload):
                return s.spec.name
        raise NotFound(f"no service matches scaleTargetRef {name!r}")

    def resolve_model_path(self, spec: ServiceSpec) -> tuple[str, dict]:
        for m in spec.data:
            if spec.model_path.startswith(m.mount):
                url = self.store.get_volume(m.volume).url.removeprefix("file://")
                return url + spec.model_path[len(m.mount):], {}
        return spec.model_path, {}

    def attach_trace(self, pool_spec: NodePoolSpec) -> None:
        self.traces.append(pool_spec.name)


@dataclass
class World:
    core: Core
    ops: Operations
    wakes: list[int] = field(default_factory=list)

    def events(self) -> list[str]:
        return [e.kind for e in self.core.store.events()]


@pytest.fixture
def world(tmp_path):
    core = Core(tmp_path)
    wakes: list[int] = []
    ops = Operations(core, lambda: wakes.append(1))
    (tmp_path / "models" / "m").mkdir(parents=True)
    store = core.store
    ops.create_volume({"name": "vol", "url": f"file://{tmp_path}/models"})
    ops.create_volume({"name": "spare", "url": "gs://spare-bucket"})
    store.create_service(ServiceSpec(name="svc", version="1", model_path="/models/m",
                                     data=[{"volume": "vol", "mount": "/models"}], replicas=2), 0.0)
    store.create_service(ServiceSpec(name="auto", version="1", model_path="/models/m",
                                     data=[{"volume": "vol", "mount": "/models"}], replicas=2), 0.0)
    store.put_autoscaler("auto", HPA, 0.0)
    store.create_pool(NodePoolSpec(name="pool", spot=True), 0.0)
    store.add_node(NodeRow(name="pool-n1", pool="pool", zone="cn-hangzhou-h", instance_type="ecs.c6.large",
                           billing="spot", state="ready", launched_at=0.0))
    w = World(core, ops, wakes)
    wakes.clear()
    return w


# -- one rule for a manual replica count: an autoscaler owns its service's count, whichever way it is set.
# (name, service, action, expected desired after, error class or None, error words)
SCALE_CASES = [
    ("scale, no autoscaler", "svc", lambda o: o.scale_service("svc", ScaleRequest(replicas=5)), 5, None, ""),
    ("scale from a body", "svc", lambda o: o.scale_service("svc", {"replicas": 0}), 0, None, ""),
    ("patch replicas, no autoscaler", "svc", lambda o: o.update_service("svc", {"replicas": 4}), 4, None, ""),
    ("patch image keeps desired", "svc", lambda o: o.update_service("svc", {"image": "x:1"}), 2, None, ""),
    ("scale under an autoscaler", "auto", lambda o: o.scale_service("auto", {"replicas": 5}), 2,
     FailedPrecondition, "autoscaler sets auto's replicas (1 to 10 replicas)"),
    ("patch replicas under an autoscaler", "auto", lambda o: o.update_service("auto", {"replicas": 5}), 2,
     FailedPrecondition, "tidal autoscale auto --delete"),
    ("patch image under an autoscaler", "auto", lambda o: o.update_service("auto", {"image": "x:1"}), 2, None, ""),
    ("scale above the bound", "svc", lambda o: o.scale_service("svc", {"replicas": 1001}), 2,
     InvalidArgument, "replicas: Input should be less than or equal to 1000"),
    ("scale, negative", "svc", lambda o: o.scale_service("svc", {"replicas": -1}), 2, InvalidArgument, "replicas"),
    ("scale a missing service", "svc", lambda o: o.scale_service("nope", {"replicas": 1}), 2,
     NotFound, "service 'nope' not found"),
    ("patch renames", "svc", lambda o: o.update_service("svc", {"name": "other"}), 2, InvalidArgument,
     "cannot be renamed"),
    ("patch an unknown field", "svc", lambda o: o.update_service("svc", {"colour": "red"}), 2, InvalidArgument,
     "colour"),
]


@pytest.mark.parametrize("service,action,desired,error,words", [c[1:] for c in SCALE_CASES],
                         ids=[c[0] for c in SCALE_CASES])
def test_manual_replica_counts(world, service, action, desired, error, words):
    before = world.events()
    if error is None:
        action(world.ops)
        assert world.events()[-1] in ("ServiceScaled", "ServiceUpdated") and world.wakes == [1]
    else:
        with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
            action(world.ops)
        assert world.wakes == [] and world.events() == before  # nothing recorded, nothing woken
    assert world.core.store.get_service(service).desired == desired


def test_removing_the_autoscaler_hands_the_count_back(world):
    ops = world.ops
    ops.delete_autoscaler("auto")
    assert world.events()[-1] == "AutoscalerDeleted" and world.wakes == [1]
    ops.scale_service("auto", {"replicas": 6})
    assert world.core.store.get_service("auto").desired == 6
    with pytest.raises(NotFound, match="has no autoscaler"):
        ops.delete_autoscaler("auto")


# -- each successful action records one event and wakes the loop once.
ACTIONS: list[tuple[str, Callable[[Operations], Any], str]] = [
    ("create service", lambda o: o.create_service({"name": "new", "version": "1", "model_path": "/models/m",
                                                   "data": [{"volume": "vol", "mount": "/models"}]}),
     "ServiceCreated"),
    ("update service", lambda o: o.update_service("svc", {"cpu": 1.5}), "ServiceUpdated"),
    ("scale service", lambda o: o.scale_service("svc", {"replicas": 3}), "ServiceScaled"),
    ("delete service", lambda o: o.delete_service("svc"), "ServiceDeleted"),
    ("set autoscaler", lambda o: o.set_autoscaler("svc", {"document": HPA}), "AutoscalerSet"),
    ("apply hpa", lambda o: o.apply_hpa({"document": HPA}), "AutoscalerSet"),
    ("delete autoscaler", lambda o: o.delete_autoscaler("auto"), "AutoscalerDeleted"),
    ("create pool", lambda o: o.create_pool({"name": "p2", "labels": {"a": "b"}}), "NodePoolCreated"),
    ("delete pool", lambda o: (o.store.create_pool(NodePoolSpec(name="empty"), 0.0), o.delete_pool("empty")),
     "NodePoolDeleted"),
    ("create volume", lambda o: o.create_volume({"name": "s3", "url": "s3://bucket/m"}), "VolumeCreated"),
    ("delete volume", lambda o: o.delete_volume("spare"), "VolumeDeleted"),
]


@pytest.mark.parametrize("action,kind", [a[1:] for a in ACTIONS], ids=[a[0] for a in ACTIONS])
def test_one_event_and_one_wake_per_action(world, action, kind):
    before = len(world.events())
    action(world.ops)
    added = world.events()[before:]
    assert added[-1] == kind
    assert added == [kind] and world.wakes == [1]


def test_preempt_goes_through_the_lock_and_names_the_notice(world):
    done = asyncio.run(world.ops.preempt("pool", {"count": 2}))
    assert done.nodes == ["pool-0", "pool-1"] and done.notice_seconds == 120.0  # the pool's own notice
    done = asyncio.run(world.ops.preempt_node("pool-n1", 30))
    assert done.nodes == ["pool-n1"] and done.notice_seconds == 30
    assert world.core.preempted == [("pool", None, 2, None), ("pool", "pool-n1", 1, 30)]
    assert world.wakes == [1, 1]


# -- refusals with a hint, identical for every adapter.
REFUSALS = [
    ("service on a missing volume", lambda o: o.create_service({"name": "x", "version": "1", "model_path": "/d/m",
                                                                "data": [{"volume": "none", "mount": "/d"}]}),
     NotFound, "tidal volume create"),
    ("autoscaler for a missing service", lambda o: o.set_autoscaler("none", {"document": HPA}), NotFound,
     "service 'none' not found"),
    ("autoscaler without a document", lambda o: o.set_autoscaler("svc", {}), InvalidArgument, "document"),
    ("hpa for no service", lambda o: o.apply_hpa({"document": {**HPA, "spec": {
        **HPA["spec"], "scaleTargetRef": {"kind": "Deployment", "name": "ghost"}}}}), NotFound, "ghost"),
    ("preempt a missing pool", lambda o: asyncio.run(o.preempt("none", {})), NotFound, "node pool 'none' not found"),
    ("preempt a missing node", lambda o: asyncio.run(o.preempt_node("none")), NotFound, "node 'none' not found"),
    ("preempt with a bad count", lambda o: asyncio.run(o.preempt("pool", {"count": 0})), InvalidArgument, "count"),
    ("preempt with a string notice", lambda o: asyncio.run(o.preempt("pool", {"notice": "soon"})),
     InvalidArgument, "notice"),
    ("delete a pool with nodes", lambda o: o.delete_pool("pool"), FailedPrecondition, "still has nodes"),
    ("delete a missing pool", lambda o: o.delete_pool("none"), NotFound, "not found"),
    ("delete a volume in use", lambda o: o.delete_volume("vol"), FailedPrecondition, "used by service(s) auto, svc"),
    ("delete a missing volume", lambda o: o.delete_volume("none"), NotFound, "not found"),
    ("unknown pool policy", lambda o: o.create_pool({"name": "p", "spot": True, "policy": "magic"}),
     InvalidArgument, "unknown capacity policy"),
    ("a list as a service", lambda o: o.create_service([]), InvalidArgument, "expected a JSON object"),
    ("a string as changes", lambda o: o.update_service("svc", "x"), InvalidArgument, "JSON object"),
]


@pytest.mark.parametrize("action,error,words", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_say_why(world, action, error, words):
    with pytest.raises(error) as exc:
        action(world.ops)
    assert words in exc.value.message and "\n" not in exc.value.message
    assert world.wakes == []


def test_operator_allowances_come_from_the_environment_given(world, tmp_path):
    body = {"name": "envy", "version": "1", "model_path": "/models/m", "env": {"PYTHONPATH": "/opt"},
            "data": [{"volume": "vol", "mount": "/models"}]}
    with pytest.raises(InvalidArgument, match="TIDAL_ALLOW_ENV=PYTHONPATH"):
        world.ops.create_service(body)
    allowing = Operations.build(world.core, lambda: None, {"TIDAL_ALLOW_ENV": "PYTHONPATH"})
    assert allowing.admission == Admission(allow_env=frozenset({"PYTHONPATH"}))
    allowing.create_service(body)
    assert world.core.store.get_service("envy").spec.env == {"PYTHONPATH": "/opt"}
    with pytest.raises(InvalidArgument, match="http"):
        world.ops.create_volume({"name": "web", "url": "https://models.example.com/m"})
    web = Operations.build(world.core, lambda: None, {"TIDAL_ALLOW_HTTP_VOLUMES": "1"})
    assert web.create_volume({"name": "web", "url": "https://models.example.com/m/"}).url == \
        "https://models.example.com/m"


def test_credentials_go_to_the_secret_store_and_leave_with_the_volume(world):
    vol = world.ops.create_volume({"name": "o", "url": "oss://b", "credentials": {"akId": "I", "akSecret": "S"}})
    assert vol.secret == "volume-o" and world.core.home.get_secret("volume-o") == {"akId": "I", "akSecret": "S"}
    world.ops.create_volume({"name": "o", "url": "oss://b"})  # replaced without credentials: the old ones go
    with pytest.raises(TidalError):
        world.core.home.get_secret("volume-o")
    with pytest.raises(InvalidArgument, match="credentials"):
        world.ops.create_volume({"name": "o", "url": "oss://b", "credentials": {"akId": 1}})


def test_decode_names_the_field():
    with pytest.raises(InvalidArgument, match="^replicas: "):
        decode(ScaleRequest, {"replicas": "many"})
