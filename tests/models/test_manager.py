"""The model manager on a temporary repository: loading, polling, availability-preserving transitions, labels."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time

import numpy as np
import pytest

from tests.models.conftest import corrupt, half_plus_two
from tidal.clock import FakeClock, RealClock
from tidal.errors import InvalidArgument, NotFound
from tidal.models import manager as manager_module
from tidal.models.config import ModelConfig, VersionPolicy
from tidal.models.lifecycle import RetryPolicy, VersionState
from tidal.models.manager import ModelManager

X = np.array([2.0], np.float32)


def publish(base, version, slope):
    """Version v of the model computes slope * x + 2, so a response tells which version served it."""
    half_plus_two(base / str(version) / "model.onnx", slope=slope)


def states(manager, name="hpt"):
    return [(s.version, s.state.value) for s in manager.status(name)]


async def served_by(manager, **kw):
    out = await manager.resolve("hpt", **kw).predict("serving_default", {"x": X})
    return float(out["y"][0])


def make(base, *, clock=None, policy=None, labels=None, **kw):
    cfg = ModelConfig(name="hpt", base_path=str(base), version_policy=policy or VersionPolicy(),
                      version_labels=labels or {})
    return ModelManager([cfg], clock=clock or FakeClock(), poll_seconds=0, **kw)


async def test_new_version_loads_then_old_one_unloads(model_base):
    publish(model_base, 1, slope=1.0)
    m = make(model_base)
    await m.start()
    assert m.ready and states(m) == [(1, "AVAILABLE")]
    assert await served_by(m) == 4.0  # 1.0 * 2 + 2
    publish(model_base, 2, slope=3.0)
    await m.poll()
    assert states(m) == [(2, "AVAILABLE"), (1, "END")]
    assert await served_by(m) == 8.0  # 3.0 * 2 + 2
    with pytest.raises(NotFound, match=r"^Servable not found for request: Specific\(hpt, 1\)$"):
        m.resolve("hpt", version=1)
    await m.stop()


async def test_requests_never_reach_a_loading_version(model_base, monkeypatch):
    publish(model_base, 1, slope=1.0)
    m = make(model_base)
    await m.start()
    release = threading.Event()
    real_load = manager_module.load_runtime

    def slow_load(path, options):
        release.wait(10)  # runs in a worker thread: the event loop keeps serving meanwhile
        return real_load(path, options)

    monkeypatch.setattr(manager_module, "load_runtime", slow_load)
    publish(model_base, 2, slope=3.0)
    poll = asyncio.create_task(m.poll())
    for _ in range(200):
        await asyncio.sleep(0.005)
        if (2, "LOADING") in states(m):
            break
    assert states(m) == [(2, "LOADING"), (1, "AVAILABLE")]
    assert await served_by(m) == 4.0  # still version 1
    with pytest.raises(NotFound, match=r"Specific\(hpt, 2\)"):
        m.resolve("hpt", version=2)
    release.set()
    await poll
    assert states(m) == [(2, "AVAILABLE"), (1, "END")]
    assert await served_by(m) == 8.0
    await m.stop()


async def test_corrupt_version_reports_its_error_and_the_previous_keeps_serving(model_base):
    publish(model_base, 2, slope=1.0)
    clock = FakeClock()
    m = make(model_base, clock=clock, retry=RetryPolicy(max_retries=5, interval_seconds=60))
    await m.start()
    corrupt(model_base / "3" / "model.onnx")
    await m.poll()
    v3, v2 = m.status("hpt")
    assert (v3.version, v3.state, v3.error_code) == (3, VersionState.END, "FAILED_PRECONDITION")
    assert "onnxruntime cannot load model.onnx" in v3.error_message
    assert (v2.version, v2.state, v2.error_code, v2.error_message) == (2, VersionState.AVAILABLE, "OK", "")
    assert await served_by(m) == 4.0
    assert not [r for r in m.status("hpt") if r.state == VersionState.LOADING]
    # Fixing the files takes effect at the next retry, a minute later.
    publish(model_base, 3, slope=3.0)
    await m.poll()
    assert m.status("hpt", version=3)[0].state == VersionState.END  # 0 s since the failure < 60 s
    clock.advance(60)
    await m.poll()
    assert states(m) == [(3, "AVAILABLE"), (2, "END")]
    assert await served_by(m) == 8.0
    await m.stop()


async def test_removed_version_is_unloaded(model_base):
    publish(model_base, 1, slope=1.0)
    publish(model_base, 2, slope=3.0)
    m = make(model_base, policy=VersionPolicy(kind="all"))
    await m.start()
    assert states(m) == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    shutil.rmtree(model_base / "2")
    await m.poll()
    assert states(m) == [(2, "END"), (1, "AVAILABLE")]
    assert await served_by(m) == 4.0
    shutil.rmtree(model_base / "1")
    await m.poll()
    assert states(m) == [(2, "END"), (1, "END")]
    assert not m.ready
    with pytest.raises(NotFound, match=r"^Servable not found for request: Latest\(hpt\)$"):
        m.resolve("hpt")
    await m.stop()


async def test_labels_and_specific_versions(model_base):
    for v, slope in ((1, 1.0), (2, 3.0), (3, 5.0)):
        publish(model_base, v, slope)
    m = make(model_base, policy=VersionPolicy.parse("specific:1,2"),
             labels={"stable": 1, "canary": 2, "future": 7})
    await m.start()
    assert states(m) == [(2, "AVAILABLE"), (1, "AVAILABLE")]  # 3 is not in the policy
    assert await served_by(m) == 8.0  # latest = highest available = 2
    assert await served_by(m, label="stable") == 4.0
    assert await served_by(m, label="canary") == 8.0
    assert await served_by(m, version=1) == 4.0
    assert [s.version for s in m.status("hpt", label="stable")] == [1]
    with pytest.raises(InvalidArgument, match="^Unrecognized servable version label: nope$"):
        m.resolve("hpt", label="nope")
    with pytest.raises(NotFound, match=r"^Servable not found for request: Specific\(hpt, 7\)$"):
        m.resolve("hpt", label="future")
    with pytest.raises(InvalidArgument, match=r"Both model version \(1\) and model version label \(stable\)"):
        m.resolve("hpt", version=1, label="stable")
    await m.stop()


async def test_not_found_messages_match_tf_serving(model_base):
    publish(model_base, 1, slope=1.0)
    m = make(model_base)
    await m.start()
    cases = [
        (lambda: m.resolve("nope"), "Servable not found for request: Latest(nope)"),
        (lambda: m.resolve("nope", version=3), "Servable not found for request: Specific(nope, 3)"),
        (lambda: m.resolve("hpt", version=5), "Servable not found for request: Specific(hpt, 5)"),
        (lambda: m.status("nope"), "Could not find any versions of model nope"),
        (lambda: m.status("hpt", version=9), "Could not find version 9 of model hpt"),
    ]
    for call, message in cases:
        with pytest.raises(NotFound) as e:
            call()
        assert e.value.message == message
    await m.stop()


async def test_base_path_appearing_later(tmp_path):
    base = tmp_path / "later"
    m = make(base)
    await m.start()  # the path does not exist yet: not ready, still running
    assert not m.ready
    with pytest.raises(NotFound, match="Could not find any versions of model hpt"):
        m.status("hpt")
    publish(base, 1, slope=1.0)
    await m.poll()
    assert m.ready and await served_by(m) == 4.0
    await m.stop()


async def test_background_polling_with_the_real_clock(model_base):
    publish(model_base, 1, slope=1.0)
    cfg = ModelConfig(name="hpt", base_path=str(model_base))
    m = ModelManager([cfg], clock=RealClock(), poll_seconds=0.05)
    await m.start()
    publish(model_base, 2, slope=3.0)
    deadline = time.monotonic() + 10
    while states(m)[0] != (2, "AVAILABLE") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert states(m)[0] == (2, "AVAILABLE")
    assert await served_by(m) == 8.0
    await m.stop()


async def test_unload_waits_for_requests_in_flight(model_base):
    publish(model_base, 1, slope=1.0)
    m = make(model_base)
    await m.start()
    servable = m.resolve("hpt")
    started, release = threading.Event(), threading.Event()
    real_run = servable._run

    def slow_run(sig, inputs):
        started.set()
        release.wait(10)
        return real_run(sig, inputs)

    servable._run = slow_run
    servable.batchers.clear()  # run unbatched so the patched function is the one called
    servable.executor._threshold = 0.0  # never inline: the patched run blocks, so it must go to a worker
    servable.executor._inline = False
    request = asyncio.create_task(servable.predict("serving_default", {"x": X}))
    while not started.is_set():
        await asyncio.sleep(0.005)
    publish(model_base, 2, slope=3.0)
    poll = asyncio.create_task(m.poll())
    for _ in range(200):
        await asyncio.sleep(0.005)
        if (1, "UNLOADING") in states(m):
            break
    assert states(m) == [(2, "AVAILABLE"), (1, "UNLOADING")]
    assert await served_by(m) == 8.0  # new requests already go to 2
    release.set()
    assert float((await request)["y"][0]) == 4.0  # the one inside version 1 finished there
    await poll
    assert states(m) == [(2, "AVAILABLE"), (1, "END")]
    await m.stop()


def test_duplicate_model_names_are_rejected(tmp_path):
    cfg = ModelConfig(name="a", base_path=str(tmp_path))
    with pytest.raises(InvalidArgument, match="configured more than once"):
        ModelManager([cfg, cfg], clock=FakeClock())


async def test_an_unexpected_store_error_is_logged_not_raised(model_base, caplog):
    publish(model_base, 1, slope=1.0)
    m = make(model_base)

    def broken():
        raise RuntimeError("store client exploded")

    m._models["hpt"].repository.list_versions = broken
    await m.start()  # one bad model must not stop the server from starting
    assert not m.ready
    assert "store client exploded" in caplog.text
    await m.stop()
