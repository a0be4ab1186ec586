"""A replica whose model path does not exist, with a real model-server process: it turns failed with the model
server's reason (in the store and as an event) instead of starting forever, and its replacements back off."""

import asyncio
import time

from tidal.backends.local import LocalBackend
from tidal.capacity.catalog import Catalog, InstanceType
from tidal.clock import FakeClock
from tidal.control.home import Home
from tidal.control.reconciler import ControlSettings, Reconciler
from tidal.control.store import Store
from tidal.spec import NodePoolSpec, ServiceSpec

from .fakes import FakeGateway

CAT = Catalog([InstanceType(name="cpu.large", vcpu=4, memory_gib=16, gpus=0, on_demand_price=0.4,
                            spot_prices={"z-a": 0.1})])


def test_a_missing_model_path_fails_the_replica_with_the_servers_reason(tmp_path):
    clock = FakeClock(1_000.0)
    store = Store(tmp_path / "state.db")
    backend = LocalBackend(tmp_path / "home", gpus=0, ready_timeout=0.5)
    r = Reconciler(store, backend, FakeGateway(), CAT, clock, Home(tmp_path / "home").ensure(),
                   ControlSettings(stop_grace_seconds=2))
    store.create_pool(NodePoolSpec(name="p", instance_types=["cpu.large"], max_nodes=2), clock.now())
    missing = tmp_path / "no-such-model"
    store.create_service(ServiceSpec(name="broken", version="1", model_name="m", model_path=str(missing)),
                         clock.now())

    async def until_failed():
        try:
            for _ in range(120):
                await r.tick()
                clock.advance(1.0)
                failed = store.replicas("broken", states=("failed",))
                if failed:
                    return failed[0]
                await asyncio.sleep(0.25)
            return None
        finally:
            async with r.lock:
                r.shutdown()
            backend.close()

    try:
        failed = asyncio.run(until_failed())
    finally:
        for proc in list(backend._children.values()):
            try:
                proc.wait(timeout=5)
            except Exception:
                proc.kill()
    assert failed is not None, [(e.kind, e.message) for e in store.events()]
    assert failed.reason == f"model m: model base path {missing} does not exist"
    event = [e for e in store.events() if e.object == f"replica/{failed.id}" and e.kind == "ReplicaFailed"]
    assert event and str(missing) in event[-1].message and "cannot serve" in event[-1].message
    deadline = time.monotonic() + 10
    while backend._alive(failed.id, failed.ref) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not backend._alive(failed.id, failed.ref)  # the model server that kept polling was stopped
