"""`tidal model-server`: one model-server process, started with TF Serving's own flags."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import re
import signal
import sys
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tidal.errors import UserError
from tidal.server import tfs_flags

log = logging.getLogger("tidal.server")

EPILOG = """\
A TF Serving command line carries over unchanged:
  tidal model-server --port 8500 --rest_api_port 8501 \\
      --model_name half_plus_two --model_base_path /models/half_plus_two
  curl -d '{"instances": [1.0, 2.0]}' localhost:8501/v1/models/half_plus_two:predict

REST serves TF Serving's API (/v1/models/...), the Open Inference Protocol (/v2/...,
with Triton's binary tensor extension) and Prometheus metrics (/metrics and
/monitoring/prometheus/metrics). Ready when GET /v2/health/ready answers 200.
SIGTERM stops accepting, finishes the requests in flight, then exits 0.
"""


class ServerSettings(BaseModel):
    """Everything the model-server process is told, whichever way it was told."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grpc_port: int = Field(8500, ge=0, le=65535)
    rest_api_port: int = Field(8501, ge=0, le=65535)
    rest_api_host: str = "0.0.0.0"
    model_name: str = "default"
    model_base_path: str | None = None
    model_config_file: str | None = None
    poll_seconds: float = 1.0
    enable_batching: bool | None = None
    batching_parameters_file: str | None = None
    intra_op_threads: int = Field(0, ge=0)
    inter_op_threads: int = Field(0, ge=0)
    max_body_bytes: int = Field(64 << 20, gt=0)
    memory_budget_bytes: int = Field(1 << 30, gt=0)
    drain_seconds: float = Field(30.0, ge=0)
    cache_dir: str | None = None
    version_zero_is_default: bool = False
    config_poll_seconds: float = Field(0.0, ge=0)
    monitoring_config_file: str | None = None
    enable_warmup: bool = True
    warmup_iterations: int = Field(1, ge=1)
    saved_model_tags: tuple[str, ...] = ("serve",)
    rest_timeout_ms: int = Field(30000, ge=0)
    grpc_max_threads: int = Field(64, ge=1)
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = ()
    grpc_server: Literal["loop", "grpcio"] = "loop"  # grpc_server.GrpcEngine
    max_load_retries: int = Field(5, ge=0)
    load_retry_interval_seconds: float = Field(60.0, ge=0)
    notes: tuple[str, ...] = ()  # one line per TF Serving flag given that has no effect here


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "t"):
        return True
    if value in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    p = parser.add_argument
    p("--port", type=int, default=8500, metavar="PORT",
      help="gRPC port on --rest_api_host (default 8500; 0 turns it off): the Open Inference Protocol "
           "(inference.GRPCInferenceService) and TF Serving's PredictionService and ModelService (those two need "
           "the tensorflow extra: pip install tidal[tensorflow])")
    p("--rest_api_port", type=int, default=8501, metavar="PORT", help="REST port (default 8501; 0 picks a free one)")
    p("--rest_api_host", default="0.0.0.0", metavar="HOST", help="REST address to listen on (default 0.0.0.0)")
    p("--model_name", default="default", help="name of the model (default 'default'); ignored with --model_config_file")
    p("--model_base_path", metavar="PATH_OR_URL",
      help="directory with numeric version subdirectories: a path or an fsspec URL (file://, s3://, oss://, gs://)")
    p("--model_config_file", metavar="FILE",
      help="TF Serving's model_config_list text file (several models, version policies, labels)")
    p("--file_system_poll_wait_seconds", type=float, default=1.0, metavar="N",
      help="seconds between polls of the base paths for new and removed versions (default 1; 0 polls once)")
    p("--enable_batching", type=_bool, nargs="?", const=True, default=None, metavar="BOOL",
      help="dynamic batching; on by default for models with a batch dimension (--enable_batching=false turns it off)")
    p("--batching_parameters_file", metavar="FILE",
      help="TF Serving's BatchingParameters text file (max_batch_size, batch_timeout_micros, ...)")
    p("--tensorflow_intra_op_parallelism", type=int, default=0, metavar="N",
      help="threads inside one model run (onnxruntime intra_op_num_threads; 0: the runtime's default)")
    p("--tensorflow_inter_op_parallelism", type=int, default=0, metavar="N",
      help="threads across independent operators (onnxruntime inter_op_num_threads; 0: the runtime's default)")
    p("--rest_api_max_body_bytes", type=int, default=64 << 20, metavar="N",
      help="largest request body accepted (default 64 MiB); larger ones get 413")
    p("--request_memory_budget_bytes", type=int, default=1 << 30, metavar="N",
      help="most memory decoding one request's JSON may take, estimated before decoding (default 1 GiB); "
           "more gets 413")
    p("--drain_seconds", type=float, default=30.0, metavar="N",
      help="on SIGTERM, how long to wait for requests in flight (default 30)")
    p("--model_cache_dir", metavar="DIR", help="local cache for versions read from remote stores")
    p("--version_zero_is_default", type=_bool, nargs="?", const=True, default=False, metavar="BOOL",
      help="read model version 0 as the default version, as OVMS does (default false: as in TF Serving, "
           "version 0 is a version that is not found)")
    p("--model_config_file_poll_wait_seconds", type=float, default=0.0, metavar="N",
      help="re-read --model_config_file every N seconds and apply it (models added, removed, policies changed); "
           "0 (default) reads it once")
    p("--monitoring_config_file", metavar="FILE",
      help="TF Serving's MonitoringConfig text file: prometheus_config { enable: true path: \"/...\" } also serves "
           "the metrics at that path (/metrics is always served)")
    p("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True, metavar="BOOL",
      help="replay assets.extra/tf_serving_warmup_requests before a version serves (default true)")
    p("--num_request_iterations_for_warmup", type=int, default=1, metavar="N",
      help="times each warmup request is replayed (default 1)")
    p("--saved_model_tags", default="serve", metavar="TAGS",
      help="comma-separated tags of the SavedModel meta graph to load (default serve)")
    p("--rest_api_timeout_in_ms", type=int, default=30000, metavar="MS",
      help="a TF Serving REST request (/v1) still running after MS milliseconds gets 504 (default 30000; 0: none)")
    p("--grpc_max_threads", type=int, default=0, metavar="N",
      help="gRPC server threads, each holding one RPC in flight (default 0: 64)")
    p("--grpc_channel_arguments", default="", metavar="K=V,...",
      help="gRPC server channel arguments, e.g. grpc.max_connection_age_ms=2000 (--grpc_server=grpcio)")
    p("--grpc_server", choices=("loop", "grpcio"), default=None,
      help="loop: gRPC's HTTP/2 served on the REST server's event loop (the default, fastest); grpcio: grpcio's "
           "threaded server (the default when --grpc_max_threads or --grpc_channel_arguments is given)")
    p("--max_num_load_retries", type=int, default=5, metavar="N",
      help="times a version that failed to load is tried again (default 5)")
    p("--load_retry_interval_micros", type=int, default=60_000_000, metavar="US",
      help="wait between load retries in microseconds (default 60000000)")
    p("--version", action=_Version, nargs=0, help="print the version and exit")
    tfs_flags.add_arguments(parser)


class _Version(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        import tidal

        print(f"TensorFlow ModelServer: tidal model-server {tidal.__version__} (TF Serving's REST and gRPC APIs)")
        parser.exit()


def _channel_arguments(text: str) -> tuple[tuple[str, int | str], ...]:
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        value = value.strip()
        out.append((key.strip(), int(value) if re.fullmatch(r"-?\d+", value) else value))
    return tuple(out)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    if not args.model_config_file and not args.model_base_path:
        raise UserError("give --model_base_path (with --model_name) or --model_config_file")
    for name in ("port", "rest_api_port"):
        value = getattr(args, name)
        if not 0 <= value <= 65535:
            raise UserError(f"--{name} must be between 0 and 65535, got {value}")
    for name in ("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name} must not be negative")
    if args.rest_api_max_body_bytes <= 0:
        raise UserError("--rest_api_max_body_bytes must be positive")
    if args.request_memory_budget_bytes <= 0:
        raise UserError("--request_memory_budget_bytes must be positive")
    if args.drain_seconds < 0:
        raise UserError("--drain_seconds must not be negative")
    if args.file_system_poll_wait_seconds < 0:
        raise UserError("--file_system_poll_wait_seconds must not be negative (0 polls once)")
    for name in ("model_config_file_poll_wait_seconds", "rest_api_timeout_in_ms", "grpc_max_threads",
                 "max_num_load_retries", "load_retry_interval_micros"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name} must not be negative")
    if args.num_request_iterations_for_warmup < 1:
        raise UserError("--num_request_iterations_for_warmup must be at least 1")
    if args.model_config_file_poll_wait_seconds and not args.model_config_file:
        raise UserError("--model_config_file_poll_wait_seconds needs --model_config_file")
    tags = tuple(t.strip() for t in args.saved_model_tags.split(",") if t.strip())
    if not tags:
        raise UserError("--saved_model_tags needs at least one tag, e.g. serve")
    try:
        notes = tfs_flags.check(args)
        grpc_server, grpc_notes = tfs_flags.grpc_engine(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return ServerSettings(
        grpc_port=args.port, rest_api_port=args.rest_api_port, rest_api_host=args.rest_api_host,
        model_name=args.model_name, model_base_path=args.model_base_path,
        model_config_file=args.model_config_file, poll_seconds=args.file_system_poll_wait_seconds,
        enable_batching=args.enable_batching, batching_parameters_file=args.batching_parameters_file,
        intra_op_threads=args.tensorflow_intra_op_parallelism, inter_op_threads=args.tensorflow_inter_op_parallelism,
        max_body_bytes=args.rest_api_max_body_bytes, memory_budget_bytes=args.request_memory_budget_bytes,
        drain_seconds=args.drain_seconds,
        cache_dir=args.model_cache_dir, config_poll_seconds=args.model_config_file_poll_wait_seconds,
        monitoring_config_file=args.monitoring_config_file, enable_warmup=args.enable_model_warmup,
        warmup_iterations=args.num_request_iterations_for_warmup, saved_model_tags=tags,
        rest_timeout_ms=args.rest_api_timeout_in_ms, grpc_max_threads=args.grpc_max_threads or 64,
        grpc_channel_arguments=_channel_arguments(args.grpc_channel_arguments), grpc_server=grpc_server,
        max_load_retries=args.max_num_load_retries,
        load_retry_interval_seconds=args.load_retry_interval_micros / 1e6, notes=tuple(notes + grpc_notes),
        version_zero_is_default=args.version_zero_is_default)


def redact(url: str) -> str:
    """A location fit for a log line: any user:password@ part removed."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1***@", url)


def model_configs(settings: ServerSettings):
    from tidal.models.config import ModelConfig, load_model_config_file

    if settings.model_config_file:
        if settings.model_base_path:
            log.warning("--model_config_file given: --model_name and --model_base_path are ignored (as in TF Serving)")
        return load_model_config_file(settings.model_config_file)
    try:
        return [ModelConfig(name=settings.model_name, base_path=settings.model_base_path)]
    except ValueError as exc:
        raise UserError(f"bad --model_name or --model_base_path: {exc}") from None


def batching_options(settings: ServerSettings):
    from tidal.models.config import BatchingOptions, load_batching_parameters_file

    if settings.enable_batching is False:
        return BatchingOptions(enabled=False)
    if settings.batching_parameters_file:
        return load_batching_parameters_file(settings.batching_parameters_file)
    if settings.enable_batching:
        return BatchingOptions()  # asked for: TF Serving's parameters, its size limit included
    return None  # the manager's default: on, with TF Serving's parameters, oversized requests run alone


class ModelServer:
    """The process's parts: manager, metrics, HTTP server. Build, then `await start()`; `await stop()` drains."""

    def __init__(self, settings: ServerSettings) -> None:
        from tidal.http.server import HttpServer
        from tidal.models.config import MonitoringOptions, RuntimeOptions, load_monitoring_config_file
        from tidal.models.lifecycle import RetryPolicy
        from tidal.models.manager import ModelManager
        from tidal.server.app import ModelServerApp
        from tidal.server.dataplane import DataPlane, LargeBodies
        from tidal.server.metrics import ServerMetrics

        self.settings = settings
        for note in settings.notes:
            log.warning("%s", note)
        monitoring = (load_monitoring_config_file(settings.monitoring_config_file)
                      if settings.monitoring_config_file else MonitoringOptions())
        self.metrics = ServerMetrics()
        self.manager = ModelManager(
            model_configs(settings), poll_seconds=settings.poll_seconds, batching=batching_options(settings),
            cache_dir=settings.cache_dir, on_batch=self.metrics.observe_batch,
            runtime_options=RuntimeOptions(intra_op_threads=settings.intra_op_threads,
                                           inter_op_threads=settings.inter_op_threads,
                                           saved_model_tags=settings.saved_model_tags),
            retry=RetryPolicy(settings.max_load_retries, settings.load_retry_interval_seconds),
            warmup=settings.enable_warmup, warmup_iterations=settings.warmup_iterations)
        self.plane = DataPlane(self.manager, LargeBodies(memory_budget=settings.memory_budget_bytes),
                               version_zero_is_default=settings.version_zero_is_default)
        self.app = ModelServerApp(self.manager, self.metrics, max_body=settings.max_body_bytes, plane=self.plane,
                                  metrics_path=monitoring.path if monitoring.enable else None,
                                  rest_timeout=settings.rest_timeout_ms / 1000 or None)
        self._config_poller: asyncio.Task | None = None
        self._config_text: str | None = None
        self.http = HttpServer(self.app, settings.rest_api_host, settings.rest_api_port,
                               max_body=settings.max_body_bytes)
        self.grpc = _grpc_server(settings, self.manager, self.metrics, self.plane)

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self) -> None:
        # Listen first so liveness answers while the models load; readiness waits for them.
        await self.http.start()
        log.info("REST API on http://%s:%d (TF Serving /v1, V2 /v2, metrics /metrics)",
                 self.settings.rest_api_host, self.http.port)
        if self.grpc is not None:
            await self.grpc.start()
            log.info("gRPC API on %s:%d (%s)", self.settings.rest_api_host, self.grpc.port,
                     "V2 inference.GRPCInferenceService" + (", TF Serving's PredictionService and ModelService"
                                                            if self.grpc.pb is not None else ""))
        await self.manager.start()
        if self.settings.model_config_file and self.settings.config_poll_seconds > 0:
            self._config_text = await asyncio.to_thread(_read_text, self.settings.model_config_file)
            self._config_poller = asyncio.get_running_loop().create_task(self._poll_config())
        for name in self.manager.model_names():
            versions = [s.version for s in self.manager.status(name)] if _has_status(self.manager, name) else []
            log.info("model %s from %s: versions %s", name, redact(self.manager.config(name).base_path),
                     versions or "none yet")

    async def _poll_config(self) -> None:
        """--model_config_file_poll_wait_seconds: apply the file whenever its text changes; a bad file keeps the old."""
        from tidal.models.config import parse_model_config_list

        path = self.settings.model_config_file
        while True:
            await asyncio.sleep(self.settings.config_poll_seconds)
            try:
                text = await asyncio.to_thread(_read_text, path)
                if text == self._config_text:
                    continue
                self._config_text = text
                await self.manager.reconfigure(parse_model_config_list(text, source=path))
                log.info("applied %s: models %s", path, self.manager.model_names())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bad edit must not stop the polling or the serving
                log.error("model config not applied, still serving the previous one: %s", exc)

    async def stop(self) -> None:
        if self._config_poller is not None:
            self._config_poller.cancel()
        log.info("stopping: draining %d requests in flight", self.http.in_flight)
        await asyncio.gather(self.http.stop(self.settings.drain_seconds),
                             *([self.grpc.stop(self.settings.drain_seconds)] if self.grpc is not None else []))
        await self.manager.stop()
        self.plane.large.close()
        log.info("stopped")


def _grpc_server(settings: ServerSettings, manager, metrics, plane=None):
    """The gRPC server when --port is set (TF Serving's services too when tensorflow-serving-api is installed)."""
    if not settings.grpc_port:
        return None
    from tidal.server import tfs_protos

    if not tfs_protos.available():
        log.warning("TF Serving's gRPC services (--port %d) need the tensorflow extra (pip install "
                    "tidal[tensorflow]); serving the Open Inference Protocol's alone there", settings.grpc_port)
    from tidal.server.grpc_server import GrpcServer

    return GrpcServer(manager, metrics, settings.rest_api_host, settings.grpc_port,
                      max_message_bytes=settings.max_body_bytes, plane=plane, threads=settings.grpc_max_threads,
                      channel_arguments=settings.grpc_channel_arguments, engine=settings.grpc_server)


def _read_text(path: str) -> str:
    from tidal.models.config import read_text

    return read_text(path)


def _has_status(manager, name: str) -> bool:
    from tidal.errors import NotFound
    try:
        manager.status(name)
        return True
    except NotFound:
        return False


async def serve(settings: ServerSettings) -> None:
    from tidal.server.large import bound_heap

    bound_heap()  # memory a large request took goes back once it is freed
    server = ModelServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    # Long-lived objects from loading need no more collector passes; fewer, cheaper passes on the hot path.
    gc.collect()
    gc.freeze()
    await stop.wait()
    await server.stop()


def run(args: argparse.Namespace) -> int:
    import os
    from tidal.logs import setup_from_env
    setup_from_env(os.environ, stream=sys.stderr)  # TIDAL_LOG_FILE etc.: rotated file, repeats collapsed
    settings = settings_from_args(args)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        runner = asyncio.run
    try:
        runner(serve(settings))
    except OSError as exc:
        if type(exc).__name__ == "GrpcBindError":
            print(f"tidal model-server: error: {exc}", file=sys.stderr)
            return 1
        print(f"tidal model-server: error: cannot listen on {settings.rest_api_host}:{settings.rest_api_port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
