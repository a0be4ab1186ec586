"""`tidal model-server` flags: TF Serving's command lines parse, mistakes are one clear error."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from tidal.errors import UserError
from tidal.server.main import add_arguments, batching_options, redact, settings_from_args


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def test_tf_serving_command_line_carries_over():
    s = parse("--port", "8500", "--rest_api_port", "8501", "--model_name", "half_plus_two",
              "--model_base_path", "s3://bucket/models/half_plus_two", "--file_system_poll_wait_seconds", "5",
              "--enable_batching", "--tensorflow_intra_op_parallelism", "2",
              "--tensorflow_inter_op_parallelism=1", "--rest_api_num_threads", "8")
    assert (s.grpc_port, s.rest_api_port, s.rest_api_host) == (8500, 8501, "0.0.0.0")
    assert (s.model_name, s.model_base_path, s.poll_seconds) == ("half_plus_two", "s3://bucket/models/half_plus_two", 5)
    assert (s.enable_batching, s.intra_op_threads, s.inter_op_threads) == (True, 2, 1)
    assert s.memory_budget_bytes == 1 << 30
    assert parse("--model_base_path", "/m", "--request_memory_budget_bytes", "1000").memory_budget_bytes == 1000


@pytest.mark.parametrize("flag,expected", [([], None), (["--enable_batching"], True),
                                           (["--enable_batching=false"], False), (["--enable_batching=1"], True)])
def test_batching_flag(flag, expected):
    s = parse("--model_base_path", "/m", *flag)
    assert s.enable_batching is expected
    options = batching_options(s)
    if expected is None:
        assert options is None  # the manager's default batching
    else:  # asked for: TF Serving's parameters, its size limit included
        assert options.enabled is expected and not options.oversize_runs_alone


@pytest.mark.parametrize("argv,message", [
    ((), "give --model_base_path"),
    (("--model_base_path", "/m", "--rest_api_port", "70000"), "--rest_api_port must be between 0 and 65535"),
    (("--model_base_path", "/m", "--tensorflow_intra_op_parallelism", "-1"), "must not be negative"),
    (("--model_base_path", "/m", "--rest_api_max_body_bytes", "0"), "must be positive"),
    (("--model_base_path", "/m", "--request_memory_budget_bytes", "0"), "--request_memory_budget_bytes must be"),
])
def test_mistakes(argv, message):
    with pytest.raises(UserError, match=message):
        parse(*argv)


@pytest.mark.parametrize("url,shown", [
    ("s3://AKIA:secret@bucket/m", "s3://***@bucket/m"), ("oss://bucket/m", "oss://bucket/m"), ("/models/m", "/models/m"),
])
def test_redact(url, shown):
    assert redact(url) == shown


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tidal", "model-server", "--model_config_file",
                          str(tmp_path / "missing.config")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "no such file" in out.stderr and "Traceback" not in out.stderr
    help_text = subprocess.run([sys.executable, "-m", "tidal", "model-server", "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    assert "--port" in help_text and "--rest_api_port" in help_text and "--model_config_file" in help_text


@pytest.mark.parametrize("flag,expected", [([], False), (["--version_zero_is_default"], True),
                                           (["--version_zero_is_default=false"], False),
                                           (["--version_zero_is_default", "true"], True)])
def test_version_zero_flag(flag, expected):
    assert parse("--model_base_path", "/m", *flag).version_zero_is_default is expected
