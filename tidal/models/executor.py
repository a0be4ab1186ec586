"""Runs model calls inline on the event loop while they are measured quick, in worker threads otherwise."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class ModelExecutor:
    """One model version's calls.

    A thread handoff costs tens of microseconds, more than a tiny model's whole run, so a call
    whose recent run time (an exponential average) is under the threshold runs right on the
    loop. Longer calls go to a thread pool so the loop keeps accepting requests while the
    runtime, which releases the GIL, computes. The first calls are measured in a thread.
    """

    _ALPHA = 0.2

    def __init__(self, threads: int, inline_threshold_seconds: float, name: str = "model") -> None:
        self.threads = max(1, threads)
        self._threshold = inline_threshold_seconds
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=f"tidal-{name}")
        self._avg: float | None = None

    @property
    def average_seconds(self) -> float | None:
        return self._avg

    @property
    def inline(self) -> bool:
        return self._avg is not None and self._avg < self._threshold

    def _record(self, seconds: float) -> None:
        avg = self._avg
        self._avg = seconds if avg is None else avg + self._ALPHA * (seconds - avg)

    def _timed(self, fn: Callable[..., Any], args: tuple) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._record(time.perf_counter() - t0)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._avg is not None and self._avg < self._threshold:
            return self._timed(fn, args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._timed, fn, args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
