"""BatchSizeTuner on synthetic timings: the cap settles on the cheapest per-row bucket and follows changes."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest

from tidal.clock import FakeClock
from tidal.models.batching import Batcher, BatchSizeTuner
from tidal.models.config import BatchingOptions
from tidal.models.executor import ModelExecutor
from tidal.models.signatures import Signature, TensorSpec

SIG = Signature("serving_default", "tensorflow/serving/predict",
                {"x": TensorSpec("x", "FP32", (-1, -1))}, {"y": TensorSpec("y", "FP32", (-1, -1))})


def drive(tuner: BatchSizeTuner, per_row, steps: int, offered: int = 10_000) -> list[int]:
    """Run `steps` batches, each as full as the cap and the offered load allow; returns the caps used."""
    caps = []
    for _ in range(steps):
        cap = tuner.cap()
        caps.append(cap)
        rows = min(cap, offered)
        tuner.observe(rows, rows * per_row(rows))
    return caps


def settled(caps: list[int]) -> int:
    return Counter(caps[-40:]).most_common(1)[0][0]


@pytest.mark.parametrize("name,max_size,per_row,offered,expected", [
    ("CPU, bigger is slower per row", 1000, lambda n: 0.046 + 0.0006 * n, 10_000, 1),
    ("GPU, bigger is cheaper per row", 64, lambda n: 0.01 / n + 0.001, 10_000, 64),
    ("sweet spot in the middle", 1000, lambda n: {8: 1.0}.get(n, 2.0 + abs(n.bit_length() - 4)), 10_000, 8),
    ("non-power-of-two limit is reachable", 1000, lambda n: 1.0 / n, 10_000, 1000),
    ("flat costs keep the smallest cheapest", 16, lambda n: 1.0, 10_000, 1),
])
def test_cap_settles_on_the_cheapest_bucket(name, max_size, per_row, offered, expected):
    caps = drive(BatchSizeTuner(max_size), per_row, 300, offered)
    assert settled(caps) == expected, name
    assert all(1 <= c <= max_size for c in caps)


def test_cap_stays_at_the_limit_during_warmup():
    tuner = BatchSizeTuner(64, warmup=4)
    for _ in range(3):
        tuner.observe(1, 0.001)
        assert tuner.cap() == 64
    tuner.observe(1, 0.001)
    assert tuner.cap() < 64


@pytest.mark.parametrize("first,then,expected_first,expected_then", [
    (lambda n: 1.0 * n, lambda n: 1.0 / n, 1, 128),  # costs turn batch-friendly: the cap climbs back up
    (lambda n: 1.0 / n, lambda n: 1.0 * n, 128, 1),  # and the other way: it comes down
])
def test_cap_moves_both_ways_when_costs_change(first, then, expected_first, expected_then):
    tuner = BatchSizeTuner(128)
    assert settled(drive(tuner, first, 300)) == expected_first
    assert settled(drive(tuner, then, 300)) == expected_then


def test_exploration_is_bounded():
    # Settled at the cheapest bucket, the tuner spends at most one batch in explore_every elsewhere.
    caps = drive(BatchSizeTuner(1000, explore_every=4), lambda n: 0.05 + 0.001 * n, 400)
    off = sum(1 for c in caps[-200:] if c != 1)
    assert 0 < off <= 200 // 4


def test_ignores_nonsense_observations():
    tuner = BatchSizeTuner(8, warmup=1)
    tuner.observe(0, 1.0)
    tuner.observe(4, -1.0)
    assert tuner.cap() == 8


class _SlowModel:
    """Advances the fake clock by a per-row cost as it 'computes', recording batch sizes."""

    def __init__(self, clock: FakeClock, per_row) -> None:
        self.clock, self.per_row, self.batches = clock, per_row, []

    def run(self, _sig, inputs):
        n = inputs["x"].shape[0]
        self.batches.append(n)
        self.clock.advance(n * self.per_row(n))
        return {"y": inputs["x"] * 2}


async def _waves(batcher: Batcher, waves: int, size: int) -> None:
    for _ in range(waves):
        await asyncio.gather(*[batcher.submit({"x": np.ones((1, 1), np.float32)}) for _ in range(size)])


@pytest.mark.parametrize("allowed,per_row,expect_shrink", [
    ((), lambda n: 0.01 * n, True),  # bigger batches cost more per row: the batcher caps them
    ((8, 16), lambda n: 0.01 * n, False),  # allowed_batch_sizes pin the sizes: no tuning
    ((), lambda n: 0.01 / n, False),  # batch-friendly model: full batches stay
])
async def test_batcher_times_worker_batches_with_the_injected_clock(allowed, per_row, expect_shrink):
    clock = FakeClock()
    model = _SlowModel(clock, per_row)
    options = BatchingOptions(max_batch_size=16, allowed_batch_sizes=allowed)
    executor = ModelExecutor(1, 0.0)  # threshold 0: always the worker-thread path
    b = Batcher("m", 1, SIG, model.run, options=options, executor=executor, clock=clock)
    try:
        await _waves(b, 30, 17)  # one runs at once, 16 queue behind it: one full batch per wave
    finally:
        executor.close()
    late = model.batches[-10:]
    if expect_shrink:
        assert max(late) < 16
    else:
        assert 16 in late
