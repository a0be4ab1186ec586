"""The gateway's engines for its end-to-end tests: the in-process Python `Gateway`, and the supervised gateway
process with `--engine edge` (the compiled data plane in front of it), driven through the same methods."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tidal.gateway import ReplicaStats, ServiceStats
from tidal.gateway.edge import find_edge

from .conftest import ROOT

TOKEN = "edge-test-token"
ENGINES = ["python", pytest.param("edge", marks=pytest.mark.skipif(
    find_edge() is None, reason="the tidal-edge binary is not built (scripts/edge.sh, needs cargo)"))]


def _call(port: int, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class EdgeGateway:
    """`python -m tidal.gateway.process --engine edge` on a socket bound as its supervisor binds it; the route
    table is set through its control endpoints and read back merged, as the control plane does."""

    def __init__(self, tmp: Path, threads: int = 1, env: dict | None = None, processes: int = 2) -> None:
        # `processes`: how many the gateway runs once started (its coordinator and the edge).
        self._tmp = tmp
        self._threads = threads
        self._env = dict(os.environ, **(env or {}))
        self._processes = processes
        self._services: dict[str, dict] = {}
        self.port = 0
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        token = self._tmp / "token"
        token.write_text(TOKEN)
        token.chmod(0o600)
        self.log = self._tmp / "gateway.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "tidal.gateway.process", "--listen-fd", str(sock.fileno()),
             "--token-file", str(token), "--routes-file", str(self._tmp / "routes.json"), "--engine", "edge",
             "--workers", str(self._threads)],
            cwd=ROOT, pass_fds=(sock.fileno(),), stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=self._env)
        sock.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(self.hello().get("workers", [])) == self._processes:
                self._put()
                return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError("the edge did not start in time")

    def hello(self) -> dict:
        try:
            status, body = _call(self.port, "GET", "/-/control/hello")
        except OSError:
            return {}
        return json.loads(body) if status == 200 else {}

    def edge_pid(self) -> int:
        return self.hello()["workers"][1]

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(45) == 0

    def _put(self) -> None:
        body = json.dumps({"services": list(self._services.values())}).encode()
        status, answer = _call(self.port, "PUT", "/-/control/routes", body)
        assert status == 200, answer

    # -- `Gateway`'s interface, as the tests use it
    def set_service(self, name, replicas, hosts=(), models=(), *, deadline_seconds=None, queue=None) -> None:
        self._services[name] = {
            "name": name, "replicas": [r.model_dump(mode="json") for r in replicas], "hosts": list(hosts),
            "models": list(models), "deadline_seconds": deadline_seconds,
            "queue": queue.model_dump(mode="json") if queue is not None else None}
        if self.proc is not None:
            self._put()

    def set_replica_state(self, service: str, replica_id: str, state: str) -> None:
        for r in self._services[service]["replicas"]:
            if r["id"] == replica_id:
                r["state"] = state
        self._put()

    def stats(self, service: str) -> ServiceStats:
        status, body = _call(self.port, "GET", f"/-/control/stats?service={service}")
        assert status == 200, body
        doc = json.loads(body)
        for k in ("qps", "error_qps", "p50", "p99"):
            doc[k] = {float(w): v for w, v in doc[k].items()}
        doc["replicas"] = [ReplicaStats(**r) for r in doc["replicas"]]
        return ServiceStats(**doc)

    def qps(self, service: str, window: float) -> float:
        status, body = _call(self.port, "GET", f"/-/control/qps?service={service}&window={window:g}")
        assert status == 200, body
        return json.loads(body)["qps"]
