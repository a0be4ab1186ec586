"""The compiled edge's own parts, for real on 127.0.0.1 (`tidal.gateway.process --engine edge`, fake replicas):

- a service at zero: its requests wait in the Python gateway's queue (the edge hands them over) and are
  answered once a replica is ready; each request is counted once, whichever process answered it;
- bad input gets its answer and the edge stays up;
- a killed edge is started again and the connections that wait meanwhile are answered;
- `--engine edge` without the binary: one line saying how to build it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tidal.gateway import ReplicaEndpoint
from tidal.gateway.config import QueueSettings
from tidal.gateway.edge import EDGE_ENV, find_edge

from .conftest import ROOT
from .engines import EdgeGateway, _call

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
needs_edge = pytest.mark.skipif(find_edge() is None, reason="the tidal-edge binary is not built (scripts/edge.sh)")


def _get(port: int, path: str = "/services/svc/echo") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _wait(cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def edge(tmp_path):
    gw = EdgeGateway(tmp_path)
    yield gw
    asyncio.run(gw.stop())


@needs_edge
def test_a_service_at_zero_waits_at_the_python_gateway_and_each_request_is_counted_once(edge, replicas):
    edge.set_service("svc", [], queue=QueueSettings(size=10, wait_seconds=30))
    asyncio.run(edge.start())
    edge_pid = edge.edge_pid()
    held: list[tuple[int, dict]] = []
    threads = [threading.Thread(target=lambda: held.append(_get(edge.port))) for _ in range(4)]
    for t in threads:
        t.start()
    _wait(lambda: edge.stats("svc").queued == 4, "4 requests to wait in the queue")
    (r0,) = replicas("r0")
    edge.set_service("svc", [ReplicaEndpoint(id="r0", port=r0.port)], queue=QueueSettings(size=10, wait_seconds=30))
    for t in threads:
        t.join(30)
    assert [s for s, _ in held] == [200] * 4, held
    # They went through the edge (its request id) and then the Python gateway, which held and answered them.
    assert {int(doc["headers"]["x-request-id"].split("-")[0], 16) for _, doc in held} == {edge_pid}
    assert all(doc["headers"]["x-forwarded-for"] == "127.0.0.1, 127.0.0.1" for _, doc in held)
    # With a ready replica the edge answers itself (one hop).
    fast = [_get(edge.port) for _ in range(10)]
    assert all(s == 200 and doc["headers"]["x-forwarded-for"] == "127.0.0.1" for s, doc in fast)

    st = edge.stats("svc")  # merged: the edge's counts and the Python gateway's, each request once
    assert (st.requests, st.errors, st.in_flight, st.queued) == (14, 0, 0, 0)
    assert [r.requests for r in st.replicas] == [14]
    status, body = _call(edge.port, "GET", "/-/metrics", token=None)
    assert status == 200
    assert b'tidal_gateway_requests_total{code="2xx",service="svc"} 14.0' in body
    assert b'tidal_gateway_request_duration_seconds_count{service="svc"} 14.0' in body
    sig = json.loads(_call(edge.port, "GET", "/-/control/signals?service=svc&window=60")[1])
    assert sig["p90"] is not None and sig["ready"] == 1 and sig["qps"] > 0


def _raw(port: int, data: bytes, half_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@needs_edge
def test_bad_input_gets_its_answer_and_the_edge_stays_up(edge, replicas):
    (r0,) = replicas("r0")
    edge.set_service("svc", [ReplicaEndpoint(id="r0", port=r0.port)], models=["m"])
    asyncio.run(edge.start())
    pid = edge.edge_pid()
    assert _raw(edge.port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _raw(edge.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 2_000_000 + b"\r\n\r\n") \
        .startswith(b"HTTP/1.1 431 ")
    answer = _raw(edge.port, b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
                             b"Connection: close\r\nContent-Length: 0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"protocol upgrades are not supported" in answer
    answer = _raw(edge.port, b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{",
                  half_close=True)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP request body" in answer  # and it closed
    answer = _raw(edge.port, b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"\r\nzz\r\n", half_close=True)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP request body" in answer
    assert _get(edge.port)[0] == 200 and edge.edge_pid() == pid
    assert edge.stats("svc").requests == 1


@needs_edge
def test_a_killed_edge_is_started_again_and_waiting_connections_are_answered(edge, replicas):
    (r0,) = replicas("r0")
    edge.set_service("svc", [ReplicaEndpoint(id="r0", port=r0.port)])
    asyncio.run(edge.start())
    coordinator, pid = edge.hello()["workers"]
    os.kill(pid, signal.SIGKILL)
    # Connections made while no edge runs wait in the socket's queue (the coordinator holds the socket).
    answers = [_get(edge.port) for _ in range(5)]
    assert [s for s, _ in answers] == [200] * 5
    workers = edge.hello()["workers"]
    assert workers[0] == coordinator and workers[1] != pid
    assert {int(d["headers"]["x-request-id"].split("-")[0], 16) for _, d in answers} == {workers[1]}


def test_an_edge_that_cannot_start_leaves_the_port_to_the_python_gateway(tmp_path, replicas):
    (r0,) = replicas("r0")
    broken = tmp_path / "tidal-edge"
    broken.write_bytes(b"not a program")
    broken.chmod(0o755)
    gw = EdgeGateway(tmp_path, env={EDGE_ENV: str(broken)}, processes=1)
    gw.set_service("svc", [ReplicaEndpoint(id="r0", port=r0.port)])
    asyncio.run(gw.start())
    try:
        assert gw.hello()["workers"] == [gw.hello()["pid"]]
        status, doc = _get(gw.port)
        assert status == 200 and doc["replica"] == "r0"
        assert gw.stats("svc").requests == 1
    finally:
        asyncio.run(gw.stop())
    assert "cannot start the gateway's edge" in gw.log.read_text()


def test_the_edge_engine_without_its_binary_is_one_line(tmp_path):
    (tmp_path / "token").write_text("t")
    env = dict(os.environ, **{EDGE_ENV: str(tmp_path / "no-such-binary")})
    out = subprocess.run([sys.executable, "-P", "-m", "tidal.gateway.process", "--engine", "edge", "--port", "0",
                          "--token-file", str(tmp_path / "token"), "--routes-file", str(tmp_path / "routes.json")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "tidal-edge" in lines[0] and "scripts/edge.sh" in lines[0], out.stderr
