"""Fixtures for the gateway's end-to-end tests: replica processes on free ports of 127.0.0.1."""

import os
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
