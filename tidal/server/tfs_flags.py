"""TF Serving's model-server flags that Tidal does not act on: each either noted in one log line or refused in one."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from enum import Enum


class Treatment(str, Enum):
    NO_EFFECT = "no effect"  # accepted so existing command lines run; one warning line says why
    REFUSED = "refused"      # the process exits with one error line: carrying on would serve something else


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    treatment: Treatment
    why: str
    # Values that change nothing (TF Serving's defaults, or off): given with one of these, a refused flag passes.
    harmless: tuple[str, ...] = ()


_FALSE = ("false", "0", "no", "f", "")

# Every TF Serving flag that tidal model-server does not honour; the honoured ones are real options in main.py.
FLAGS: tuple[Flag, ...] = (
    Flag("rest_api_num_threads", Treatment.NO_EFFECT, "REST runs on one event loop; model runs use their own pool"),
    Flag("tensorflow_session_parallelism", Treatment.NO_EFFECT,
         "use --tensorflow_intra_op_parallelism and --tensorflow_inter_op_parallelism"),
    Flag("allow_version_labels", Treatment.NO_EFFECT, "version labels are always allowed"),
    Flag("allow_version_labels_for_unavailable_models", Treatment.NO_EFFECT,
         "a label may point at any version; requests to an unavailable one get NOT_FOUND"),
    Flag("num_load_threads", Treatment.NO_EFFECT, "versions of different models load concurrently, one at a time each"),
    Flag("num_unload_threads", Treatment.NO_EFFECT, "unloads run on the event loop's worker threads"),
    Flag("flush_filesystem_caches", Treatment.NO_EFFECT, "Tidal keeps no file-system cache to flush"),
    Flag("enable_signature_method_name_check", Treatment.NO_EFFECT,
         "classify and regress always check the signature's method name"),
    Flag("remove_unused_fields_from_bundle_metagraph", Treatment.NO_EFFECT,
         "TensorFlow's loader keeps the meta graph it needs"),
    Flag("xla_cpu_compilation_enabled", Treatment.NO_EFFECT, "signatures run as exported"),
    Flag("enable_profiler", Treatment.NO_EFFECT, "use py-spy or TensorFlow's profiler on the process"),
    Flag("enable_grpc_healthcheck_service", Treatment.NO_EFFECT, "readiness is GET /v2/health/ready"),
    Flag("enable_per_model_batching_parameters", Treatment.NO_EFFECT,
         "one --batching_parameters_file applies to every model"),
    Flag("num_tflite_pools", Treatment.NO_EFFECT, "Tidal serves no TFLite models"),
    Flag("num_tflite_interpreters_per_pool", Treatment.NO_EFFECT, "Tidal serves no TFLite models"),
    Flag("mixed_precision", Treatment.NO_EFFECT, "signatures run in the precision they were exported in"),
    Flag("skip_initialize_tpu", Treatment.NO_EFFECT, "Tidal initialises no TPU"),
    Flag("per_process_gpu_memory_fraction", Treatment.NO_EFFECT,
         "GPU memory is TensorFlow's default (grow as needed)"),
    Flag("rest_api_enable_cors_support", Treatment.NO_EFFECT, "put a proxy in front for CORS"),
    Flag("prefer_tflite_model", Treatment.REFUSED, "Tidal serves no TFLite models", _FALSE),
    Flag("use_alts_credentials", Treatment.REFUSED, "gRPC serves without ALTS; terminate it in front", _FALSE),
    Flag("ssl_config_file", Treatment.REFUSED, "gRPC serves without TLS; terminate TLS in front"),
    Flag("grpc_socket_path", Treatment.REFUSED, "gRPC listens on --port only"),
    Flag("platform_config_file", Treatment.REFUSED,
         "the runtime is chosen by each version's files; use --saved_model_tags and the thread flags"),
    Flag("tensorflow_session_config_file", Treatment.REFUSED,
         "use --tensorflow_intra_op_parallelism and --tensorflow_inter_op_parallelism"),
    Flag("thread_pool_factory_config_file", Treatment.REFUSED, "model runs use Tidal's own thread pools"),
    Flag("use_tflite_model", Treatment.REFUSED, "Tidal serves no TFLite models", _FALSE),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag in FLAGS:
        parser.add_argument(f"--{flag.name}", default=None, nargs="?", const="true", help=argparse.SUPPRESS)


def check(args: argparse.Namespace) -> list[str]:
    """One warning line per given no-effect flag; ValueError with one line for a given refused flag."""
    notes = []
    for flag in FLAGS:
        value = getattr(args, flag.name, None)
        if value is None:
            continue
        if flag.treatment is Treatment.REFUSED:
            if value.strip().lower() in flag.harmless:
                continue
            raise ValueError(f"--{flag.name} is not supported: {flag.why}")
        notes.append(f"--{flag.name} has no effect in tidal model-server: {flag.why}")
    return notes


def grpc_engine(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The gRPC server engine (grpc_server.GrpcEngine's value) and a note for each grpcio-only flag it ignores.

    --grpc_max_threads and --grpc_channel_arguments tune grpcio's server: given without --grpc_server,
    they select it, so that they are honoured; given with --grpc_server loop, each gets its line.
    """
    grpcio_only = [name for name, given in (("grpc_max_threads", args.grpc_max_threads),
                                            ("grpc_channel_arguments", args.grpc_channel_arguments)) if given]
    engine = args.grpc_server or ("grpcio" if grpcio_only else "loop")
    if engine == "grpcio":
        return engine, []
    return engine, [f"--{name} has no effect with --grpc_server loop (it tunes grpcio's server: --grpc_server "
                    "grpcio)" for name in grpcio_only]

