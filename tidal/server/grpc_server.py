"""The gRPC server: TF Serving's and the Open Inference Protocol's services on one port, on one of two engines."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from enum import Enum

import grpc

from tidal.server.dataplane import DataPlane
from tidal.server.grpc_api import (
    Adapter, GrpcBindError, OnLoop, Route, Rpc, tfs_model, tfs_version, service_handler, service_routes,
)
from tidal.server.metrics import ServerMetrics
from tidal.server import tfs_protos


class GrpcEngine(str, Enum):
    """Which server speaks gRPC: HTTP/2 on the serving loop itself (tidal/http/h2.py), or grpcio's own."""

    LOOP = "loop"
    GRPCIO = "grpcio"


class GrpcServer:
    """TF Serving's and the Open Inference Protocol's gRPC services on one port. Build, `await start()` on the
    serving loop, `await stop()`.

    By default (GrpcEngine.LOOP) HTTP/2 is served on the event loop the REST server uses, and each
    RPC runs there directly, as a REST request does: measured on this project's benchmarks, grpcio's
    Python server spends more CPU handing each call between its threads and the loop than the call
    itself takes (see tidal/server/grpc_loop.py). GrpcEngine.GRPCIO keeps grpcio's synchronous server:
    its threads receive and answer, each RPC's work runs on the loop (run_coroutine_threadsafe).
    Either way the manager, the batchers and the metrics stay single-threaded.
    """

    def __init__(self, manager, metrics: ServerMetrics, host: str, port: int, *,
                 max_message_bytes: int = 64 << 20, threads: int = 64, plane: DataPlane | None = None,
                 channel_arguments: tuple = (), engine: GrpcEngine = GrpcEngine.LOOP) -> None:
        # TF Serving's services need tensorflow-serving-api; the Open Inference Protocol's need only grpcio.
        self.pb = tfs_protos.load() if tfs_protos.available() else None
        self.adapter = Adapter(manager, self.pb, plane)
        self.metrics = metrics
        self.host = host
        self.requested_port = port
        self.max_message_bytes = max_message_bytes
        self.threads = threads
        self.channel_arguments = tuple(channel_arguments)  # --grpc_channel_arguments
        self.engine = GrpcEngine(engine)
        self.port = 0
        self._server = None  # grpc.Server, or tidal.http.h2.H2Server
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = OnLoop(metrics, lambda: self._loop, "gRPC", "", tfs_model, tfs_version)

    def _rpc(self, api: str, handler) -> Rpc:
        return self._runner.method(api, handler)

    def services(self) -> list[tuple[object, dict[str, Rpc]]]:
        """(service descriptor, implementations): PredictionService and ModelService as tensorflow-serving-api's
        descriptors define them, and V2's service."""
        from tidal.server.grpc_v2 import V2GrpcService

        v2 = V2GrpcService(self.adapter.plane, self.metrics, lambda: self._loop).service()
        if self.pb is None:
            return [v2]
        a = self.adapter
        prediction = self.pb.prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
        model = self.pb.model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
        return [
            (prediction, {
                "Predict": self._rpc("grpc_predict", a.predict),
                "Classify": self._rpc("grpc_classify", a.classify),
                "Regress": self._rpc("grpc_regress", a.regress),
                "GetModelMetadata": self._rpc("grpc_metadata", a.metadata),
                "MultiInference": self._rpc("grpc_multi_inference", a.multi_inference),
            }),
            (model, {"GetModelStatus": self._rpc("grpc_status", a.status),
                     "HandleReloadConfigRequest": self._rpc("grpc_reload_config", a.reload_config)}),
            v2,
        ]

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """The services as grpcio handlers."""
        return [service_handler(service, impls) for service, impls in self.services()]

    def routes(self) -> dict[bytes, Route]:
        """The services as the on-loop server's routes."""
        routes: dict[bytes, Route] = {}
        for service, impls in self.services():
            routes.update(service_routes(service, impls))
        return routes

    def _address(self) -> str:
        return f"[{self.host}]:{self.requested_port}" if ":" in self.host else f"{self.host}:{self.requested_port}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.engine is GrpcEngine.LOOP:
            from tidal.server.grpc_loop import start_on_loop

            self._server = await start_on_loop(self, self._address())
            self.port = self._server.port
            return
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tidal-grpc")
        server = grpc.server(self._pool, handlers=self.handlers(), options=[
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", -1),
            # Without this a second server on the same port binds too and takes half the connections.
            ("grpc.so_reuseport", 0),
            *self.channel_arguments,
        ])
        address = self._address()
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            self.port = 0
            detail = f": {exc}"
        else:
            detail = " (in use or not an address of this machine)"
        if not self.port:
            self._pool.shutdown(wait=False)
            raise GrpcBindError(f"cannot listen on {address} for gRPC{detail}")
        server.start()
        self._server = server

    async def stop(self, grace_seconds: float) -> None:
        """Stop accepting RPCs; those in flight get up to `grace_seconds` to finish (the loop keeps serving them)."""
        if self._server is not None and self.engine is GrpcEngine.LOOP:
            await self._server.stop(grace_seconds)
            self._server = None
        if self._server is not None:
            stopped = self._server.stop(grace_seconds)
            await asyncio.get_running_loop().run_in_executor(None, stopped.wait)
            self._server = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
