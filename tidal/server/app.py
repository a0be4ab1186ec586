"""The model server's request handler: dispatch to the TF Serving and V2 adapters, health and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import CoroutineType

from tidal.http.server import DEFAULT_MAX_BODY, Request, Response, error_response
from tidal.server.dataplane import DataPlane
from tidal.server.metrics import ServerMetrics
from tidal.server.tfserving import TFServingAPI
from tidal.server.v2 import V2API, not_allowed

METRICS_PATHS = ("/metrics", "/monitoring/prometheus/metrics")
PROMETHEUS_TEXT = b"text/plain; version=0.0.4; charset=utf-8"


class ModelServerApp:
    """A handler for tidal.http.server.HttpServer over a model manager (see docs/CONTRACTS.md)."""

    def __init__(self, manager, metrics: ServerMetrics | None = None, *, max_body: int = DEFAULT_MAX_BODY,
                 plane: DataPlane | None = None, metrics_path: str | None = None,
                 rest_timeout: float | None = None) -> None:
        self.manager = manager
        self.metrics = metrics if metrics is not None else ServerMetrics()
        self.plane = plane if plane is not None else DataPlane(manager)
        self.tfserving = TFServingAPI(manager, self.metrics, self.plane)
        self.v2 = V2API(manager, self.metrics, max_body=max_body, plane=self.plane)
        # --monitoring_config_file's prometheus path, besides the two always served
        self.metrics_paths = METRICS_PATHS + ((metrics_path,) if metrics_path and metrics_path not in METRICS_PATHS
                                              else ())
        self.rest_timeout = rest_timeout  # --rest_api_timeout_in_ms, for TF Serving's /v1 API

    def __call__(self, req: Request):
        path = req.path
        # TF Serving matches its routes case-insensitively ("(?i)/v1/.*").
        if path.startswith("/v1/") or path[:4].lower() == "/v1/":
            result = eager(self.tfserving.handle(req))
            if self.rest_timeout is not None and isinstance(result, Awaitable):
                return _deadline(result, self.rest_timeout)
            return result
        if path.startswith("/v2"):
            return eager(self.v2.handle(req))
        if path in self.metrics_paths:
            if req.method != "GET":
                return not_allowed(req.method, path, "GET")
            return Response(200, self.metrics.render(), content_type=PROMETHEUS_TEXT)
        return error_response(404, f"Not found: {req.method} {path}")


async def _deadline(pending, seconds: float):
    """A /v1 response that did not finish at once, or 504 once the timeout passes (the work is cancelled)."""
    try:
        return await asyncio.wait_for(pending, seconds)
    except asyncio.TimeoutError:
        return error_response(504, f"Request timed out after {seconds * 1000:.0f} ms (--rest_api_timeout_in_ms)")


def eager(result):
    """Run a handler coroutine up to its first real suspension, right away.

    With a tiny model the whole prediction finishes without ever waiting (the
    runtime runs inline, the batcher is idle), so the answer goes back without
    the Task the HTTP server would otherwise make for it: a few microseconds of
    a budget of tens. A coroutine that does wait goes on in `_resume`.
    """
    if type(result) is not CoroutineType:
        return result
    try:
        yielded = result.send(None)
    except StopIteration as stop:
        return stop.value
    return _resume(result, yielded)


async def _resume(coro, yielded):
    """Drive a started coroutine from inside a Task, as the Task would have."""
    while True:
        if yielded is None:  # a bare yield (asyncio.sleep(0)): let the loop turn once
            await asyncio.sleep(0)
        else:
            # What a Task does with a yielded future: take over the "blocking" token the
            # future's own iterator set, so that awaiting it here is legal.
            yielded._asyncio_future_blocking = False
            try:
                await yielded
            except BaseException:
                # The coroutine sees the outcome itself when resumed: its own `await`
                # re-raises the future's exception, or CancelledError when this Task was
                # cancelled (cancelling a Task cancels the future it waits on).
                pass
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value
