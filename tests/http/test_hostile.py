"""Every kind of Tidal server refuses oversized heads and hostile input: model server, gateway, control-plane API."""

import asyncio
import importlib.util
import signal
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

from tidal.control.daemon import ControlPlane, DaemonOptions
from tidal.control.home import Home
from tidal.gateway import Gateway

HOSTILE = Path(__file__).resolve().parents[2] / "benchmarks" / "hostile"


def _bench():
    if "hostile_run" not in sys.modules:
        sys.path.insert(0, str(HOSTILE))
        spec = importlib.util.spec_from_file_location("hostile_run", HOSTILE / "run.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["hostile_run"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["hostile_run"]


HUGE_HEADER = [b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "] + [b"a" * 65536] * 256


def _send_huge_header(port: int) -> tuple[bytes, float]:
    """16 MiB of a header that never ends: (the answer, seconds to it)."""
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for chunk in HUGE_HEADER:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out, time.monotonic() - t


@pytest.fixture
def model_server(tmp_path):
    bench = _bench()
    proc, port = bench.start_model_server(tmp_path)
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_model_server_survives_hostile_input_and_refuses_a_huge_header(model_server):
    proc, port = model_server
    bench = _bench()
    out, seconds = _send_huge_header(port)
    assert out.startswith(b"HTTP/1.1 431 ") and seconds < 5
    report = bench.attack(port, proc.pid, bench.model_server_target(), 300, workers=4, warmup=20)
    assert report["5xx"] == 0, report["by_kind"]
    assert "timeout" not in report["status"] and not report["normal_failures"], report
    assert report["rss_mb"][1] - report["rss_mb"][0] < 50


def test_model_server_stops_at_once_after_pipelined_requests_are_reset(model_server):
    proc, port = model_server
    req = (b'POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 22\r\n\r\n'
           b'{"instances": [1.0,2]}')
    for i in range(100):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req * 30)
        if i % 2:
            s.recv(100)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    time.sleep(0.3)
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert time.monotonic() - t < 5  # was 60 s: the drain waited for requests whose client had gone


def test_gateway_refuses_a_huge_header():
    async def main():
        gw = Gateway("127.0.0.1", 0)
        await gw.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, _send_huge_header, gw.port)
        finally:
            await gw.stop()
    out, seconds = asyncio.run(main())
    assert out.startswith(b"HTTP/1.1 431 ") and seconds < 5


def test_control_plane_api_refuses_huge_headers_before_auth_and_foreign_hosts(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDAL_ALLOWED_HOSTS", "tidal.example")

    def exchange(port, data):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(data)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    async def main():
        cp = ControlPlane(Home(tmp_path / "home"), DaemonOptions(api_port=0, gateway_port=0))
        await cp.start()
        port = cp.api_server.port
        loop = asyncio.get_running_loop()
        try:
            huge = await loop.run_in_executor(None, _send_huge_header, port)
            results = {}
            for host in ("attacker.example", "localhost:1", "127.0.0.1", "tidal.example"):
                results[host] = await loop.run_in_executor(None, exchange, port, (
                    f"GET /api/v1/healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").encode())
            return huge, results
        finally:
            await cp.stop()
    (out, seconds), by_host = asyncio.run(main())
    assert out.startswith(b"HTTP/1.1 431 ") and seconds < 5  # not 401: refused before the token is looked at
    assert by_host["attacker.example"].startswith(b"HTTP/1.1 421 ")
    for host in ("localhost:1", "127.0.0.1", "tidal.example"):
        assert not by_host[host].startswith(b"HTTP/1.1 421 "), by_host[host][:100]
    assert all(b"access-control" not in v.lower() for v in by_host.values())


def test_model_server_logs_to_a_rotated_file_one_line_per_kind_of_bad_request(tmp_path):
    bench = _bench()
    base = bench.build_model(tmp_path / "half_plus_two")
    port = bench.free_port()
    log_file = tmp_path / "replica.log"
    proc = bench.start(["model-server", "--port", "0", "--rest_api_host", "127.0.0.1", "--rest_api_port", str(port),
                        "--model_name", "half_plus_two", "--model_base_path", str(base)], tmp_path / "stderr.txt",
                       env={"TIDAL_LOG_FILE": str(log_file), "TIDAL_LOG_MAX_BYTES": "4096", "TIDAL_LOG_BACKUPS": "1",
                            "TIDAL_LOG_REPEAT_SECONDS": "600"})
    try:
        bench.wait_http(port, "/v2/health/ready", proc)
        for i in range(300):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad\x00Header: %d\r\n\r\n" % i)
                assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = "".join(p.read_text() for p in sorted(tmp_path.glob("replica.log*"), reverse=True))
    refused = [ln for ln in text.splitlines() if "refused a request" in ln]
    assert len(refused) == 2 and "repeated 299 more times" in refused[1], refused  # one line, then the count
    assert "REST API on" in text and "Traceback" not in text
    assert (tmp_path / "stderr.txt").read_text() == ""  # everything went to the file
