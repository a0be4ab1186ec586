"""The gateway over several processes, for real on 127.0.0.1: `python -m tidal.gateway.process --workers 2`
on a socket in an SO_REUSEPORT group (as its supervisor binds it), fake replicas behind it.

- requests are spread over both processes (their pids are in the request ids the replicas see);
- QPS, signals, stats and /-/metrics read through the control endpoints count every process's requests;
- a route update reaches both processes before its PUT is answered;
- a killed worker is started again, and only requests in flight on it may fail.
"""

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

from .conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TOKEN = "workers-test-token"


def _request(port: int, method: str, path: str, body: bytes | None = None, token: str | None = None,
             conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def _routes(replicas, model: str = "m") -> bytes:
    return json.dumps({"services": [{"name": "svc", "models": [model],
                                     "replicas": [{"id": r.id, "port": r.port} for r in replicas]}]}).encode()


class Gateway:
    def __init__(self, tmp_path: Path, workers: int, shared: bool = True) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        (tmp_path / "token").write_text(TOKEN)
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "tidal.gateway.process", "--listen-fd", str(self.sock.fileno()),
             "--token-file", str(tmp_path / "token"), "--routes-file", str(tmp_path / "routes.json"),
             "--workers", str(workers)],
            cwd=ROOT, pass_fds=(self.sock.fileno(),), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sock.close()  # the gateway's processes hold it now
        self.wait_for(lambda: len(self.hello().get("workers", [])) == (workers if shared else 1),
                      "the workers to start")

    def hello(self) -> dict:
        try:
            status, body = _request(self.port, "GET", "/-/control/hello", token=TOKEN)
        except OSError:
            return {}
        return json.loads(body) if status == 200 else {}

    def control(self, path: str) -> dict:
        status, body = _request(self.port, "GET", path, token=TOKEN)
        assert status == 200, body
        return json.loads(body)

    def put_routes(self, body: bytes) -> None:
        status, answer = _request(self.port, "PUT", "/-/control/routes", body, token=TOKEN)
        assert status == 200, answer

    @staticmethod
    def wait_for(cond, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(45)


@pytest.fixture
def gateway2(tmp_path):
    gws: list[Gateway] = []

    def start(workers: int = 2, shared: bool = True) -> Gateway:
        gws.append(Gateway(tmp_path, workers, shared))
        return gws[-1]

    yield start
    for gw in gws:
        pids = gw.hello().get("workers", [])
        assert gw.stop() == 0
        for pid in pids:  # `tidal down` stops them all: none is left serving
            Gateway.wait_for(lambda pid=pid: not _alive(pid), f"process {pid} to end", 10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _served_by(port: int, n: int) -> dict[int, int]:
    """Send `n` requests, each on a new connection (the kernel picks a process per connection); count by pid."""
    seen: dict[int, int] = {}
    for _ in range(n):
        status, body = _request(port, "GET", "/services/svc/echo")
        assert status == 200, body
        rid = json.loads(body)["headers"]["x-request-id"]
        pid = int(rid.split("-")[0], 16)
        seen[pid] = seen.get(pid, 0) + 1
    return seen


def test_two_processes_share_the_port_and_the_control_plane_sees_one_gateway(gateway2, replicas):
    r0, r1 = replicas("r0", "r1")
    gw = gateway2(2)
    pids = gw.hello()["workers"]
    assert len(set(pids)) == 2 and gw.hello()["pid"] == pids[0]
    gw.put_routes(_routes([r0]))

    seen = _served_by(gw.port, 60)
    assert set(seen) == set(pids), seen  # both processes answered

    # One view: the counts of both processes, whichever process the control plane's connection lands on.
    for _ in range(4):
        stats = gw.control("/-/control/stats?service=svc")
        assert stats["requests"] == 60
        assert sum(r["requests"] for r in stats["replicas"]) == 60
    qps = gw.control("/-/control/qps?service=svc&window=60")["qps"]
    sig = gw.control("/-/control/signals?service=svc&window=60")
    assert sig["qps"] == pytest.approx(qps, rel=0.2)
    assert sig["p90"] is not None and sig["ready"] == 1
    status, metrics = _request(gw.port, "GET", "/-/metrics")
    assert status == 200
    assert b'tidal_gateway_requests_total{code="2xx",service="svc"} 60.0' in metrics
    assert b'tidal_gateway_request_duration_seconds_count{service="svc"} 60.0' in metrics

    # A route update reaches both before its PUT is answered: every request from now on goes to r1.
    gw.put_routes(_routes([r1]))
    by_replica: dict[tuple[int, str], int] = {}
    for _ in range(40):
        status, body = _request(gw.port, "GET", "/services/svc/echo")
        assert status == 200
        doc = json.loads(body)
        key = (int(doc["headers"]["x-request-id"].split("-")[0], 16), doc["replica"])
        by_replica[key] = by_replica.get(key, 0) + 1
    assert {rep for _, rep in by_replica} == {"r1"}
    assert {pid for pid, _ in by_replica} == set(pids), by_replica


def test_the_qps_the_control_plane_reads_is_the_total(gateway2, replicas):
    (r0,) = replicas("r0")
    gw = gateway2(2)
    t_put = time.monotonic()
    gw.put_routes(_routes([r0]))
    t0 = time.monotonic()
    seen = _served_by(gw.port, 100)
    assert len(seen) == 2
    before = time.monotonic()
    qps = gw.control("/-/control/qps?service=svc&window=60")["qps"]
    after = time.monotonic()
    assert after - t_put < 60
    # Each process counts from when it got the service (between t_put and t0) and divides by what it saw
    # (at least a second): the total over that span, not one process's share.
    assert 100 / max(1.0, after - t_put) * 0.98 <= qps <= 100 / max(1.0, before - t0) * 1.02, (qps, seen)


def test_a_killed_worker_is_started_again_and_only_its_requests_in_flight_fail(gateway2, replicas):
    (r0,) = replicas("r0")
    gw = gateway2(2)
    gw.put_routes(_routes([r0]))
    coordinator, worker = gw.hello()["workers"]
    ok = failed = 0
    killed_at = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if killed_at is None and ok >= 20:
            os.kill(worker, signal.SIGKILL)
            killed_at = time.monotonic()
        try:
            status, _ = _request(gw.port, "GET", "/services/svc/echo")
            ok += status == 200
            failed += status != 200
        except OSError:
            failed += 1  # a connection the dead worker had accepted (or held in its queue)
        workers = gw.hello().get("workers", []) if killed_at is not None else []
        if killed_at is not None and len(workers) == 2 and worker not in workers and ok >= 60:
            break
    workers = gw.hello()["workers"]
    assert workers[0] == coordinator and len(workers) == 2 and worker not in workers
    assert failed <= 1, (ok, failed)  # one request at a time: at most the one in flight on the dead worker
    new = workers[1]
    gw.wait_for(lambda: new in _served_by(gw.port, 10), "the new worker to take requests")
    # The new worker has the routes it was started with.
    assert set(_served_by(gw.port, 40)) == {coordinator, new}


def test_a_port_that_cannot_be_shared_is_served_by_one_process(gateway2, replicas):
    (r0,) = replicas("r0")
    gw = gateway2(2, shared=False)  # bound without SO_REUSEPORT: no worker can join it
    assert gw.hello()["workers"] == [gw.hello()["pid"]]
    gw.put_routes(_routes([r0]))
    assert set(_served_by(gw.port, 5)) == {gw.hello()["pid"]}
    assert gw.control("/-/control/stats?service=svc")["requests"] == 5
