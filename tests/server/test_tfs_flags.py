"""TF Serving's flags and files: each honoured (parsed into settings and acted on) or refused/noted in one line."""

from __future__ import annotations

import argparse

import pytest

from tidal.errors import UserError
from tidal.models.config import (
    BatchingOptions, parse_batching_parameters, parse_monitoring_config,
)
from tidal.server import tfs_flags
from tidal.server.main import add_arguments, settings_from_args


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(["--model_base_path", "/m", *argv]))


def test_defaults_are_tf_servings():
    s = parse()
    assert (s.config_poll_seconds, s.enable_warmup, s.warmup_iterations, s.saved_model_tags) == (0, True, 1, ("serve",))
    assert (s.rest_timeout_ms, s.grpc_max_threads, s.max_load_retries, s.load_retry_interval_seconds) == \
        (30000, 64, 5, 60.0)
    assert s.notes == ()


def test_honoured_flags_reach_the_settings():
    s = parse("--model_config_file", "/c", "--model_config_file_poll_wait_seconds", "2",
              "--monitoring_config_file", "/mon", "--enable_model_warmup=false",
              "--num_request_iterations_for_warmup", "3", "--saved_model_tags", "serve, gpu",
              "--rest_api_timeout_in_ms", "1500", "--grpc_max_threads", "8",
              "--grpc_channel_arguments", "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
              "--max_num_load_retries", "2", "--load_retry_interval_micros", "500000")
    assert (s.config_poll_seconds, s.monitoring_config_file, s.enable_warmup, s.warmup_iterations) == \
        (2, "/mon", False, 3)
    assert (s.saved_model_tags, s.rest_timeout_ms, s.grpc_max_threads) == (("serve", "gpu"), 1500, 8)
    assert s.grpc_channel_arguments == (("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "grpclb"))
    assert (s.max_load_retries, s.load_retry_interval_seconds) == (2, 0.5)


@pytest.mark.parametrize("argv, engine, notes", [
    ((), "loop", 0),
    (("--grpc_server", "grpcio"), "grpcio", 0),
    (("--grpc_max_threads", "8"), "grpcio", 0),  # a grpcio-only flag selects the server that honours it
    (("--grpc_channel_arguments", "grpc.max_connection_age_ms=1"), "grpcio", 0),
    (("--grpc_server", "loop", "--grpc_max_threads", "8", "--grpc_channel_arguments", "a=1"), "loop", 2),
])
def test_grpc_server_engine(argv, engine, notes):
    s = parse(*argv)
    assert s.grpc_server == engine
    assert len([n for n in s.notes if "--grpc_server loop" in n]) == notes


@pytest.mark.parametrize("argv, message", [
    (("--file_system_poll_wait_seconds", "-1"), "--file_system_poll_wait_seconds must not be negative"),
    (("--rest_api_timeout_in_ms", "-5"), "--rest_api_timeout_in_ms must not be negative"),
    (("--max_num_load_retries", "-1"), "--max_num_load_retries must not be negative"),
    (("--num_request_iterations_for_warmup", "0"), "at least 1"),
    (("--model_config_file_poll_wait_seconds", "5"), "needs --model_config_file"),
    (("--saved_model_tags", " , "), "at least one tag"),
    (("--grpc_channel_arguments", "nonsense"), "expected key=value"),
    (("--ssl_config_file", "/ssl"), "--ssl_config_file is not supported: gRPC serves without TLS"),
    (("--platform_config_file", "/p"), "--platform_config_file is not supported"),
    (("--use_alts_credentials",), "--use_alts_credentials is not supported"),
    (("--prefer_tflite_model=true",), "--prefer_tflite_model is not supported"),
])
def test_refused_in_one_line(argv, message):
    with pytest.raises(UserError, match=message) as info:
        parse(*argv)
    assert "\n" not in str(info.value)


def test_no_effect_flags_each_get_one_note_and_harmless_values_of_refused_ones_pass():
    s = parse("--rest_api_num_threads", "8", "--num_load_threads=2", "--flush_filesystem_caches",
              "--use_alts_credentials=false", "--prefer_tflite_model=false")
    assert [n.split()[0] for n in s.notes] == ["--rest_api_num_threads", "--num_load_threads",
                                               "--flush_filesystem_caches"]
    assert all("has no effect in tidal model-server: " in n for n in s.notes)


def test_every_flag_in_the_table_is_accepted_or_refused_not_unknown():
    for flag in tfs_flags.FLAGS:
        try:
            parse(f"--{flag.name}=x")
        except UserError as exc:
            assert flag.treatment is tfs_flags.Treatment.REFUSED and flag.name in str(exc)


def test_batching_parameters_every_field():
    options = parse_batching_parameters("""
        max_batch_size { value: 8 }
        batch_timeout_micros { value: 100 }
        max_enqueued_batches { value: 4 }
        num_batch_threads { value: 2 }
        thread_pool_name { value: "pool" }
        allowed_batch_sizes: 2
        allowed_batch_sizes: 4
        pad_variable_length_inputs: true
        enable_large_batch_splitting { value: true }
        max_execution_batch_size { value: 4 }
    """)
    assert options == BatchingOptions(max_batch_size=8, batch_timeout_micros=100, max_enqueued_batches=4,
                                      num_batch_threads=2, allowed_batch_sizes=(2, 4),
                                      pad_variable_length_inputs=True, enable_large_batch_splitting=True,
                                      max_execution_batch_size=4)
    assert options.execution_batch_size == 4


@pytest.mark.parametrize("text, message", [
    ("low_priority_max_batch_size { value: 4 }", "'low_priority_max_batch_size' \\(priority batching\\) is not supported"),
    ("max_execution_batch_size { value: 4 }", "needs enable_large_batch_splitting"),
    ("max_batch_size { value: 8 } enable_large_batch_splitting { value: true } max_execution_batch_size { value: 4 }"
     " allowed_batch_sizes: 8", "must equal max_execution_batch_size"),
])
def test_batching_parameters_refused_in_one_line(text, message):
    with pytest.raises(UserError, match=message):
        parse_batching_parameters(text)


def test_monitoring_config():
    options = parse_monitoring_config('prometheus_config { enable: true path: "/my/metrics" }')
    assert (options.enable, options.path) == (True, "/my/metrics")
    assert not parse_monitoring_config("").enable
    with pytest.raises(UserError, match="must start with '/'"):
        parse_monitoring_config('prometheus_config { enable: true path: "metrics" }')
    with pytest.raises(UserError, match="unknown field 'enabled'"):
        parse_monitoring_config("prometheus_config { enabled: true }")


def test_the_docs_table_lists_every_flag():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "tf-serving-flags.md").read_text()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    tidal_own = {"--rest_api_host", "--rest_api_max_body_bytes", "--request_memory_budget_bytes", "--drain_seconds",
                 "--model_cache_dir", "--version_zero_is_default", "--grpc_server", "-h", "--help"}
    flags = {s for a in parser._actions for s in a.option_strings} - tidal_own
    missing = sorted(f for f in flags if f"| `{f}` |" not in text)
    assert not missing, missing
    for flag in tfs_flags.FLAGS:
        row = next(line for line in text.splitlines() if line.startswith(f"| `--{flag.name}` |"))
        assert flag.treatment.value.split()[0] in row, row
