"""A 50 MB body against a real model server: other requests keep being answered, and memory goes back afterwards.

The large body is decoded away from the event loop (in the decoding child), so small
predicts sent meanwhile answer in well under a second; a body whose decoding would pass
the per-request memory budget is refused (413) from a scan of its bytes; and once the
load is over the server's resident memory is back near where it started.
"""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from tests.server.procs import ServerProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PREDICT = "/v1/models/hpt:predict"
SMALL = b'{"instances": [1.0, 2.0]}'
BODY_BYTES = 50 << 20
BUDGET = 512 << 20  # the numbers below take about 340 MiB to decode, the strings about 800 MiB


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_base):
    root = tmp_path_factory.mktemp("large")
    grpc_port = free_port()
    proc = ServerProcess(["--port", str(grpc_port), "--model_name", "hpt", "--model_base_path",
                          str(half_plus_two_base), "--request_memory_budget_bytes", str(BUDGET)],
                         root / "server.log").start()
    proc.grpc_address = f"127.0.0.1:{grpc_port}"
    yield proc
    assert proc.terminate() == 0, proc.log()


def numbers_body() -> tuple[bytes, int]:
    value = b"1.2345678"
    n = BODY_BYTES // (len(value) + 1)
    return b'{"instances": [' + b",".join([value] * n) + b"]}", n


def settle(pid: int, below: float, seconds: float = 15.0) -> float:
    """The process's RSS once it is under `below` MiB, or what it was when `seconds` ran out."""
    deadline = time.monotonic() + seconds
    while True:
        now = rss_mib(pid)
        if now < below or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def small_predicts_while(server, busy: threading.Thread) -> list[float]:
    """Small REST predicts, one after another, for as long as `busy` runs; their latencies."""
    latencies = []
    while busy.is_alive():
        t0 = time.monotonic()
        status, _, raw = server.request("POST", PREDICT, SMALL, timeout=30)
        latencies.append(time.monotonic() - t0)
        assert (status, orjson.loads(raw)) == (200, {"predictions": [2.5, 3.0]})
        time.sleep(0.02)
    busy.join()
    return latencies


def test_a_large_body_blocks_no_other_request_and_its_memory_goes_back(server):
    pid = server.proc.pid
    for _ in range(20):
        assert server.request("POST", PREDICT, SMALL)[0] == 200
    baseline = rss_mib(pid)
    body, n = numbers_body()
    answer: dict = {}

    def big() -> None:
        status, _, raw = server.request("POST", PREDICT, body, timeout=120)
        answer["status"], answer["raw"] = status, raw

    sender = threading.Thread(target=big)
    sender.start()
    latencies = small_predicts_while(server, sender)
    assert answer["status"] == 200, answer["raw"][:300]
    predictions = orjson.loads(answer["raw"])["predictions"]
    assert len(predictions) == n and predictions[0] == pytest.approx(0.5 * 1.2345678 + 2)
    assert len(latencies) >= 5, latencies  # the small requests really ran beside the large one
    assert max(latencies) < 1.0, f"a small predict took {max(latencies):.2f} s beside the 50 MB body"
    # Before: the decoded JSON (gigabytes for such a body) stayed. Now what is left is about one
    # tensor's worth (onnxruntime's arena keeps its output block) above the baseline.
    after = settle(pid, baseline + 120)
    assert after < baseline + 120, f"RSS {baseline:.0f} MiB before, {after:.0f} MiB after the 50 MB request"
    assert "Traceback" not in server.log()


def test_a_body_over_the_memory_budget_is_refused_before_it_is_decoded(server):
    pid = server.proc.pid
    baseline = rss_mib(pid)
    strings = b'{"instances": [' + b",".join([b'"ab"'] * (BODY_BYTES // 5)) + b"]}"
    t0 = time.monotonic()
    status, _, raw = server.request("POST", PREDICT, strings, timeout=60)
    elapsed = time.monotonic() - t0
    error = orjson.loads(raw)["error"]
    assert status == 413, error
    assert "more than the per-request budget of 512.0 MiB (--request_memory_budget_bytes)" in error
    assert "\n" not in error
    assert elapsed < 10, elapsed  # a scan of the bytes, not a decode
    assert settle(pid, baseline + 60) < baseline + 60
    assert server.request("POST", PREDICT, SMALL)[0] == 200
    v2 = (b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [%d], "data": [' % (BODY_BYTES // 5)
          + b",".join([b'"ab"'] * (BODY_BYTES // 5)) + b"]}]}")
    status, _, raw = server.request("POST", "/v2/models/hpt/infer", v2, timeout=60)
    assert status == 413, raw[:300]
    log = server.log()
    assert "Traceback" not in log and "budget" not in log


def test_a_large_grpc_message_blocks_no_other_request(server):
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed")
    grpc = pytest.importorskip("grpc")
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    n = BODY_BYTES // 5  # float_val: 5 bytes a value on the wire
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hpt"
    x = request.inputs["x"]
    x.dtype = types_pb2.DT_FLOAT
    x.tensor_shape.dim.add().size = n
    x.float_val.extend([1.5] * n)
    answer: dict = {}

    def big() -> None:
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        with grpc.insecure_channel(server.grpc_address, options=options) as channel:
            answer["y"] = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 120)

    sender = threading.Thread(target=big)
    sender.start()
    latencies = small_predicts_while(server, sender)
    y = answer["y"].outputs["y"]
    assert len(y.float_val) == n and y.float_val[0] == 2.75
    assert max(latencies) < 1.0, f"a small predict took {max(latencies):.2f} s beside the 50 MB message"
