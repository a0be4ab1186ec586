"""Ctrl-C during `tidal bench` ends the run with the summary of what completed, against a real HTTP server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.bench.conftest import FakeModelServer
from tidal.bench.config import BenchConfig
from tidal.bench.payload import encode, parse_target
from tidal.bench.profile import Constant
from tidal.bench.runner import Bench

REPO = Path(__file__).resolve().parents[2]
BODY = b'{"inputs": {"x": [[1.0, 2.0, 3.0]]}}'


@pytest.fixture
def model_server():
    s = FakeModelServer()
    s.start()
    yield s
    s.stop()


def _wait_for(predicate, timeout=20.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("config", [
    BenchConfig(profile=Constant(rate=200), duration=60.0),
    BenchConfig(concurrency=4, duration=60.0),
], ids=["open loop", "closed loop"])
def test_stop_returns_the_summary_so_far(model_server, config):
    target = parse_target(model_server.url + "/v1/models/m:predict", None, None)

    async def main():
        bench = Bench(config, target.host, target.port, encode(target, "POST", BODY))
        running = asyncio.ensure_future(bench.run())
        while model_server.requests < 50:
            await asyncio.sleep(0.01)
        bench.stop()
        return await asyncio.wait_for(running, 10)
    started = time.monotonic()
    r = asyncio.run(main())
    assert time.monotonic() - started < 20
    # The server counts a request when it reads it; the bench, when the answer is back: those in flight
    # at the stop are the difference, and count as interrupted.
    assert r.sent >= 50 and r.answered > 0 and r.sent == r.answered + r.errors
    assert set(r.failures) <= {"interrupted"}


def test_ctrl_c_prints_the_summary_and_exits_130(model_server, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TIDAL_HOME": str(tmp_path / "home")}
    (tmp_path / "body.json").write_bytes(BODY)
    proc = subprocess.Popen([sys.executable, "-m", "tidal", "bench", model_server.url + "/v1/models/m:predict",
                             "--body", str(tmp_path / "body.json"), "--rate", "100", "-d", "60s", "-o", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        _wait_for(lambda: model_server.requests >= 30 or proc.poll() is not None)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    doc = orjson.loads(out)
    assert doc["requests"] >= 30 and doc["answered"] > 0 and doc["requests"] == doc["answered"] + doc["errors"]
    assert b"interrupted after" in err and b"Traceback" not in err
