"""The console's provider over a real Reconciler and Store (fake backend and gateway): the reference
procedure's scale-out."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.console.test_app import call, doc
from tests.control.fakes import FakeBackend, FakeGateway
from tidal.capacity.catalog import Catalog, InstanceType
from tidal.capacity.policies.ess import EssParams, split
from tidal.clock import FakeClock
from tidal.console.app import ConsoleApp
from tidal.console.control import ControlPlaneProvider
from tidal.console.readmodel import StoreReadModel
from tidal.control.home import Home
from tidal.control.operations import Operations
from tidal.control.reconciler import ControlSettings, Reconciler
from tidal.control.store import Store
from tidal.gateway.proxy import ServiceStats
from tidal.spec import NodePoolSpec, ServiceSpec

CAT = Catalog([InstanceType(name="ecs.c6.xlarge", vcpu=4, memory_gib=8, on_demand_price=0.17,
                            spot_prices={"cn-hangzhou-h": 0.034, "cn-hangzhou-i": 0.031})])
HPA = {"apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "hpa"},
       "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": "sentiment-202406011200-tensorflow-serving"},
                "minReplicas": 1, "maxReplicas": 10,
                "metrics": [{"type": "External", "external": {"metricName": "sls_ingress_qps",
                                                              "targetAverageValue": 10}}]}}


class StatsGateway(FakeGateway):
    """The fake gateway, plus the traffic figures the console reads."""

    def stats(self, service):
        q = self.qps(service, 15.0)
        return ServiceStats(name=service, in_flight=0, requests=0, errors=0, retries=0, qps={15.0: q},
                            error_qps={15.0: 0.0}, p50={15.0: 0.004 + q / 1e5}, p99={15.0: 0.012 + q / 1e4},
                            replicas=[])


class World:
    def __init__(self, tmp_path) -> None:
        self.clock = FakeClock(1_700_000_000.0)
        self.store = Store(tmp_path / "state.db")
        self.gateway = StatsGateway()
        self.r = Reconciler(self.store, FakeBackend(), self.gateway, CAT, self.clock, Home(tmp_path).ensure(),
                            ControlSettings(drain_seconds=5, notice_margin_seconds=5))
        # The reference procedure's pool: preemptible, 30% pay-as-you-go, supplemental pay-as-you-go, cost optimization.
        self.store.create_pool(NodePoolSpec(name="inference", labels={"inference": "tensorflow"}, spot=True,
                                            on_demand_percentage=30, compensate_with_on_demand=True, spot_pools=2,
                                            multi_zone="cost-optimized", max_nodes=12), self.clock.now())
        self.store.create_service(ServiceSpec(name="sentiment", version="202406011200", model_name="sentiment",
                                              model_path="/models/sentiment", cpu=3.5, memory_mib=512,
                                              selector={"inference": "tensorflow"}), self.clock.now())
        self.store.put_autoscaler("sentiment", HPA, self.clock.now())
        self.wakes = 0
        self.ops = Operations(self.r, self._wake)
        self.provider = ControlPlaneProvider(
            StoreReadModel(self.store, self.gateway, CAT, self.clock, "http://127.0.0.1:8501"), self.ops)

    def _wake(self) -> None:
        self.wakes += 1

    def run(self, seconds: float, step: float = 5.0) -> None:
        for _ in range(int(seconds / step)):
            asyncio.run(self.r.tick())
            self.provider.sample()
            self.clock.advance(step)


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def test_scale_out_on_spot_and_on_demand_as_the_console_shows_it(world):
    app = ConsoleApp(world.provider, token="t", clock=world.clock)
    world.run(30)
    (s,) = doc(call(app, "GET", "/console/api/overview"))["services"]
    assert s["replicas"] == {"desired": 1, "ready": 1} and s["endpoint"] == "http://127.0.0.1:8501/services/sentiment"
    # The engine the replica reported serving the model with, not the `serve` command's type.
    assert s["runtime"] == "onnxruntime"

    world.gateway.qps_["sentiment"] = 100.0  # 100 QPS at a target of 10 per replica: 10 replicas
    world.run(150)
    overview = doc(call(app, "GET", "/console/api/overview"))
    (s,) = overview["services"]
    assert s["replicas"] == {"desired": 10, "ready": 10}
    assert s["qps"] == 100.0 and s["latency_ms"] == {"p50": pytest.approx(5.0), "p99": pytest.approx(22.0)}
    od, spot = split(10, EssParams(on_demand_percentage=30))  # (3, 7)

    detail = doc(call(app, "GET", "/console/api/services/sentiment?window=3600"))
    billing = [r["billing"] for r in detail["replicas"]]
    assert billing.count("on-demand") == od and billing.count("spot") == spot
    assert all(r["instance_type"] == "ecs.c6.xlarge" and r["zone"].startswith("cn-hangzhou") for r in detail["replicas"])
    # A replica asks for 3.5 of a node's 4 vCPUs: one replica per node, so replicas split as nodes do.
    nodes = doc(call(app, "GET", "/console/api/nodepools"))["pools"][0]
    node_cost = sum(n["price_per_hour"] for n in nodes["nodes"])
    assert s["cost_per_hour"] == pytest.approx(node_cost, rel=1e-6)
    assert 0 < s["savings"] < 1
    assert s["on_demand_cost_per_hour"] == pytest.approx(0.17 * len(nodes["nodes"]), rel=1e-6)

    series = detail["series"]
    assert series["replicas_spot"][0] + series["replicas_on_demand"][0] == 1
    assert series["replicas_spot"][-1] == spot and series["replicas_on_demand"][-1] == od
    assert max(series["qps"]) == 100.0 and series["cost_per_hour"][-1] > series["cost_per_hour"][0]
    # The HPA's steps (1 -> 4 -> 8 -> 10 under v2beta1's scale-up limit) are the decisions, newest first.
    ups = [(d["current_replicas"], d["desired_replicas"]) for d in detail["decisions"]
           if d["desired_replicas"] != d["current_replicas"]]
    assert ups[0][1] == 10 and ups[-1][0] == 1
    kinds = {e["kind"] for e in detail["events"]}
    assert {"SuccessfulRescale", "ReplicaScheduled", "ReplicaReady"} <= kinds
    assert "NodeLaunched" in kinds  # its nodes' events belong to its story

    assert nodes["billing"] == {"spot": sum(1 for n in nodes["nodes"] if n["billing"] == "spot"),
                                "on-demand": sum(1 for n in nodes["nodes"] if n["billing"] == "on-demand")}
    assert nodes["policy"]["on_demand_percentage"] == 30 and nodes["policy"]["multi_zone"] == "cost-optimized"
    assert nodes["labels"] == {"inference": "tensorflow"}
    assert len(nodes["nodes"]) == 10 and all(len(n["replicas"]) == 1 for n in nodes["nodes"])
    assert nodes["utilization"]["cpu"] == pytest.approx(35 / 40)


def test_actions_go_through_the_reconciler(world):
    app = ConsoleApp(world.provider, token="t", clock=world.clock)
    world.gateway.qps_["sentiment"] = 30.0
    world.run(60)
    spot = next(n for n in world.store.nodes("inference") if n.billing == "spot")
    resp = call(app, "POST", f"/console/api/nodes/{spot.name}/preempt", b'{"notice_seconds": 30}', token="t")
    assert resp.status == 200, resp.body
    assert world.store.get_node(spot.name).state == "notified"
    events = doc(call(app, "GET", "/console/api/services/sentiment"))["events"]
    assert events[0]["kind"] == "PreemptionNotice" and spot.name in events[0]["object"]
    assert call(app, "POST", "/console/api/nodes/nope/preempt", b"{}", token="t").status == 404

    # The HPA owns the replica count: scaling by hand is refused with a reason.
    refused = call(app, "POST", "/console/api/services/sentiment/scale", b'{"replicas": 2}', token="t")
    assert refused.status == 400 and "autoscaler" in orjson.loads(refused.body)["error"]
    world.store.delete_autoscaler("sentiment")
    ok = call(app, "POST", "/console/api/services/sentiment/scale", b'{"replicas": 2}', token="t")
    assert ok.status == 200 and world.store.get_service("sentiment").desired == 2


def test_the_console_and_the_api_follow_one_rule(world):
    """A manual count under an autoscaler: refused alike (same status, same words) by the console's scale and the
    API's PATCH, where the API used to drop `replicas` silently; without the autoscaler both set it."""
    import json
    from types import SimpleNamespace

    from tidal.control.api import Api

    api = Api(world.r, "t", "http://127.0.0.1:8501", wake=world._wake, operations=world.ops)
    app = ConsoleApp(world.provider, token="t", clock=world.clock)

    def patch(replicas):
        req = SimpleNamespace(method="PATCH", path="/api/v1/services/sentiment", query="",
                              headers={"authorization": "Bearer t"}, body=json.dumps({"replicas": replicas}).encode())
        resp = asyncio.run(api.handle(req))
        return resp.status, orjson.loads(resp.body)

    console = call(app, "POST", "/console/api/services/sentiment/scale", b'{"replicas": 3}', token="t")
    status, body = patch(3)
    assert console.status == status == 400 and orjson.loads(console.body)["error"] == body["error"]
    assert "autoscaler sets sentiment's replicas" in body["error"] and world.wakes == 0
    assert world.store.get_service("sentiment").desired == 1

    world.ops.delete_autoscaler("sentiment")
    assert call(app, "POST", "/console/api/services/sentiment/scale", b'{"replicas": 3}', token="t").status == 200
    assert world.store.get_service("sentiment").desired == 3
    assert patch(4)[0] == 200 and world.store.get_service("sentiment").desired == 4
    kinds = [e.kind for e in world.store.events()][-3:]
    assert kinds == ["AutoscalerDeleted", "ServiceScaled", "ServiceUpdated"] and world.wakes == 3


class _ZeroRead:
    """A read model of one service at zero replicas after its idle period, with requests queued at the gateway."""
    gateway_url = None

    def __init__(self):
        from tidal.control.store import ServiceRow
        from tidal.spec import ServiceSpec
        self.row = ServiceRow(ServiceSpec(name="rare", version="1", model_name="m", model_path="/m"), 0, 0.0)

    def now(self):
        return 0.0

    def services(self):
        return [self.row]

    def service(self, name):
        return self.row if name == "rare" else None

    def replicas(self, service=None, every_state=False):
        return []

    def nodes(self, pool=None):
        return []

    def pools(self):
        return []

    def events(self, limit=2000):
        return []

    def autoscaler(self, service):
        return {}, {"reason": "ScaledToZero", "current": 0, "desired": 0}

    def stats(self, service):
        from types import SimpleNamespace
        return SimpleNamespace(queued=3, qps={}, p50={}, p99={})

    def instance_type(self, name, zone=""):
        return None


def test_the_console_shows_a_service_scaled_to_zero_and_its_queue():
    from tidal.console.control import ControlPlaneProvider
    (s,) = ControlPlaneProvider(_ZeroRead()).overview().services
    assert s.scaled_to_zero and s.queued == 3 and s.replicas.desired == 0


class ReleasesGateway(StatsGateway):
    """The fake gateway, plus each release's counts."""

    def release_stats(self, service, window_seconds):
        from tidal.gateway.releases import ReleaseStats
        return [ReleaseStats("sentiment-202406011200", 900, 1, 0.012, {"0": 450, "1": 450}),
                ReleaseStats("sentiment-202406080900", 100, 0, 0.015, {"0": 52, "1": 48})]


def test_the_console_shows_a_rollouts_releases_weights_guards_and_progress(tmp_path):
    from tidal.control.rollouts import Rollouts
    w = World(tmp_path)
    w.gateway = w.r.gateway = ReleasesGateway()
    w.provider = ControlPlaneProvider(StoreReadModel(w.store, w.gateway, CAT, w.clock, "http://127.0.0.1:8501"),
                                      w.ops)
    w.run(30)
    asyncio.run(Rollouts(w.r, lambda: None).start("sentiment", {
        "changes": {"version": "202406080900", "model_path": "/models/sentiment-2"}, "canary_traffic_percent": 10,
        "steps": "10,50,100", "bake": "10m", "guards": {"max_class_shift": 0.1}}))
    w.run(30)
    resp = call(ConsoleApp(w.provider), "GET", "/console/api/services/sentiment")
    assert resp.status == 200
    r = doc(resp)["rollout"]
    assert r["phase"] == "progressing" and r["progress"].startswith("step 1/3: canary sentiment-202406080900 at 10%")
    assert r["steps"] == [10, 50, 100] and r["guards"]["max_class_shift"] == 0.1
    stable, canary = r["releases"]
    assert (stable["name"], stable["weight"], canary["name"], canary["weight"]) == (
        "sentiment-202406011200", 90, "sentiment-202406080900", 10)
    assert canary["ready"] == canary["replicas"] == 1 and canary["model_path"] == "/models/sentiment-2"
    assert canary["counts"] == {"requests": 100, "errors": 0, "p90_ms": 15.0, "classes": {"0": 52, "1": 48}}
    # Each release is sized on its share, at least one each: the service's card counts what both are sized to.
    assert canary["wanted"] == 1 and stable["wanted"] >= 1
    card = doc(resp)["service"]["replicas"]
    assert card["desired"] == stable["wanted"] + canary["wanted"]
    assert card["ready"] <= card["desired"]
    kinds = [e["kind"] for e in doc(resp)["events"]]
    assert "RolloutStarted" in kinds and "RolloutStep" in kinds
