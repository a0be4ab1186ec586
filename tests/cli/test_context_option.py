"""`tidal --context NAME COMMAND`: the context for one command, as TIDAL_CONTEXT gives it, and a control plane
that acts on another context is named instead of answering for the wrong place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tidal.backends.kubernetes.contexts import CONTEXT_ENV
from tidal.cli import _command, main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv, command", [
    (["serve", "list"], "serve"),
    (["--context", "prod", "serve", "list"], "serve"),
    (["--context=prod", "top"], "top"),
    (["context", "add", "x", "--context", "kube-admin"], "context"),   # the subcommand's own --context
    (["--context", "prod"], None),
    (["--version"], None),
])
def test_the_command_word_skips_the_context_s_name(argv, command):
    assert _command(argv) == command


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(CONTEXT_ENV, raising=False)
    monkeypatch.delenv("TIDAL_API", raising=False)
    assert main(["context", "add", "prod", "--kubernetes", "-n", "serving", "--no-check"]) == 0
    return tmp_path / "home"


def current(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main([*argv, "context", "list", "-o", "json"]) == 0
    return next(c["name"] for c in json.loads(capsys.readouterr().out) if c["current"])


def test_context_applies_to_one_command(home, capsys):
    assert current(capsys, []) == "local"
    assert current(capsys, ["--context", "prod"]) == "prod"
    assert current(capsys, ["--context=prod"]) == "prod"
    assert CONTEXT_ENV not in os.environ and current(capsys, []) == "local"   # nothing stays behind
    os.environ[CONTEXT_ENV] = "prod"
    try:
        assert current(capsys, ["--context", "local"]) == "local"             # the option wins over the variable
        assert os.environ[CONTEXT_ENV] == "prod"
    finally:
        del os.environ[CONTEXT_ENV]


def test_an_unknown_context_is_one_line(home, capsys):
    capsys.readouterr()
    assert main(["--context", "nope", "serve", "list"]) == 2
    err = capsys.readouterr().err
    assert err == "tidal serve: error: context 'nope' not found (tidal context list shows them)\n"


def test_help_shows_it(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--context NAME" in capsys.readouterr().out


def tidal(home: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDAL_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop(CONTEXT_ENV, None)
    env.pop("TIDAL_API", None)
    return subprocess.run([sys.executable, "-m", "tidal.cli", *argv], capture_output=True, text=True, timeout=60,
                          env=env)


@pytest.mark.e2e
def test_a_command_for_another_context_does_not_reach_this_one_s_control_plane(home):
    """The home's control plane runs on local: a command for prod gets one line, not local's answer."""
    assert tidal(home, "up", "--port", "0", "--gateway-port", "0").returncode == 0
    try:
        assert json.loads(tidal(home, "serve", "list", "-o", "json").stdout) == []
        assert tidal(home, "--context", "local", "serve", "list").returncode == 0
        assert tidal(home, "--context", "local", "console").stdout.strip().endswith("/console/")
        for argv in (["serve", "list"], ["nodepool", "list"], ["events"], ["console"], ["up"]):
            out = tidal(home, "--context", "prod", *argv)
            assert out.returncode == 2, out
            assert out.stderr.strip().endswith("error: the control plane running here acts on context local, not "
                                               "prod: `tidal --context local down`, then `tidal --context prod up`")
            assert len(out.stderr.strip().splitlines()) == 1
    finally:
        assert tidal(home, "down").returncode == 0
