"""Fixtures for the gateway's end-to-end tests: replica processes on free ports of 127.0.0.1."""

import select
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class ReplicaProcess:
    def __init__(self, replica_id: str) -> None:
        self.id = replica_id
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.gateway.fake_replica", "--id", replica_id],
                                     cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.port = int(_read_line(self.proc, 15.0).split()[1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise RuntimeError("replica did not report its port in time")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"replica exited with {proc.wait()}")
    return line


@pytest.fixture
def replicas():
    started: list[ReplicaProcess] = []

    def start(*ids: str) -> list[ReplicaProcess]:
        new = [ReplicaProcess(i) for i in ids]
        started.extend(new)
        return new

    yield start
    for r in started:
        r.kill()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ModelServerProcess:
    """A real `tidal model-server` serving half_plus_two, ready when /v2/health/ready answers 200."""

    def __init__(self, replica_id: str, base: Path) -> None:
        self.id = replica_id
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidal", "model-server", "--rest_api_host", "127.0.0.1",
             "--rest_api_port", str(self.port), "--port", "0", "--model_name", "half_plus_two",
             "--model_base_path", str(base)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 60.0) -> None:
        import time
        import urllib.request
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"model server {self.id} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"model server {self.id} not ready within {timeout}s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def model_servers(half_plus_two_base):
    started: list[ModelServerProcess] = []

    def start(*ids: str) -> list[ModelServerProcess]:
        new = [ModelServerProcess(i, half_plus_two_base) for i in ids]
        started.extend(new)
        for m in new:  # started together, waited for together: the imports overlap
            m.wait_ready()
        return new

    yield start
    for m in started:
        m.kill()
