"""Dynamic batching: stacking, separate shapes, queue limits, padding, splitting, and concurrency."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from tests.models.conftest import half_plus_two
from tidal.clock import RealClock
from tidal.errors import InvalidArgument, ResourceExhausted
from tidal.models.batching import Batcher, batch_rows, pad_rows, padded_size, split, stack
from tidal.models.config import BatchingOptions, RuntimeOptions
from tidal.models.executor import ModelExecutor
from tidal.models.runtimes import load_runtime
from tidal.models.servable import Servable, batch_threads
from tidal.models.signatures import Signature, TensorSpec

SIG = Signature("serving_default", "tensorflow/serving/predict",
                {"x": TensorSpec("x", "FP32", (-1, -1))}, {"y": TensorSpec("y", "FP32", (-1, -1))})


# ---- pure helpers ----------------------------------------------------------------------------

@pytest.mark.parametrize("rows,allowed,expected", [
    (3, (), 3), (1, (2, 4, 8), 2), (2, (2, 4, 8), 2), (3, (2, 4, 8), 4), (8, (2, 4, 8), 8), (9, (2, 4, 8), 9),
])
def test_padded_size(rows, allowed, expected):
    assert padded_size(rows, allowed) == expected


def test_stack_split_round_trip():
    a = {"x": np.array([[1.0, 2.0]]), "n": np.array([1])}
    b = {"x": np.array([[3.0, 4.0], [5.0, 6.0]]), "n": np.array([2, 3])}
    stacked = stack([a, b], pad_variable_length=False)
    assert stacked["x"].shape == (3, 2) and stacked["n"].tolist() == [1, 2, 3]
    parts = split({"y": stacked["x"] * 10}, [1, 2])
    assert parts[0]["y"].tolist() == [[10, 20]] and parts[1]["y"].tolist() == [[30, 40], [50, 60]]


def test_stack_pads_variable_lengths_when_asked():
    parts = [{"x": np.array([[1, 2]])}, {"x": np.array([[3, 4, 5]])}]
    assert stack(parts, pad_variable_length=True)["x"].tolist() == [[1, 2, 0], [3, 4, 5]]
    strings = [{"t": np.array([["a"]], dtype=object)}, {"t": np.array([["b", "c"]], dtype=object)}]
    assert stack(strings, pad_variable_length=True)["t"].tolist() == [["a", ""], ["b", "c"]]


def test_pad_rows_repeats_the_last_row():
    assert pad_rows({"x": np.array([[1], [2], [3]])}, 4)["x"].tolist() == [[1], [2], [3], [3]]


def test_inputs_must_agree_on_rows():
    with pytest.raises(InvalidArgument, match="equal 0th-dimension size"):
        batch_rows({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})


@pytest.mark.parametrize("configured,intra,cores,expected", [
    (3, 0, 2, 3),  # configured wins
    (None, 0, 2, 1),  # runtime default uses every core: one batch at a time
    (None, 1, 2, 2),  # one thread per run on two cores: two batches at once
    (None, 2, 1, 1),
])
def test_batch_threads(monkeypatch, configured, intra, cores, expected):
    monkeypatch.setattr("tidal.models.config.usable_cores", lambda: cores)
    opts = BatchingOptions(num_batch_threads=configured)
    assert batch_threads(opts, RuntimeOptions(intra_op_threads=intra)) == expected


# ---- the batcher with a controllable model -----------------------------------------------------

class GatedModel:
    """y = 10 * x; the first call blocks until released so later requests pile up in the queue."""

    def __init__(self, gate_first=True):
        self.batches: list[tuple[int, ...]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not gate_first:
            self.gate.set()

    def run(self, sig, inputs):
        self.batches.append(inputs["x"].shape)
        self.entered.set()
        self.gate.wait(10)
        x = inputs["x"]
        if (x < 0).any():
            raise InvalidArgument("negative values are not allowed")
        return {"y": x * 10}


def make_batcher(model, reports=None, threads=1, **opts):
    options = BatchingOptions(**opts)
    # threshold 0: never inline, so the gate can hold a batch in a worker thread
    executor = ModelExecutor(threads, 0.0)
    on_batch = (lambda m, v, n, q: reports.append((m, v, n, q))) if reports is not None else None
    return Batcher("m", 1, SIG, model.run, options=options, executor=executor, clock=RealClock(), on_batch=on_batch)


async def first_blocks(batcher, model):
    first = asyncio.create_task(batcher.submit({"x": np.array([[0.0]])}))
    while not model.entered.is_set():
        await asyncio.sleep(0.001)
    return first


async def test_idle_request_runs_at_once_and_arrivals_form_the_next_batch():
    model, reports = GatedModel(), []
    b = make_batcher(model, reports)
    first = await first_blocks(b, model)
    rest = [asyncio.create_task(b.submit({"x": np.array([[float(i)]] * (1 + i % 2))})) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    assert b.queued_rows == 2 + 1 + 2 + 1 + 2
    model.gate.set()
    results = await asyncio.gather(first, *rest)
    assert model.batches == [(1, 1), (8, 1)]  # 1 alone, then 2+1+2+1+2 = 8 rows together
    for i, out in enumerate(results[1:], start=1):
        assert out["y"].tolist() == [[10.0 * i]] * (1 + i % 2)
    assert [(r[2]) for r in reports] == [1, 8]
    assert reports[0][3] == 0.0 and reports[1][3] > 0.0


async def test_requests_with_different_inner_shapes_run_separately():
    model = GatedModel()
    b = make_batcher(model)
    first = await first_blocks(b, model)
    shapes = [(1, 3), (1, 4), (2, 3), (1, 4)]
    rest = [asyncio.create_task(b.submit({"x": np.full(s, float(i))})) for i, s in enumerate(shapes)]
    await asyncio.sleep(0.01)
    model.gate.set()
    results = await asyncio.gather(*rest)
    await first
    assert model.batches[1:] == [(3, 3), (2, 4)]  # the [., 3] requests together, then the [., 4] ones
    for i, (s, out) in enumerate(zip(shapes, results)):
        assert out["y"].shape == s and (out["y"] == 10.0 * i).all()


async def test_full_queue_is_resource_exhausted():
    model = GatedModel()
    b = make_batcher(model, max_batch_size=2, max_enqueued_batches=1)
    first = await first_blocks(b, model)
    ok = [asyncio.create_task(b.submit({"x": np.array([[1.0]])})) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted, match="The batch scheduling queue to which this task was submitted is full"):
        await b.submit({"x": np.array([[1.0]])})
    model.gate.set()
    assert all(r["y"].tolist() == [[10.0]] for r in await asyncio.gather(*ok))
    await first


async def test_max_batch_size_splits_the_queue_and_bigger_requests_are_refused():
    model = GatedModel()
    b = make_batcher(model, max_batch_size=3)
    first = await first_blocks(b, model)
    rest = [asyncio.create_task(b.submit({"x": np.array([[1.0]] * n)})) for n in (2, 2, 1)]
    await asyncio.sleep(0.01)
    model.gate.set()
    await asyncio.gather(first, *rest)
    assert model.batches[1:] == [(3, 1), (2, 1)]  # 2 + 1 fit in 3 (the 1 jumps ahead of the second 2), then 2
    with pytest.raises(InvalidArgument, match="Task size 5 is larger than maximum input batch size 3"):
        await b.submit({"x": np.ones((5, 1))})


async def test_default_batching_runs_an_oversized_request_alone():
    model = GatedModel()
    b = make_batcher(model, max_batch_size=3, oversize_runs_alone=True)
    model.gate.set()
    assert (await b.submit({"x": np.ones((5, 1))}))["y"].shape == (5, 1) and model.batches[-1] == (5, 1)


async def test_large_batch_splitting_cuts_a_big_request_into_execution_sized_runs():
    model = GatedModel()
    b = make_batcher(model, max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=3)
    model.gate.set()
    x = np.arange(7, dtype=np.float64).reshape(7, 1)
    out = await b.submit({"x": x})
    assert out["y"].tolist() == (x * 10).tolist()
    assert max(rows for rows, _ in model.batches) <= 3 and sum(rows for rows, _ in model.batches) == 7
    with pytest.raises(InvalidArgument, match="Task size 9 is larger than maximum input batch size 8"):
        await b.submit({"x": np.ones((9, 1))})


async def test_allowed_batch_sizes_pad_and_trim():
    model = GatedModel()
    b = make_batcher(model, max_batch_size=4, allowed_batch_sizes=(2, 4))
    first = await first_blocks(b, model)
    rest = [asyncio.create_task(b.submit({"x": np.array([[float(i)]])})) for i in (1, 2, 3)]
    await asyncio.sleep(0.01)
    model.gate.set()
    results = await asyncio.gather(first, *rest)
    assert model.batches == [(2, 1), (4, 1)]  # 1 padded to 2; 3 padded to 4
    assert [r["y"].tolist() for r in results] == [[[0.0]], [[10.0]], [[20.0]], [[30.0]]]


async def test_pad_variable_length_inputs_stacks_different_widths():
    model = GatedModel()
    b = make_batcher(model, pad_variable_length_inputs=True)
    first = await first_blocks(b, model)
    rest = [asyncio.create_task(b.submit({"x": np.ones((1, w))})) for w in (2, 3)]
    await asyncio.sleep(0.01)
    model.gate.set()
    a, c = await asyncio.gather(*rest)
    await first
    assert model.batches[1] == (2, 3)
    assert a["y"].tolist() == [[10.0, 10.0, 0.0]] and c["y"].tolist() == [[10.0, 10.0, 10.0]]


async def test_one_bad_request_does_not_fail_its_batch_neighbours():
    model = GatedModel()
    b = make_batcher(model)
    first = await first_blocks(b, model)
    rest = [asyncio.create_task(b.submit({"x": np.array([[v]])})) for v in (1.0, -1.0, 2.0)]
    await asyncio.sleep(0.01)
    model.gate.set()
    results = await asyncio.gather(*rest, return_exceptions=True)
    await first
    assert results[0]["y"].tolist() == [[10.0]] and results[2]["y"].tolist() == [[20.0]]
    assert isinstance(results[1], InvalidArgument)


async def test_outputs_without_a_batch_dimension_fall_back_to_one_by_one():
    calls = []

    def scalar_model(sig, inputs):
        calls.append(inputs["x"].shape[0])
        time.sleep(0.02)
        return {"y": np.float32(inputs["x"].sum())}

    b = Batcher("m", 1, SIG, scalar_model, options=BatchingOptions(), executor=ModelExecutor(1, 0.0),
                clock=RealClock())
    results = await asyncio.gather(*[b.submit({"x": np.array([[float(i)]])}) for i in range(4)])
    assert [float(r["y"]) for r in results] == [0.0, 1.0, 2.0, 3.0]
    assert calls[0] == 1 and calls[1] == 3 and calls[2:] == [1, 1, 1]


async def test_batch_timeout_waits_for_company_only_while_busy():
    model = GatedModel()
    reports = []
    b = make_batcher(model, reports, threads=2, batch_timeout_micros=50_000)
    first = await first_blocks(b, model)
    t0 = time.monotonic()
    second = asyncio.create_task(b.submit({"x": np.array([[1.0]])}))
    third = asyncio.create_task(b.submit({"x": np.array([[2.0]])}))
    model_waited = None
    while len(model.batches) < 2:
        await asyncio.sleep(0.002)
    model_waited = time.monotonic() - t0
    model.gate.set()
    await asyncio.gather(first, second, third)
    assert model.batches[1] == (2, 1)  # the two arrivals went together on the free thread
    assert model_waited >= 0.045 and reports[1][3] >= 0.045  # after the 50 ms timeout, not at once


# ---- through a real model --------------------------------------------------------------------

async def test_many_concurrent_requests_through_onnx(tmp_path):
    half_plus_two(tmp_path / "model.onnx", shape=(None, 2))
    runtime = load_runtime(str(tmp_path), RuntimeOptions(intra_op_threads=1))
    reports = []
    s = Servable("hpt", 1, runtime, batching=BatchingOptions(max_batch_size=64),
                 runtime_options=RuntimeOptions(intra_op_threads=1), clock=RealClock(),
                 on_batch=lambda m, v, n, q: reports.append(n))
    s.executor._threshold = 0.0  # keep the worker-thread path so requests overlap and batch
    xs = [np.full((1 + i % 3, 2), float(i), np.float32) for i in range(300)]
    outs = await asyncio.gather(*[s.predict("serving_default", {"x": x}) for x in xs])
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out["y"], 0.5 * x + 2)
    assert sum(reports) == sum(len(x) for x in xs) == 600
    assert max(reports) > 3 and max(reports) <= 64  # batches formed, never above max_batch_size
    s.close()


async def test_tiny_model_runs_inline_once_measured_fast(tmp_path):
    half_plus_two(tmp_path / "model.onnx")
    runtime = load_runtime(str(tmp_path), RuntimeOptions(intra_op_threads=1))
    s = Servable("hpt", 1, runtime, batching=BatchingOptions(inline_threshold_micros=5_000),
                 runtime_options=RuntimeOptions(intra_op_threads=1), clock=RealClock())
    for _ in range(5):
        await s.predict("serving_default", {"x": np.array([1.0], np.float32)})
    assert s.executor.inline
    with pytest.raises(InvalidArgument, match='Serving signature name: "nope" not found in signature def'):
        await s.predict("nope", {"x": np.array([1.0], np.float32)})
    s.close()


def test_split_requires_outputs_to_follow_the_run_rows():
    from tidal.models.batching import _Unsplittable

    with pytest.raises(_Unsplittable):
        split({"y": np.zeros((6, 1))}, [1, 2])  # 6 rows out of a 3-row run: not aligned to the batch
    assert [p["y"].shape for p in split({"y": np.zeros((4, 1))}, [1, 2], 4)] == [(1, 1), (2, 1)]


async def test_concurrent_batches_never_exceed_the_batch_threads():
    active, peak, lock = [0], [0], threading.Lock()

    def model(sig, inputs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.005)
        with lock:
            active[0] -= 1
        return {"y": inputs["x"] * 10}

    b = Batcher("m", 1, SIG, model, options=BatchingOptions(max_batch_size=4), executor=ModelExecutor(2, 0.0),
                clock=RealClock())
    for _ in range(3):
        outs = await asyncio.gather(*[b.submit({"x": np.array([[float(i)]])}) for i in range(40)])
        assert [o["y"].tolist() for o in outs] == [[[10.0 * i]] for i in range(40)]
    assert peak[0] == 2 and b._running == 0


async def test_a_closed_servable_answers_unavailable(tmp_path):
    from tidal.errors import Unavailable

    half_plus_two(tmp_path / "model.onnx")
    runtime = load_runtime(str(tmp_path), RuntimeOptions(intra_op_threads=1))
    s = Servable("hpt", 3, runtime, batching=BatchingOptions(), runtime_options=RuntimeOptions(), clock=RealClock())
    s.close()
    with pytest.raises(Unavailable, match="version 3 of model hpt has been unloaded"):
        await s.predict("serving_default", {"x": np.array([1.0], np.float32)})


# ---- gathering for models that run inline on the loop ------------------------------------------

async def test_inline_model_gathers_concurrent_requests_and_stops_when_they_come_alone():
    sizes = []

    def model(sig, inputs):
        sizes.append(inputs["x"].shape[0])
        return {"y": inputs["x"] * 10}

    reports = []
    b = Batcher("m", 1, SIG, model, options=BatchingOptions(), executor=ModelExecutor(1, 1.0),
                clock=RealClock(), on_batch=lambda m, v, n, q: reports.append(n))
    await b.submit({"x": np.array([[0.0]])})  # measured in a worker, found quick: inline from now on
    assert b._executor.inline and not b._gathering
    for wave in range(3):  # waves of 64 arriving in the same loop turn; a probe notices within 32
        outs = await asyncio.gather(*[b.submit({"x": np.array([[float(i)]])}) for i in range(64)])
        assert [o["y"].tolist() for o in outs] == [[[10.0 * i]] for i in range(64)]
    assert b._gathering and max(reports) == 64  # a whole wave ran as one batch
    assert sum(reports) == 1 + 3 * 64
    for i in range(Batcher._PROBE_EVERY):  # requests one at a time: gathering ends
        assert (await b.submit({"x": np.array([[1.0]])}))["y"].tolist() == [[10.0]]
    assert not b._gathering
    calls = len(sizes)
    await b.submit({"x": np.array([[1.0]])})
    assert len(sizes) == calls + 1 and sizes[-1] == 1
    b._executor.close()


async def test_inline_gathering_keeps_shapes_apart_and_isolates_bad_requests():
    def model(sig, inputs):
        if (inputs["x"] < 0).any():
            raise InvalidArgument("negative values are not allowed")
        return {"y": inputs["x"] * 10}

    b = Batcher("m", 1, SIG, model, options=BatchingOptions(), executor=ModelExecutor(1, 1.0), clock=RealClock())
    await b.submit({"x": np.array([[0.0]])})
    b._gathering = True
    shapes = [(1, 2), (2, 3), (1, 2), (1, 3)]
    values = [1.0, 2.0, -1.0, 3.0]
    outs = await asyncio.gather(*[b.submit({"x": np.full(s, v)}) for s, v in zip(shapes, values)],
                                return_exceptions=True)
    assert outs[0]["y"].tolist() == [[10.0, 10.0]]
    assert outs[1]["y"].shape == (2, 3) and outs[3]["y"].tolist() == [[30.0, 30.0, 30.0]]
    assert isinstance(outs[2], InvalidArgument)
    b._executor.close()


async def test_a_failing_metrics_callback_costs_no_request():
    def broken(*args):
        raise RuntimeError("metrics backend down")

    model = GatedModel(gate_first=False)
    b = Batcher("m", 1, SIG, model.run, options=BatchingOptions(), executor=ModelExecutor(1, 1.0),
                clock=RealClock(), on_batch=broken)
    for _ in range(3):
        outs = await asyncio.gather(*[b.submit({"x": np.array([[float(i)]])}) for i in range(40)])
        assert [o["y"].tolist() for o in outs] == [[[10.0 * i]] for i in range(40)]
    b._executor.close()
