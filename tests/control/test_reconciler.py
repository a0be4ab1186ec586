"""The reconcile loop with a fake clock, a fake backend and a fake gateway: the reference procedure, step by step."""

import asyncio

import pytest

from tidal.capacity.catalog import Catalog, InstanceType
from tidal.capacity.policies.ess import EssParams, split
from tidal.clock import FakeClock
from tidal.control.home import Home
from tidal.control.reconciler import ControlSettings, Reconciler
from tidal.control.store import Store
from tidal.models.config import VersionPolicy
from tidal.spec import NodePoolSpec, ServiceSpec, VolumeMount, VolumeSpec

from .fakes import FakeBackend, FakeGateway

CAT = Catalog([InstanceType(name="gpu.small", vcpu=4, memory_gib=15, gpus=1, on_demand_price=1.0,
                            spot_prices={"z-a": 0.30, "z-b": 0.25})])
SEED_HPA = {
    "apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "bert-tfserving-hpa"},
    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                "name": "bert-tfserving-202107141745-tensorflow-serving"},
             "minReplicas": 1, "maxReplicas": 10,
             "metrics": [{"type": "External", "external": {
                 "metricName": "sls_ingress_qps",
                 "metricSelector": {"matchLabels": {
                     "sls.ingress.route": "default-bert-tfserving-202107141745-tensorflow-serving-8501"}},
                 "targetAverageValue": 10}}]}}


@pytest.fixture
def world(tmp_path):
    clock = FakeClock(1_000_000.0)
    store = Store(tmp_path / "state.db")
    backend, gateway = FakeBackend(), FakeGateway()
    home = Home(tmp_path).ensure()
    r = Reconciler(store, backend, gateway, CAT, clock, home, ControlSettings(drain_seconds=5, notice_margin_seconds=5))
    store.create_pool(NodePoolSpec(name="gpu", labels={"inference": "tensorflow"}, spot=True, on_demand_percentage=30,
                                   compensate_with_on_demand=True, spot_remedy=True, multi_zone="cost-optimized",
                                   # room above the 10 replicas: a noticed node counts toward --max until it goes
                                   spot_pools=2, max_nodes=12, scale_in_after_seconds=60, notice_seconds=120), clock.now())
    store.put_volume(VolumeSpec(name="model-pvc", url=f"file://{tmp_path}/vol"), clock.now())
    spec = ServiceSpec(name="bert-tfserving", version="202111111111", model_name="chnsenticorp", gpus=1,
                       selector={"inference": "tensorflow"}, data=[VolumeMount(volume="model-pvc", mount="/models")],
                       model_path="/models/tensorflow", version_policy=VersionPolicy.parse("specific:1623831335"))
    store.create_service(spec, clock.now())
    store.put_autoscaler(r.resolve_target("bert-tfserving-202107141745-tensorflow-serving"), SEED_HPA, clock.now())
    return clock, store, backend, gateway, r


def run(r, clock, seconds, step=5.0):
    for _ in range(int(seconds / step)):
        asyncio.run(r.tick())
        clock.advance(step)


def mix(store):
    nodes = store.nodes("gpu")
    return (sum(1 for n in nodes if n.billing == "on-demand" and n.state == "ready"),
            sum(1 for n in nodes if n.billing == "spot" and n.state == "ready"))


def test_scale_out_ratio_preemption_and_scale_in(world, tmp_path):
    clock, store, backend, gateway, r = world
    run(r, clock, 20)
    # One replica, on one node; ESS: 30% of 1 rounded up is on-demand.
    assert len(store.replicas("bert-tfserving", states=("ready",))) == 1
    assert mix(store) == split(1, EssParams(on_demand_percentage=30))
    launch = backend.launches[0]
    # --model-path /models/tensorflow inside model-pvc:/models resolves into the volume; the policy carries over.
    assert launch.model_base_path == f"{tmp_path}/vol/tensorflow" and launch.version_policy == "specific:1623831335"

    # Load: 100 QPS at 10 per replica -> 10 replicas (HPA's legacy limit: 1 -> 4 -> 8 -> 10).
    gateway.qps_["bert-tfserving"] = 100.0
    run(r, clock, 120)
    assert store.get_service("bert-tfserving").desired == 10
    assert len(store.replicas("bert-tfserving", states=("ready",))) == 10
    od, spot = mix(store)
    assert (od, spot) == split(10, EssParams(on_demand_percentage=30)) == (3, 7)
    # One replica per node (one GPU each), and every replica on a pool node.
    placed = [x.node for x in store.replicas("bert-tfserving", states=("ready",))]
    assert len(set(placed)) == 10
    spot_zones = {n.zone for n in store.nodes("gpu") if n.billing == "spot"}
    assert spot_zones == {"z-a", "z-b"}  # spot_pools=2 spreads over both zones

    # Preemption with a 120 s notice: the replica keeps serving until its replacement is ready.
    victim_node = next(n for n in store.nodes("gpu") if n.billing == "spot")
    victim = next(x for x in store.replicas("bert-tfserving") if x.node == victim_node.name)
    asyncio.run(_preempt(r, victim_node.name))
    assert store.get_node(victim_node.name).state == "notified"
    run(r, clock, 10)
    # replacement placed on a new node (spot remedy), old one drained, all 10 serving
    assert store.get_replica(victim.id).state in ("draining", "stopped")
    ready = store.replicas("bert-tfserving", states=("ready",))
    assert len(ready) == 10 and victim.id not in {x.id for x in ready}
    assert all(gateway.states("bert-tfserving").get(x.id) == "ready" for x in ready)
    run(r, clock, 130)
    assert store.get_node(victim_node.name).state == "terminated"
    assert mix(store) == (3, 7)

    # Load gone: the HPA waits out its 300 s down-stabilization, then 1 replica; empty nodes go after 60 s.
    gateway.qps_["bert-tfserving"] = 0.0
    run(r, clock, 200)
    assert store.get_service("bert-tfserving").desired == 10
    run(r, clock, 250)
    assert store.get_service("bert-tfserving").desired == 1
    run(r, clock, 120)
    assert len(store.replicas("bert-tfserving", states=("ready",))) == 1
    assert sum(mix(store)) == 1

    # Cost: every node charged by its billing type; spot made it cheaper than all on-demand.
    cost = r.cost("gpu")
    assert cost.spot_cost > 0 and cost.on_demand_cost > 0 and 0 < cost.total < cost.all_on_demand
    kinds = [e.kind for e in store.events(limit=10000)]
    for kind in ("SuccessfulRescale", "NodeLaunched", "ReplicaReady", "PreemptionNotice", "NodeTerminated"):
        assert kind in kinds


async def _preempt(r, node):
    async with r.lock:
        r.preempt("gpu", node=node)


def test_spot_unavailable_is_compensated_with_on_demand(world):
    clock, store, backend, gateway, r = world
    backend.spot_caps = {"z-a": 0, "z-b": 0}
    gateway.qps_["bert-tfserving"] = 40.0
    run(r, clock, 60)
    od, spot = mix(store)
    assert spot == 0 and od == 4  # every spot node wanted but refused is covered by on-demand
    assert any(e.kind == "NodeLaunchFailed" for e in store.events(limit=1000))


def test_compensating_on_demand_swaps_back_once_spot_is_held(world):
    clock, store, backend, gateway, r = world
    backend.spot_caps = {"z-a": 0, "z-b": 0}
    gateway.qps_["bert-tfserving"] = 40.0
    run(r, clock, 60)
    assert mix(store) == (4, 0)
    backend.spot_caps = {}  # spot is back: retried once the zones' 45 s refusals run out
    served, on_demand = [], []
    for _ in range(60):
        run(r, clock, 5)
        # A notified replica still gets requests (the gateway's "ready") until its replacement is ready.
        served.append(len(store.replicas("bert-tfserving", states=("ready", "notified"))))
        on_demand.append(mix(store)[0])
    # ESS's share of 4 is ceil(0.3 x 4) = 2 on-demand, 2 spot; the 2 compensating on-demand nodes went only
    # after spot nodes were held to take their replicas: 4 serving throughout, and no on-demand bought meanwhile.
    assert mix(store) == split(4, EssParams(on_demand_percentage=30)) == (2, 2)
    assert min(served) == 4 and max(on_demand) == 4 and on_demand[-1] == 2


def test_dead_replica_is_replaced_and_restart_adopts_without_duplicates(world, tmp_path):
    clock, store, backend, gateway, r = world
    run(r, clock, 20)
    (rep,) = store.replicas("bert-tfserving", states=("ready",))
    # The process dies: the replica fails and a new one takes its place.
    backend.procs.pop(rep.id)
    run(r, clock, 10)
    assert store.get_replica(rep.id).state == "failed"
    (new,) = store.replicas("bert-tfserving", states=("ready",))
    # A restarted control plane (same store and processes) adopts the running one; a stray is killed.
    backend.procs["stray-1"] = {"pid": 99999}
    r2 = Reconciler(store, backend, FakeGateway(), CAT, clock, Home(tmp_path), r.settings)
    r2.adopt()
    run(r2, clock, 10)
    assert [x.id for x in store.replicas("bert-tfserving", states=("ready",))] == [new.id]
    assert "stray-1" not in backend.procs
    assert len(backend.procs) == 1


def test_restart_keeps_the_hpa_history(world, tmp_path):
    clock, store, backend, gateway, r = world
    gateway.qps_["bert-tfserving"] = 40.0
    run(r, clock, 60)
    assert store.get_service("bert-tfserving").desired == 4
    gateway.qps_["bert-tfserving"] = 0.0
    run(r, clock, 100)
    # A new control plane (same store): the 300 s down-stabilization still counts from before the restart.
    r2 = Reconciler(store, backend, gateway, CAT, clock, Home(tmp_path), r.settings)
    r2.adopt()
    run(r2, clock, 150)
    assert store.get_service("bert-tfserving").desired == 4  # 250 s since the load went: not yet
    run(r2, clock, 80)
    assert store.get_service("bert-tfserving").desired == 1


def test_spot_trace_drop_reclaims_with_notice(world):
    clock, store, backend, gateway, r = world
    store.update_pool(store.get_pool("gpu").model_copy(update={"spot_trace": "/any", "spot_pools": 1}))
    gateway.qps_["bert-tfserving"] = 40.0
    run(r, clock, 60)
    spot = [n for n in store.nodes("gpu") if n.billing == "spot"]
    assert len(spot) == 2 and {n.zone for n in spot} == {"z-b"}
    backend.spot_caps = {"z-b": 1}  # the trace drops the zone to one spot node
    run(r, clock, 5)
    noticed = [n for n in store.nodes("gpu") if n.state == "notified"]
    assert len(noticed) == 1 and noticed[0].reclaim_at == noticed[0].notified_at + 120
    run(r, clock, 130)
    # The zone was lost: its spot goes elsewhere, or on-demand compensates; 4 replicas serve throughout.
    assert len(store.replicas("bert-tfserving", states=("ready",))) == 4
    assert store.get_node(noticed[0].name).state == "terminated"


def test_a_replica_that_keeps_failing_backs_off(world):
    clock, store, backend, gateway, r = world
    backend.auto_ready = False
    run(r, clock, 10)
    for _ in range(12):  # each replica dies at once, for 60 s
        for rid in list(backend.procs):
            backend.procs.pop(rid)
        run(r, clock, 5)
    # Without back-off that is a start every 5 s (13 in all); with it: at once, then 10 s, 20 s, 40 s apart.
    assert len(backend.launches) <= 6
    assert any(e.kind == "BackOff" for e in store.events(limit=1000))


def test_without_spot_remedy_the_replacement_waits_for_the_node_to_go(world):
    clock, store, backend, gateway, r = world
    store.update_pool(store.get_pool("gpu").model_copy(update={"spot_remedy": False}))
    gateway.qps_["bert-tfserving"] = 40.0
    run(r, clock, 60)
    victim = next(n for n in store.nodes("gpu") if n.billing == "spot")
    launched = len(store.nodes("gpu", include_terminated=True))
    asyncio.run(_preempt(r, victim.name))
    run(r, clock, 60)
    # Still serving on the noticed node, nothing launched for it yet.
    assert len(store.nodes("gpu", include_terminated=True)) == launched
    assert any(x.node == victim.name and x.state == "ready" for x in store.replicas("bert-tfserving"))
    run(r, clock, 80)  # the notice (120 s) ends: the node goes, then its replica is replaced
    assert store.get_node(victim.name).state == "terminated"
    assert len(store.nodes("gpu", include_terminated=True)) == launched + 1
    assert len(store.replicas("bert-tfserving", states=("ready",))) == 4


def test_update_rolls_replicas_without_a_gap(world):
    clock, store, backend, gateway, r = world
    store.delete_autoscaler("bert-tfserving")
    spec = store.get_service("bert-tfserving").spec
    store.update_service(spec, desired=2)
    run(r, clock, 20)
    old = {x.id for x in store.replicas("bert-tfserving", states=("ready",))}
    assert len(old) == 2
    backend.auto_ready = False  # the new release takes a while to load
    store.update_service(spec.model_copy(update={"version_policy": VersionPolicy.parse("latest")}))
    run(r, clock, 20)
    # New replicas are starting; the old ones keep serving meanwhile.
    assert {x.id for x in store.replicas("bert-tfserving", states=("ready",))} == old
    assert sorted(gateway.states("bert-tfserving").values()) == ["ready", "ready"]
    backend.ready |= set(backend.procs)
    backend.auto_ready = True
    run(r, clock, 30)
    now_ready = {x.id for x in store.replicas("bert-tfserving", states=("ready", "notified"))}
    assert len(now_ready) == 2 and not now_ready & old
    assert all(store.get_replica(x).state == "stopped" for x in old)
    assert backend.launches[-1].version_policy == "latest"


@pytest.mark.parametrize("policy", ["spothedge", "spothedge-lean", "tidal"])
def test_policy_state_survives_a_restart(world, tmp_path, policy):
    clock, store, backend, gateway, r = world
    pool = store.get_pool("gpu").model_copy(update={"policy": policy})
    store.update_pool(pool)
    backend.spot_caps = {"z-b": 0}  # z-b refuses: SpotHedge marks it preempted
    gateway.qps_["bert-tfserving"] = 30.0
    run(r, clock, 40)
    mem = r.pool_memory("gpu")
    state = mem.state
    assert state is not None and False in state.active
    from tidal.capacity.policies import POLICIES, pool_params
    from tidal.capacity.policies.persist import decode_state, load_or_initial
    text = store.get_pool_state("gpu")
    assert text.startswith("{")  # JSON, not pickle
    params = pool_params(policy, pool.model_dump(), pool.policy_params)
    kept, why = load_or_initial(POLICIES[policy], params, mem.zones, text)
    assert kept == state and why is None  # what a restarted control plane starts from
    assert decode_state(text, "ess", mem.zones, type(state))[0] is None
    # A restarted control plane starts from it.
    r2 = Reconciler(store, backend, gateway, CAT, clock, Home(tmp_path), r.settings)
    r2.adopt()
    asyncio.run(r2.tick())
    assert False in r2.pool_memory("gpu").state.active


BURST_HPA = {**SEED_HPA, "metadata": {"name": "bert-tfserving-hpa",
                                      "annotations": {"autoscaling.tidal.dev/burst": "true"}}}


def _step_2_to_40_qps(world, document) -> dict[int, int]:
    """Desired replicas at each 2 s tick after a step from 2 to 40 QPS, keyed by seconds since the step.

    The gateway's window averages are those of a true step: over a window of w seconds, t seconds
    after it, (2 (w - t) + 40 t) / w for t < w. The HPA's window is ControlSettings' 30 s.
    """
    clock, store, backend, gateway, r = world
    name = "bert-tfserving"
    store.put_autoscaler(name, document, clock.now())
    gateway.qps_[name] = 2.0
    # Before the step: 2 QPS, one replica; the HPA syncs at 0 and 16 s, next at 32 s.
    run(r, clock, 30, step=2.0)
    assert store.get_service(name).desired == 1
    seen = {}
    for t in range(0, 62, 2):
        gateway.window_qps_[name] = {w: (2 * (w - min(t, w)) + 40 * min(t, w)) / w for w in (6.0, 30.0, 60.0)}
        asyncio.run(r.tick())
        seen[t] = store.get_service(name).desired
        clock.advance(2.0)
    return seen


def test_burst_mode_scales_within_a_tick(world):
    clock, store, backend, gateway, r = world
    seen = _step_2_to_40_qps(world, BURST_HPA)
    # t=2: panic window (2*4 + 40*2) / 6 = 14.7 QPS wants ceil(1.47) = 2 for 1 ready: 2 / 1 >= 200% -> panic, 2.
    assert seen[0] == 1 and seen[2] == 2
    # t=4: (2*2 + 40*4) / 6 = 27.3 -> 3 (panicking, never lower); t=6: 40 -> 4, the 10 per replica target.
    assert seen[4] == 3 and seen[6] == 4
    assert all(n == 4 for t, n in seen.items() if t >= 6)  # held: no scale-down while panicking
    # It read the gateway's 60 s and 6 s windows, at the clock's 2 s ticks.
    assert {60.0, 6.0} <= set(gateway.windows_asked)
    assert r.burst_tick_seconds == 2.0
    # Its state is persisted beside the HPA's; the decision and the events say why.
    state = store.get_autoscaler_state("bert-tfserving")
    assert state.burst.panic_since is not None and state.burst.max_panic_replicas == 4
    assert state.hpa.recommendations
    events = store.events(limit=1000)
    assert any(e.kind == "BurstPanic" and "PanicStarted" in e.message for e in events)
    rescales = [e.message for e in events if e.kind == "SuccessfulRescale"]
    assert rescales == ["New size: 2; reason: burst: panic window QPS 14.7 (stable window 3.3) for 1 ready replica(s)",
                        "New size: 3; reason: burst: panic window QPS 27.3 (stable window 4.5) for 2 ready replica(s)",
                        "New size: 4; reason: burst: panic window QPS 40.0 (stable window 5.8) for 3 ready replica(s)"]
    assert store.get_autoscaler("bert-tfserving")[1]["burst"]["reason"] in ("PanicExtended", "Panicking")


def test_hpa_exact_mode_waits_for_its_sync(world):
    clock, store, backend, gateway, r = world
    seen = _step_2_to_40_qps(world, SEED_HPA)
    # Syncs every 15 s (passes at t=2, 18, 34, ...) over the 30 s window:
    # t=2: (2*28 + 40*2) / 30 = 4.5 QPS -> ceil(0.45) = 1; t=18: (2*12 + 40*18) / 30 = 24.8 -> 3; t=34: 40 -> 4.
    assert all(seen[t] == 1 for t in range(0, 18, 2))
    assert seen[18] == 3 and seen[34] == 4
    assert 60.0 not in gateway.windows_asked and 6.0 not in gateway.windows_asked
    assert r.burst_tick_seconds is None
    assert store.get_autoscaler_state("bert-tfserving").burst is None


def test_burst_panic_ends_a_stable_window_after_the_last_trigger(world):
    clock, store, backend, gateway, r = world
    _step_2_to_40_qps(world, BURST_HPA)
    name = "bert-tfserving"
    panic_since = store.get_autoscaler_state(name).burst.panic_since
    # Load falls back to 2 QPS in every window: no new trigger; the 4 replicas stay while the panic lasts.
    gateway.window_qps_[name] = {6.0: 2.0, 30.0: 2.0, 60.0: 2.0}
    while clock.now() <= panic_since + 60:
        asyncio.run(r.tick())
        assert store.get_service(name).desired == 4
        clock.advance(2.0)
    asyncio.run(r.tick())
    assert store.get_autoscaler_state(name).burst.panic_since is None
    assert any(e.kind == "BurstPanicEnded" for e in store.events(limit=1000))
    # Then the HPA's own rules again: its 300 s down-stabilization keeps 4 for now.
    assert store.get_service(name).desired == 4


def test_scale_out_launches_no_on_demand_for_spot_not_yet_tried(world):
    clock, store, backend, gateway, r = world
    gateway.qps_["bert-tfserving"] = 100.0
    run(r, clock, 120)
    # 1 -> 4 -> 8 -> 10 replicas, spot always available: on-demand only ever for ESS's 30% (ceil(0.3 * 10) = 3);
    # ESS compensates spot the provider refused, not spot that this very pass is about to launch.
    assert mix(store) == (3, 7)
    launched = [n for n in store.nodes("gpu", include_terminated=True)]
    assert sum(1 for n in launched if n.billing == "on-demand") == 3
    assert all(n.state == "ready" for n in launched)


def test_a_replica_noticed_while_still_starting_gets_no_traffic(world):
    """A slow model load (TensorFlow takes ~10 s) and a reclaim notice before it is ready: the replica must not
    enter the gateway (requests would reach a server whose model is not loaded: 404 Servable not found), nor count
    as available: it stops, and its replacement starts on another node."""
    clock, store, backend, gateway, r = world
    run(r, clock, 10)
    first = store.replicas("bert-tfserving", states=("ready",))
    assert len(first) == 1
    backend.auto_ready = False  # new replicas stay loading
    gateway.qps_["bert-tfserving"] = 40.0
    run(r, clock, 30)
    starting = store.replicas("bert-tfserving", states=("starting",))
    victim = next(s for s in starting if store.get_node(s.node).billing == "spot")
    r.notify_node(store.get_node(victim.node), store.get_pool("gpu"), "test")
    asyncio.run(r.tick())
    assert store.get_replica(victim.id).state == "stopped"
    assert not store.replicas("bert-tfserving", states=("notified",))
    routed = {e.id for e in gateway.services_["bert-tfserving"]}
    assert routed == {first[0].id}  # only the replica that answered ready
    live = store.replicas("bert-tfserving", states=("pending", "starting", "ready"))
    assert len(live) == 4 and all(x.node != victim.node for x in live)


def test_a_policy_state_saved_by_an_older_version_is_dropped(world, caplog):
    """A pickled record (what an older control plane stored) is dropped with one log line; the policy starts afresh."""
    import base64
    import pickle
    clock, store, backend, gateway, r = world
    store.set_pool_state("gpu", base64.b64encode(pickle.dumps(("ess", ("z-a", "z-b"), object))).decode())
    with caplog.at_level("WARNING"):
        asyncio.run(r.tick())
    assert any("node pool gpu" in m and "starting afresh" in m for m in caplog.messages)
    assert store.get_pool_state("gpu").startswith("{")


def test_a_model_name_freed_by_a_deleted_service_is_routed_to_its_successor(world):
    """`serve delete A`, then serve B with A's model name: B answers by model name as soon as A lets it go
    (A gives the name up at once; B asks again each pass), with no control-plane restart."""
    clock, store, backend, gateway, r = world
    store.delete_autoscaler("bert-tfserving")
    run(r, clock, 10)
    assert gateway.models_["bert-tfserving"] == ("chnsenticorp",)
    old = store.get_service("bert-tfserving").spec
    store.delete_service("bert-tfserving")
    store.create_service(old.model_copy(update={"name": "bert-v2"}), clock.now())
    asyncio.run(r.tick())
    # A drains (its endpoints stay for in-flight work) without its model name; B has it.
    assert gateway.models_.get("bert-tfserving", ()) == ()
    assert gateway.models_["bert-v2"] == ("chnsenticorp",)
    run(r, clock, 20)
    assert "bert-tfserving" not in gateway.services() and gateway.models_["bert-v2"] == ("chnsenticorp",)


def test_a_model_name_held_by_another_live_service_is_retried_until_free(world):
    clock, store, backend, gateway, r = world
    store.delete_autoscaler("bert-tfserving")
    spec = store.get_service("bert-tfserving").spec
    store.create_service(spec.model_copy(update={"name": "twin"}), clock.now())
    run(r, clock, 10)
    # Two live services ask for one name: the first keeps it, the other is reached by its path prefix.
    assert gateway.models_["bert-tfserving"] == ("chnsenticorp",) and gateway.models_["twin"] == ()
    store.delete_service("bert-tfserving")
    run(r, clock, 5)
    assert gateway.models_["twin"] == ("chnsenticorp",)


CPU_CAT = Catalog([InstanceType(name="cpu.large", vcpu=4, memory_gib=16, gpus=0, on_demand_price=0.4,
                                spot_prices={"z-a": 0.10, "z-b": 0.12})])


@pytest.fixture
def cpu_world(tmp_path):
    """Two CPU replicas (1 CPU each) of one service on a spot pool of 4-CPU nodes, --max 4."""
    clock = FakeClock(1_000_000.0)
    store = Store(tmp_path / "state.db")
    backend, gateway = FakeBackend(), FakeGateway()
    r = Reconciler(store, backend, gateway, CPU_CAT, clock, Home(tmp_path).ensure(),
                   ControlSettings(drain_seconds=5, notice_margin_seconds=5))
    store.create_pool(NodePoolSpec(name="cpu", spot=True, on_demand_percentage=0, spot_remedy=True,
                                   multi_zone="cost-optimized", spot_pools=2, instance_types=["cpu.large"],
                                   max_nodes=4, scale_in_after_seconds=60, notice_seconds=30), clock.now())
    store.create_service(ServiceSpec(name="web", version="1", model_name="m", model_path="/models/m", cpu=1,
                                     memory_mib=1024, replicas=2), clock.now())
    return clock, store, backend, gateway, r


def test_replicas_of_a_service_spread_over_nodes_and_zones(cpu_world):
    """Two replicas that fit on one node still land on two nodes in two zones: one lost node (or zone) takes one."""
    clock, store, backend, gateway, r = cpu_world
    run(r, clock, 20)
    ready = store.replicas("web", states=("ready",))
    assert len(ready) == 2
    nodes = [store.get_node(x.node) for x in ready]
    assert len({n.name for n in nodes}) == 2 and len({n.zone for n in nodes}) == 2


def test_six_preemptions_of_a_max_4_pool_keep_nodes_and_processes_bounded(cpu_world):
    """A noticed replica is replaced once; the pool stays under --max; processes stay within desired + noticed."""
    clock, store, backend, gateway, r = cpu_world
    store.update_pool(store.get_pool("cpu").model_copy(update={"compensate_with_on_demand": True}))
    run(r, clock, 20)
    made, ticks, worst_procs = 0, 0, 0
    while made < 6:
        ticks += 1
        assert ticks < 100, "no spot node to preempt for too long"
        if any(n.billing == "spot" and n.state == "ready" for n in store.nodes("cpu")):
            # Notices overlap (30 s notices every 10 s), every third with no notice at all.
            asyncio.run(_preempt_pool(r, "cpu", notice=0 if made % 3 == 2 else 30))
            made += 1
        for _ in range(2):
            asyncio.run(r.tick())
            clock.advance(5)
            live = [n for n in store.nodes("cpu") if n.state == "ready"]
            noticed_nodes = {n.name for n in store.nodes("cpu") if n.state == "notified"}
            leaving = [x for x in store.replicas("web")
                       if x.node in noticed_nodes or x.state in ("notified", "draining")]
            assert len(live) <= 4
            # Never more than the desired count that is not leaving; one replacement per leaving replica.
            assert len(store.replicas("web", states=("pending", "starting", "ready"))) <= 2
            assert len(backend.procs) <= 2 + len(leaving), ([(x.id, x.state, x.node) for x in store.replicas("web")])
            worst_procs = max(worst_procs, len(backend.procs))
    assert worst_procs > 2  # the notices overlapped: replacements ran beside the replicas they replace
    run(r, clock, 120)
    assert len(store.replicas("web", states=("ready",))) == 2 and len(backend.procs) == 2
    assert len([n for n in store.nodes("cpu") if n.state != "terminated"]) <= 4
    assert not store.replicas("web", states=("notified", "pending", "starting"))
    # Each noticed replica was replaced once: the first 2, then one per replica a notice took.
    noticed_replicas = {e.object for e in store.events(limit=10000)
                        if e.kind in ("ReplicaDraining", "ReplicaStopped") and ("node" in e.message)}
    assert len(backend.launches) <= 2 + len(noticed_replicas)


async def _preempt_pool(r, pool, notice):
    async with r.lock:
        r.preempt(pool, notice_seconds=notice)


def test_a_model_that_cannot_load_fails_with_the_servers_reason_and_backs_off(world):
    clock, store, backend, gateway, r = world
    store.delete_autoscaler("bert-tfserving")
    backend.auto_ready = False
    why = "model chnsenticorp: model base path /vol/tensorflow does not exist"
    run(r, clock, 5)
    (rep,) = store.replicas("bert-tfserving", states=("starting",))
    backend.failing[rep.id] = why
    run(r, clock, 5)
    failed = store.get_replica(rep.id)
    assert failed.state == "failed" and failed.reason == why
    assert rep.id in backend.stopped  # the model server that kept polling is stopped
    events = [e for e in store.events(limit=1000) if e.object == f"replica/{rep.id}"]
    assert events[-1].kind == "ReplicaFailed" and why in events[-1].message
    # Every replacement fails the same way: back-off paces them (at once, then 10 s, 20 s, 40 s ...).
    for _ in range(24):
        for x in store.replicas("bert-tfserving", states=("starting",)):
            backend.failing[x.id] = why
        run(r, clock, 5)
    assert len(backend.launches) <= 6
    assert any(e.kind == "BackOff" for e in store.events(limit=1000))


def test_a_replica_drained_off_a_node_is_never_placed_back_on_it(world):
    """The swap back from compensating on-demand to spot drains on-demand nodes: no replica lands on a node after
    a drain took replicas off it (it was going away: a replica placed there would be drained off again)."""
    clock, store, backend, gateway, r = world
    backend.spot_caps = {"z-a": 0, "z-b": 0}
    gateway.qps_["bert-tfserving"] = 40.0
    run(r, clock, 60)
    backend.spot_caps = {}
    drained: dict[str, int] = {}
    for _ in range(80):
        run(r, clock, 5)
        for e in store.events(limit=100000):
            if e.kind == "NodeDrain":
                drained.setdefault(e.object.split("/", 1)[1], e.id)
    placed_after = [(e.message, n) for e in store.events(limit=100000) if e.kind == "ReplicaScheduled"
                    for n, since in drained.items() if f"started on node {n} " in e.message and e.id > since]
    assert drained and placed_after == []
    assert mix(store) == (2, 2) and len(store.replicas("bert-tfserving", states=("ready",))) == 4
