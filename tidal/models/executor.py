"""Runs model calls inline on the event loop while they are measured quick, in worker threads otherwise."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import Any, Callable


class ModelExecutor:
    """One model version's calls.

    A thread handoff costs tens of microseconds, more than a tiny model's whole run, so a model
    measured to run under the threshold runs right on the loop; longer calls go to a thread
    pool so the loop keeps accepting requests while the runtime, which releases the GIL,
    computes. The first calls are measured in a thread.

    In a worker, wall time also counts waiting for the GIL while the loop parses requests,
    which only ever adds, so the smallest of the last few runs decides the move to inline.
    Inline, where nothing competes for the GIL, an exponential average of sampled runs
    decides the move back, so a model that became slow (bigger batches) soon leaves the loop.
    Wall time rather than CPU time, so a runtime that blocks (a GPU, I/O) counts as slow.
    """

    _ALPHA = 0.2
    _WINDOW = 8
    _SAMPLE_EVERY = 16  # inline calls are timed one in 16: timing is not free

    def __init__(self, threads: int, inline_threshold_seconds: float, name: str = "model") -> None:
        self.threads = max(1, threads)
        self._threshold = inline_threshold_seconds
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=f"tidal-{name}")
        self._inline = False
        self._avg = 0.0
        self._recent: deque[float] = deque(maxlen=self._WINDOW)
        self._lock = threading.Lock()
        self._calls = 0

    @property
    def inline(self) -> bool:
        return self._inline

    def _in_worker(self, fn: Callable[..., Any], args: tuple) -> Any:
        t0 = perf_counter()
        try:
            return fn(*args)
        finally:
            seconds = perf_counter() - t0
            with self._lock:
                self._recent.append(seconds)
                fastest = min(self._recent)
                if fastest < self._threshold and not self._inline:
                    self._avg = fastest
                    self._inline = True

    def _timed_inline(self, fn: Callable[..., Any], args: tuple) -> Any:
        t0 = perf_counter()
        try:
            return fn(*args)
        finally:
            self._avg += self._ALPHA * (perf_counter() - t0 - self._avg)
            if self._avg >= self._threshold:
                with self._lock:
                    self._inline = False
                    self._recent.clear()

    def run_inline(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run on the calling thread (the loop), timing one call in _SAMPLE_EVERY."""
        self._calls += 1
        if self._calls % self._SAMPLE_EVERY:
            return fn(*args)
        return self._timed_inline(fn, args)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._inline:
            self._calls += 1
            if self._calls % self._SAMPLE_EVERY:
                return fn(*args)
            return self._timed_inline(fn, args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._in_worker, fn, args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
