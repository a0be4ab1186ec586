"""A loaded model version: validates requests and runs them, through the batcher where the signature allows."""

from __future__ import annotations

import asyncio

import numpy as np

from tidal.clock import Clock
from tidal.errors import InvalidArgument, Unavailable
from tidal.models.batching import Batcher, OnBatch
from tidal.models import config
from tidal.models.config import BatchingOptions, RuntimeOptions
from tidal.models.executor import ModelExecutor
from tidal.models.runtimes import Runtime
from tidal.models.signatures import InputChecker, Signature


def batch_threads(batching: BatchingOptions, runtime_options: RuntimeOptions) -> int:
    """Concurrent runs: the configured number, else as many as fit the cores beside the runtime's own threads."""
    if batching.num_batch_threads:
        return batching.num_batch_threads
    cores = config.usable_cores()
    per_run = runtime_options.intra_op_threads or cores
    return max(1, cores // per_run)


class Servable:
    """One model version that serves requests; `predict` is the whole data path."""

    def __init__(self, name: str, version: int, runtime: Runtime, *, batching: BatchingOptions,
                 runtime_options: RuntimeOptions, clock: Clock, on_batch: OnBatch | None = None) -> None:
        self.name = name
        self.version = version
        self.platform = runtime.platform
        self.signatures: dict[str, Signature] = dict(runtime.signatures)
        self._runtime = runtime
        self._run = runtime.run
        self._checkers = {name: InputChecker(sig) for name, sig in self.signatures.items()}
        self.executor = ModelExecutor(batch_threads(batching, runtime_options),
                                      batching.inline_threshold_micros / 1e6, name=f"{name}-{version}")
        self.batchers: dict[str, Batcher] = {}
        if batching.enabled:
            for sig in self.signatures.values():
                if sig.batchable:
                    self.batchers[sig.name] = Batcher(name, version, sig, runtime.run, options=batching,
                                                      executor=self.executor, clock=clock, on_batch=on_batch)
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._closed = False

    async def predict(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check = self._checkers.get(signature_name)
        if check is None:
            raise InvalidArgument(f'Serving signature name: "{signature_name}" not found in signature def')
        inputs = check(inputs)
        if self._closed:
            # Resolved just before its version was unloaded: the client may retry and reach the new one.
            raise Unavailable(f"version {self.version} of model {self.name} has been unloaded; retry the request")
        self._inflight += 1
        try:
            batcher = self.batchers.get(signature_name)
            if batcher is not None and (batcher.signature.strict_shapes or all(a.ndim for a in inputs.values())):
                return await batcher.submit(inputs)
            return await self.executor.call(self._run, signature_name, inputs)
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

    @property
    def inflight(self) -> int:
        return self._inflight

    async def drain(self, timeout: float) -> bool:
        """Wait for requests already inside to finish; False when the timeout came first."""
        if self._inflight == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self._closed = True
        self.executor.close()
        self._runtime.close()
