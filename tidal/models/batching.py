"""Dynamic batching: requests to one signature are stacked along the batch dimension, run once, and split back."""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from typing import Callable

import numpy as np

from tidal.clock import Clock
from tidal.errors import InvalidArgument, ResourceExhausted, TidalError
from tidal.models.config import BatchingOptions
from tidal.models.executor import ModelExecutor
from tidal.models.signatures import Signature

log = logging.getLogger(__name__)

OnBatch = Callable[[str, int, int, float], None]
RunFn = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]


class _Task:
    __slots__ = ("inputs", "rows", "key", "future", "enqueued")

    def __init__(self, inputs, rows, key, future, enqueued) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key = key
        self.future = future
        self.enqueued = enqueued


class _Unsplittable(Exception):
    """A batched run's outputs do not follow the batch dimension, so they cannot be split."""


def batch_rows(inputs: dict[str, np.ndarray]) -> int:
    """The common size of the 0th dimension; InvalidArgument when the inputs disagree."""
    rows = -1
    for arr in inputs.values():
        n = arr.shape[0]
        if rows < 0:
            rows = n
        elif n != rows:
            raise InvalidArgument("Batching Run() input tensors must have equal 0th-dimension size.")
    return rows


def padded_size(rows: int, allowed: tuple[int, ...]) -> int:
    """The smallest allowed batch size holding `rows` (rows itself when no sizes are set)."""
    if not allowed:
        return rows
    i = bisect.bisect_left(allowed, rows)
    return allowed[i] if i < len(allowed) else rows


def stack(parts: list[dict[str, np.ndarray]], pad_variable_length: bool) -> dict[str, np.ndarray]:
    """Concatenate requests along dimension 0, padding other dimensions to the largest when asked."""
    out: dict[str, np.ndarray] = {}
    for name in parts[0]:
        arrays = [p[name] for p in parts]
        if pad_variable_length:
            widest = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
            fill = "" if arrays[0].dtype == object else 0
            arrays = [a if a.shape[1:] == widest else
                      np.pad(a, [(0, 0)] + [(0, w - s) for s, w in zip(a.shape[1:], widest)], constant_values=fill)
                      for a in arrays]
        out[name] = np.concatenate(arrays, axis=0)
    return out


def pad_rows(inputs: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Repeat the last row up to `size` rows (results of padding rows are dropped)."""
    out = {}
    for name, arr in inputs.items():
        extra = size - arr.shape[0]
        out[name] = arr if extra <= 0 else np.concatenate([arr, np.repeat(arr[-1:], extra, axis=0)], axis=0)
    return out


def split(outputs: dict[str, np.ndarray], sizes: list[int], run_rows: int | None = None) -> list[dict[str, np.ndarray]]:
    """Cut batched outputs (of a run over `run_rows` rows, padding included) back into one dict per request."""
    total = sum(sizes)
    run_rows = total if run_rows is None else run_rows
    for name, arr in outputs.items():
        if not isinstance(arr, np.ndarray) or arr.ndim == 0 or arr.shape[0] != run_rows:
            raise _Unsplittable(name)
    results: list[dict[str, np.ndarray]] = []
    start = 0
    for n in sizes:
        results.append({name: arr[start:start + n] for name, arr in outputs.items()})
        start += n
    return results


class BatchSizeTuner:
    """Picks a worker-thread batch cap from measured per-row compute cost, by power-of-two bucket."""

    def __init__(self, max_batch_size: int, *, warmup: int = 4, explore_every: int = 4,
                 alpha: float = 0.3) -> None:
        self._max = max_batch_size
        self._top = max_batch_size.bit_length() - 1  # bucket j holds batches of 2**j .. 2**(j+1)-1 rows
        self._cost: list[float | None] = [None] * (self._top + 1)  # EWMA seconds per row
        self._warmup = warmup
        self._every = explore_every
        self._alpha = alpha
        self._seen = 0
        self._since_probe = 0
        self._best = self._top
        self._probe: int | None = None
        self._up = False  # direction of the next routine probe; flips each time

    def _size(self, bucket: int) -> int:
        # The top bucket's cap is max_batch_size itself, so the tuner can always give back the full limit.
        return self._max if bucket == self._top else 1 << bucket

    def cap(self) -> int:
        """The most rows the next batch may take."""
        return self._size(self._best if self._probe is None else self._probe)

    def observe(self, rows: int, seconds: float) -> None:
        """Record one batch of `rows` rows that computed in `seconds`."""
        if rows <= 0 or seconds < 0:
            return
        bucket = min(rows.bit_length() - 1, self._top)
        old = self._cost[bucket]
        per_row = seconds / rows
        if old is None or bucket != self._best:
            # A bucket seen only in passing keeps its latest look: an old estimate would slow the climb.
            self._cost[bucket] = per_row
        else:
            self._cost[bucket] = old + self._alpha * (per_row - old)
        self._seen += 1
        self._since_probe += 1
        self._probe = None
        if self._seen < self._warmup:
            return  # a few batches at the configured limit first: one odd timing must not set the cap
        previous = self._best
        self._best = min((c, b) for b, c in enumerate(self._cost) if c is not None)[1]
        if self._best != previous:
            # Moving pays: keep climbing the same way at once rather than after a full period.
            step = 1 if self._best > previous else -1
        elif self._since_probe >= self._every:
            # Routinely try each neighbour in turn, so a stale estimate cannot pin the cap.
            self._up = not self._up
            step = 1 if self._up else -1
        else:
            return
        probe = self._best + step
        if not 0 <= probe <= self._top:
            probe = self._best - step
        if 0 <= probe <= self._top:
            self._probe = probe
            self._since_probe = 0


class Batcher:
    """Batches one signature of one model version.

    For a model that runs inline on the loop (see ModelExecutor), nothing can arrive while a
    batch runs, so under concurrency requests instead gather for one loop turn: those that
    arrive together run as one batch. A lone request still runs at once; the batcher notices
    concurrency by letting one request in 32 wait a turn, and stops gathering after 32 turns
    in a row with one request each.

    A request that finds the batcher idle runs at once; requests that arrive while a batch
    runs wait in the queue and form the next batch (up to max_batch_size rows, only with
    requests whose non-batch dimensions match). When some batches run but a thread is free,
    a partial batch waits up to batch_timeout_micros for company. A queue holding
    max_enqueued_batches full batches turns new requests away with ResourceExhausted.

    On the worker-thread path, unless allowed_batch_sizes pins the sizes, a BatchSizeTuner
    lowers the cap below max_batch_size when smaller batches measure cheaper per row (on CPU
    a big batch can be slower per row than a small one).
    """

    _PROBE_EVERY = 32

    def __init__(self, model: str, version: int, signature: Signature, run: RunFn, *,
                 options: BatchingOptions, executor: ModelExecutor, clock: Clock,
                 on_batch: OnBatch | None = None) -> None:
        self.model = model
        self.version = version
        self.signature = signature
        self._sig_name = signature.name
        self._run = run
        self._max = options.execution_batch_size
        self._input_max = options.max_batch_size
        self._oversize_alone = options.oversize_runs_alone
        self._capacity = options.max_batch_size * options.max_enqueued_batches
        self._timeout = options.batch_timeout_micros / 1e6
        self._pad = options.pad_variable_length_inputs
        self._allowed = options.allowed_batch_sizes
        self._executor = executor
        self._threads = executor.threads
        self._clock = clock
        self._on_batch = on_batch
        self._queue: deque[_Task] = deque()
        self._queued_rows = 0
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._splittable = True
        self._gathering = False  # an inline model under concurrency: gather each loop turn
        self._flush_pending = False
        self._alone = 0  # flushes in a row that found a single request
        self._direct = 0
        self._tuner = None if self._allowed else BatchSizeTuner(self._max)

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def _key(self, inputs: dict[str, np.ndarray]) -> tuple:
        if self._pad:
            return tuple((a.ndim, a.dtype) for a in inputs.values())
        return tuple((a.shape[1:], a.dtype) for a in inputs.values())

    async def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch_rows(inputs)
        if rows > self._max:
            if self._oversize_alone and rows > self._input_max:
                return await self._executor.call(self._run, self._sig_name, inputs)
            if rows > self._input_max:
                # TF Serving's batcher refuses it too (rather than running it unbatched).
                raise InvalidArgument(f"Task size {rows} is larger than maximum input batch size {self._input_max}")
            return await self._submit_pieces(inputs, rows)  # enable_large_batch_splitting
        if not self._splittable:
            # Its outputs do not follow the batch dimension: it runs alone, like an unbatched request.
            return await self._executor.call(self._run, self._sig_name, inputs)
        if self._running == 0 and not self._queue:
            if self._executor.inline and (self._gathering or self._probe()):
                return await self._enqueue(inputs, rows)
            self._running += 1
            try:
                if self._on_batch is not None:
                    try:
                        self._on_batch(self.model, self.version, rows, 0.0)
                    except Exception:
                        log.exception("on_batch callback failed")
                if self._allowed and padded_size(rows, self._allowed) != rows:
                    size = padded_size(rows, self._allowed)
                    outputs = await self._executor.call(self._run, self._sig_name, pad_rows(inputs, size))
                    return split(outputs, [rows], size)[0]
                return await self._executor.call(self._run, self._sig_name, inputs)
            finally:
                self._running -= 1
                if self._queue:
                    self._dispatch()
        return await self._enqueue(inputs, rows)

    async def _submit_pieces(self, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """A request larger than one run: pieces of at most the execution batch size, joined back in order."""
        step = self._max
        pieces = [{k: v[i:i + step] for k, v in inputs.items()} for i in range(0, rows, step)]
        results = await asyncio.gather(*(self.submit(p) for p in pieces))
        try:
            return {name: np.concatenate([r[name] for r in results]) for name in results[0]}
        except ValueError as e:
            raise InvalidArgument(f"the outputs of a split request cannot be joined: {e}") from None

    def _probe(self) -> bool:
        # Now and then a request to an inline model waits one loop turn to see whether others
        # arrive with it; if they do, the batcher gathers until requests come alone again.
        self._direct += 1
        return self._direct % self._PROBE_EVERY == 0

    async def _enqueue(self, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        if self._queued_rows + rows > self._capacity:
            raise ResourceExhausted("The batch scheduling queue to which this task was submitted is full")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Task(inputs, rows, self._key(inputs), future, self._clock.monotonic()))
        self._queued_rows += rows
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        if self._executor.inline and self._running == 0:
            # A quick model: requests that arrive in the same loop turn run together, on the loop.
            if self._queue and not self._flush_pending:
                self._flush_pending = True
                asyncio.get_running_loop().call_soon(self._flush)
            return
        while self._queue and self._running < self._threads:
            if self._running and self._timeout > 0 and self._queued_rows < self._cap():
                wait = self._queue[0].enqueued + self._timeout - self._clock.monotonic()
                if wait > 0:
                    if self._timer is None:
                        self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)
                    return
            batch = self._take()
            self._running += 1
            asyncio.get_running_loop().create_task(self._run_batch(batch))

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _flush(self) -> None:
        self._flush_pending = False
        if len(self._queue) > 1:
            self._gathering, self._alone = True, 0
        else:
            self._alone += 1
            if self._alone >= self._PROBE_EVERY:
                self._gathering = False
        while self._queue:
            if not (self._executor.inline and self._running == 0):
                self._dispatch()  # the model turned slow: back to worker threads
                return
            batch = self._take()
            self._report(batch)
            self._finish(batch, self._executor.run_inline(self._compute, batch))

    def _cap(self) -> int:
        if self._tuner is None or self._executor.inline:
            return self._max
        return self._tuner.cap()

    def _take(self) -> list[_Task]:
        head = self._queue.popleft()
        batch = [head]
        rows = head.rows
        cap = self._cap()
        if self._queue and rows < cap:
            keep: deque[_Task] = deque()
            while self._queue:
                task = self._queue.popleft()
                if task.key == head.key and rows + task.rows <= cap:
                    batch.append(task)
                    rows += task.rows
                else:
                    keep.append(task)
                    if rows >= cap:
                        break
            keep.extend(self._queue)
            self._queue = keep
        self._queued_rows -= rows
        return batch

    def _report(self, batch: list[_Task]) -> None:
        if self._on_batch is not None:
            try:
                self._on_batch(self.model, self.version, sum(t.rows for t in batch),
                               self._clock.monotonic() - batch[0].enqueued)
            except Exception:  # metrics must never cost a request
                log.exception("on_batch callback failed")

    async def _run_batch(self, batch: list[_Task]) -> None:
        try:
            batch = [t for t in batch if not t.future.done()]  # the client went away
            if not batch:
                return
            self._report(batch)
            timed = self._tuner is not None and not self._executor.inline
            start = self._clock.monotonic()
            try:
                results = await self._executor.call(self._compute, batch)
            except Exception as e:
                results = [e] * len(batch)
            if timed:
                self._tuner.observe(sum(t.rows for t in batch), self._clock.monotonic() - start)
            self._finish(batch, results)
        finally:
            self._running -= 1
            self._dispatch()

    def _compute(self, batch: list[_Task]) -> list:
        """Run a batch and cut its outputs per request: an outputs dict or an exception each.

        Touches no futures, so it may run in a worker thread.
        """
        sizes = [t.rows for t in batch]
        total = sum(sizes)
        try:
            if len(batch) == 1 and not self._allowed:
                return [self._run(self._sig_name, batch[0].inputs)]
            inputs = stack([t.inputs for t in batch], self._pad)
            size = padded_size(total, self._allowed)
            if size != total:
                inputs = pad_rows(inputs, size)
            return split(self._run(self._sig_name, inputs), sizes, size)
        except _Unsplittable as e:
            log.warning("model %s version %s: output %r does not follow the batch dimension; "
                        "running its requests one by one from now on", self.model, self.version, str(e))
            self._splittable = False
            return self._one_by_one(batch)
        except InvalidArgument as e:
            if len(batch) == 1:
                return [e]
            # One bad request must not fail its neighbours: find it by running each alone.
            return self._one_by_one(batch)
        except Exception as e:
            return [e] * len(batch)

    def _one_by_one(self, batch: list[_Task]) -> list:
        results: list = []
        for task in batch:
            try:
                results.append(self._run(self._sig_name, task.inputs))
            except Exception as e:
                results.append(e)
        return results

    @staticmethod
    def _finish(batch: list[_Task], results: list) -> None:
        for task, result in zip(batch, results):
            if isinstance(result, BaseException):
                _fail(task, result)
            else:
                _resolve(task, result)


def _resolve(task: _Task, outputs: dict[str, np.ndarray]) -> None:
    if not task.future.done():
        task.future.set_result(outputs)


def _fail(task: _Task, error: BaseException) -> None:
    if not task.future.done():
        if not isinstance(error, TidalError):
            log.exception("batch failed", exc_info=error)
        task.future.set_exception(error)
