"""End to end against a real HttpServer: counts, rates, errors, and no coordinated omission."""

from __future__ import annotations

import asyncio
import socket
import time

import orjson
import pytest

from tidal.bench.config import BenchConfig
from tidal.bench.payload import encode, parse_target
from tidal.bench.profile import Constant
from tidal.bench.runner import Bench
from tidal.cli import main

BODY = b'{"inputs": {"x": [[1.0, 2.0, 3.0]]}}'


def request_for(server, path="/v1/models/m:predict") -> tuple[str, int, bytes]:
    target = parse_target(server.url + path, None, None)
    return target.host, target.port, encode(target, "POST", BODY)


def run(config: BenchConfig, host: str, port: int, request: bytes, **kw):
    return asyncio.run(Bench(config, host, port, request, **kw).run())


def test_closed_loop_sends_exactly_the_count(model_server):
    r = run(BenchConfig(concurrency=4, requests=300), *request_for(model_server))
    assert (r.sent, r.answered, r.errors) == (300, 300, 0)
    assert r.status == {200: 300}
    assert model_server.requests == 300
    assert r.mode == "closed" and r.throughput > 0
    lat = r.latency_ms
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]


def test_open_loop_holds_the_rate(model_server):
    r = run(BenchConfig(profile=Constant(rate=200), duration=1.5), *request_for(model_server))
    assert r.sent == 300 and r.answered == 300 and r.errors == 0
    # Answered over the run, which ends with the last answer (the last request is due at 1.495 s).
    assert r.throughput == pytest.approx(200, rel=0.15) and 1.49 <= r.duration < 2.5
    assert r.target_rate == 200


def test_a_stall_shows_in_open_loop_latency(model_server):
    """The server answers nothing for 1.5 s. Open loop keeps sending on schedule, so every request due during
    the stall waits for its end: latency from the due time spreads over [0, 1] s. A closed loop with one
    worker would see a single slow request among hundreds of fast ones."""
    host, port, request = request_for(model_server)
    model_server.stall_until = time.monotonic() + 1.5

    async def stalled():
        bench = Bench(BenchConfig(profile=Constant(rate=100), duration=2.0, timeout=5), host, port, request)
        return await bench.run()
    # The stall covers [0, 1.5) of a 2 s run: the request due at t waits 1.5 - t.
    r = asyncio.run(stalled())
    assert r.answered == 200 and r.errors == 0
    # 150 of 200 requests are due in the stall; the median one (t=1.0) waits ~0.5 s (more on a busy machine).
    assert 350 <= r.latency_ms["p50"] <= 1000
    assert r.latency_ms["max"] >= 1350

    model_server.stall_until = time.monotonic() + 1.0
    closed = run(BenchConfig(concurrency=1, duration=2.0, timeout=5), host, port, request)
    assert closed.latency_ms["max"] >= 900
    assert closed.latency_ms["p50"] < 50  # what a coordinated-omission tool reports for the same stall


def test_a_client_side_queue_counts_in_latency_not_in_service_time(model_server):
    """One connection: during a 1.5 s stall the due requests queue in the client. Each is fast once written
    (service time), but late against its schedule (latency): only the latter shows the stall to users."""
    host, port, request = request_for(model_server)
    model_server.stall_until = time.monotonic() + 1.5
    r = run(BenchConfig(profile=Constant(rate=100), duration=2.0, connections=1, timeout=5), host, port, request)
    assert r.answered == 200
    # As in the stall test above: the median request is due at 1.0 s and answered after 1.5 s.
    assert 350 <= r.latency_ms["p50"] <= 1000
    assert r.service_ms["p50"] < 50 and r.service_ms["max"] >= 1300


def test_errors_are_counted_by_status_and_kind(model_server):
    r = run(BenchConfig(concurrency=2, requests=20), *request_for(model_server, "/v1/models/nope:predict"))
    assert r.errors == 20 and r.status == {404: 20}

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    r = run(BenchConfig(concurrency=2, requests=10), "127.0.0.1", free, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.errors == 10 and r.answered == 0 and r.failures == {"connect": 10}


def test_slow_answers_time_out(model_server):
    model_server.delay = 1.0
    r = run(BenchConfig(concurrency=2, requests=4, timeout=0.3), *request_for(model_server))
    assert r.errors == 4 and r.failures == {"timeout": 4} and r.answered == 0
    # Open loop: the same, and the run still ends on time.
    started = time.monotonic()
    r = run(BenchConfig(profile=Constant(rate=20), duration=0.5, timeout=0.3), *request_for(model_server))
    assert r.failures == {"timeout": 10} and time.monotonic() - started < 2.0


def test_a_closed_loop_longer_than_the_timeout_runs_to_its_end(model_server):
    r = run(BenchConfig(concurrency=2, duration=2.0, timeout=0.3), *request_for(model_server))
    assert r.errors == 0 and r.failures == {} and r.answered > 100 and 2.0 <= r.duration < 2.5


def test_progress_reports_rates_and_replicas(model_server):
    snaps = []

    async def replicas():
        return "2/3 (1 on-demand, 1 spot)"
    r = run(BenchConfig(profile=Constant(rate=100), duration=1.3, interval=0.25), *request_for(model_server),
            on_progress=snaps.append, replicas=replicas)
    assert len(snaps) >= 4
    assert snaps[-1].replicas == "2/3 (1 on-demand, 1 spot)"
    assert snaps[-1].target_rate == 100
    assert sum(s.answered_rate for s in snaps[1:]) / len(snaps[1:]) == pytest.approx(100, rel=0.25)
    assert len(r.timeline) == len(snaps) and r.timeline[-1]["replicas"] == snaps[-1].replicas


def test_cli_json_with_a_sample_from_metadata(model_server, capsys):
    assert main(["bench", model_server.url, "-m", "m", "-n", "50", "-c", "5", "-o", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    for key in ("requests", "errors", "duration", "throughput", "latency_ms", "status"):
        assert key in doc
    assert doc["requests"] == 50 and doc["errors"] == 0 and doc["status"] == {"200": 50}
    assert set(doc["latency_ms"]) >= {"p50", "p90", "p99", "p999", "max"}
    # The JSON comes back to a Result, for callers that run the CLI and print its summary.
    from tidal.bench.report import summary_table
    from tidal.bench.runner import Result
    again = Result.from_json(doc)
    back = again.to_json()
    # Throughput comes back from the duration as printed (to the millisecond), so it is compared apart.
    assert back.pop("throughput") == round(doc["answered"] / doc["duration"], 2)
    doc.pop("throughput")
    assert back == doc and "50 sent, 50 answered" in summary_table(again)
    # The body was built from the metadata: x is FP32 [-1, 3], batch 1.
    x = orjson.loads(model_server.bodies[0])["inputs"]["x"]
    assert len(x) == 1 and len(x[0]) == 3


def test_cli_v2_open_loop_table(model_server, capsys, tmp_path):
    assert main(["bench", model_server.url, "-m", "m", "--protocol", "v2", "--batch", "2",
                 "--rate", "100", "-d", "0.5s"]) == 0
    out = capsys.readouterr().out
    assert "open loop, 100.0 requests/s" in out and "50 sent, 50 answered" in out and "200: 50" in out
    assert "/v2/models/m/infer" in out and "service time" in out
    assert orjson.loads(model_server.bodies[0])["inputs"][0]["shape"] == [2, 3]


def test_cli_sample_model_inputs(model_server, capsys):
    assert main(["bench", model_server.url, "-m", "m", "--sample", "half_plus_two", "--batch", "2",
                 "-n", "3", "-o", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["status"] == {"200": 3}
    assert orjson.loads(model_server.bodies[0]) == {"inputs": {"x": [1.0, 2.0]}}
    assert main(["bench", model_server.url + "/v2/models/m/infer", "--sample", "sentiment", "--batch", "3",
                 "-n", "1", "-o", "json"]) == 0
    text = orjson.loads(model_server.bodies[-1])["inputs"][0]
    assert text["name"] == "text" and text["datatype"] == "BYTES" and text["shape"] == [3]
    assert all(isinstance(t, str) and len(t) > 5 for t in text["data"])


def test_cli_shows_the_replicas_of_a_tidal_service(model_server, capsys, monkeypatch):
    monkeypatch.setenv("TIDAL_API", model_server.url)
    monkeypatch.setenv("TIDAL_TOKEN", "tok")
    assert main(["bench", model_server.url, "-m", "m", "--service", "m", "--rate", "50", "-d", "3.2s",
                 "-o", "json"]) == 0
    timeline = orjson.loads(capsys.readouterr().out)["timeline"]
    assert timeline[-1]["replicas"] == "2/3 (1 on-demand, 2 spot)"


def test_service_of_a_gateway_path():
    from tidal.bench.cli import service_of
    assert service_of("/services/sentiment/v1/models/sentiment:predict") == "sentiment"
    assert service_of("/v1/models/sentiment:predict") is None


@pytest.mark.parametrize("argv, message", [
    (["--rate", "-5"], "--rate must be positive"),
    (["--profile", "wave:3"], "unknown profile kind"),
    (["-d", "forever"], "bad duration"),
    (["-H", "nocolon"], "bad header"),
    (["--body", "/nonexistent.json"], "cannot read body"),
    (["--batch", "0"], "--batch must be positive"),
    (["-c", "0"], "--concurrency must be positive"),
])
def test_cli_errors_are_one_line(model_server, capsys, argv, message):
    assert main(["bench", model_server.url, "-m", "m", "-n", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_unreachable_metadata_is_a_clear_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert main(["bench", f"http://127.0.0.1:{free}", "-m", "m", "-n", "1"]) == 2
    assert "cannot reach" in capsys.readouterr().err
