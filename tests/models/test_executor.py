"""Inline-or-thread: quick models run on the loop, slow or blocking ones in workers."""

from __future__ import annotations

import threading
import time

from tidal.models.executor import ModelExecutor


def on_thread():
    return threading.current_thread().name


async def test_quick_calls_move_onto_the_loop():
    ex = ModelExecutor(1, 0.01)
    assert not ex.inline
    assert (await ex.call(on_thread)).startswith("tidal-")  # measured first, in a worker
    assert ex.inline
    assert await ex.call(on_thread) == threading.current_thread().name
    ex.close()


async def test_blocking_calls_stay_in_workers():
    ex = ModelExecutor(1, 0.01)
    for _ in range(3):
        await ex.call(time.sleep, 0.03)  # 30 ms of waiting, not computing, is still slow for the loop
    assert not ex.inline
    ex.close()


async def test_one_uncontended_run_in_the_window_is_enough():
    # Runs in a worker look slow when they wait for the GIL; the fastest of the recent ones counts.
    ex = ModelExecutor(1, 0.01)
    for _ in range(3):
        await ex.call(time.sleep, 0.03)
    await ex.call(lambda: None)
    assert ex.inline
    ex.close()


async def test_a_model_that_became_slow_leaves_the_loop():
    ex = ModelExecutor(1, 0.01)
    await ex.call(lambda: None)
    assert ex.inline
    ex._SAMPLE_EVERY = 1  # time every inline call
    await ex.call(time.sleep, 0.06)  # one call of 60 ms: average 0.2 * 60 ms = 12 ms >= 10 ms
    assert not ex.inline
    assert (await ex.call(on_thread)).startswith("tidal-")
    ex.close()
