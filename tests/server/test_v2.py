"""Open Inference Protocol adapter: health, metadata, infer (JSON and Triton's binary extension), config, stats."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import orjson
import pytest

from tests.server.conftest import call
from tests.server.fakes import FakeManager, Status, classifier, half_plus_two, multi
from tidal.server.app import ModelServerApp


@pytest.fixture
def app():
    manager = FakeManager([half_plus_two(123), half_plus_two(124), multi(), classifier()],
                          loading={"broken": [Status(7, "END", "UNKNOWN", "failed to load")]})
    return ModelServerApp(manager)


def binary_request(header: dict, chunks: list[bytes], **headers) -> tuple[bytes, dict]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), {"Inference-Header-Content-Length": str(len(head)), **headers}


def split_response(r) -> tuple[dict, bytes]:
    n = int(r.headers["Inference-Header-Content-Length"])
    return orjson.loads(r.body[:n]), r.body[n:]


def test_health_and_server_metadata(app):
    assert call(app, "GET", "/v2/health/live").json() == {"live": True}
    assert call(app, "GET", "/v2/health/ready").json() == {"ready": True}
    app.manager.ready = False
    r = call(app, "GET", "/v2/health/ready")
    assert r.status == 503 and r.json() == {"ready": False}
    meta = call(app, "GET", "/v2").json()
    assert meta["name"] == "tidal" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_ready(app):
    doc = call(app, "GET", "/v2/models/half_plus_two").json()
    assert doc == {"name": "half_plus_two", "versions": ["123", "124"], "platform": "onnxruntime_onnx",
                   "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]}
    assert call(app, "GET", "/v2/models/half_plus_two/versions/123").status == 200
    assert call(app, "GET", "/v2/models/half_plus_two/versions/9").status == 404
    assert call(app, "GET", "/v2/models/nope").status == 404
    assert call(app, "GET", "/v2/models/half_plus_two/ready").json() == {"name": "half_plus_two", "ready": True}
    r = call(app, "GET", "/v2/models/broken/ready")
    assert r.status == 400 and r.json()["ready"] is False
    assert call(app, "GET", "/v2/models/nope/ready").status == 404


def test_infer_json(app):
    r = call(app, "POST", "/v2/models/half_plus_two/infer", {
        "id": "req-1", "model_name": "half_plus_two",
        "inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 5.0]}]})
    assert r.status == 200, r.body
    assert r.json() == {"model_name": "half_plus_two", "model_version": "124", "id": "req-1",
                        "outputs": [{"name": "y", "datatype": "FP32", "shape": [3], "data": [2.5, 3.0, 4.5]}]}


def test_infer_nested_data_integral_floats_and_no_content_type(app):
    r = call(app, "POST", "/v2/models/multi/versions/1/infer", {"inputs": [
        {"name": "a", "shape": [2, 2], "datatype": "INT64", "data": [[1.0, 2.0], [3.0, 4.0]]},
        {"name": "b", "shape": [2], "datatype": "FP32", "data": [0.5, 1]},
        {"name": "s_bytes", "shape": [2], "datatype": "BYTES", "data": ["x", "yz"]}],
        "outputs": [{"name": "sum"}, {"name": "upper"}]})
    assert r.status == 200, r.body
    outs = r.json()["outputs"]
    assert outs == [{"name": "sum", "datatype": "FP32", "shape": [2], "data": [3.5, 8.0]},
                    {"name": "upper", "datatype": "BYTES", "shape": [2], "data": ["X", "YZ"]}]


def test_infer_binary_in_and_out(app):
    a = np.array([[1, 2], [3, 4]], dtype="<i8").tobytes()
    b = np.array([0.5, 1.5], dtype="<f4").tobytes()
    s = struct.pack("<I", 2) + b"\x00\xff" + struct.pack("<I", 1) + b"q"
    body, headers = binary_request({"inputs": [
        {"name": "a", "shape": [2, 2], "datatype": "INT64", "parameters": {"binary_data_size": len(a)}},
        {"name": "b", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": len(b)}},
        {"name": "s_bytes", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(s)}}],
        "outputs": [{"name": "sum", "parameters": {"binary_data": True}},
                    {"name": "echo_bytes", "parameters": {"binary_data": True}},
                    {"name": "upper", "parameters": {"binary_data": False}}]}, [a, b, s])
    r = call(app, "POST", "/v2/models/multi/infer", body, headers)
    assert r.status == 200, r.body
    assert r.content_type == b"application/octet-stream"
    head, tail = split_response(r)
    sizes = [o.get("parameters", {}).get("binary_data_size") for o in head["outputs"]]
    assert sizes == [8, 4 + 2 + 4 + 1, None]
    assert np.frombuffer(tail[:8], "<f4").tolist() == [3.5, 8.5]
    assert tail[8:] == s
    assert head["outputs"][2]["data"] == ["\x00\ufffd", "Q"]


def test_binary_data_output_for_all(app):
    x = np.array([1, 2], dtype="<f4").tobytes()
    body, headers = binary_request({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                                "parameters": {"binary_data_size": 8}}],
                                    "parameters": {"binary_data_output": True}}, [x])
    r = call(app, "POST", "/v2/models/half_plus_two/infer", body, headers)
    head, tail = split_response(r)
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(tail, "<f4").tolist() == [2.5, 3.0]


def test_gzip_request(app):
    raw = orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [2]}]})
    r = call(app, "POST", "/v2/models/half_plus_two/infer", gzip.compress(raw), {"Content-Encoding": "gzip"})
    assert r.status == 200 and r.json()["outputs"][0]["data"] == [3.0]


ERRORS = [
    ("unknown model", "/v2/models/nope/infer", {"inputs": []}, {}, 404, "Latest(nope)"),
    # No version is named "x": not found, as the protocol answers a model or version it does not have.
    ("bad version", "/v2/models/half_plus_two/versions/x/infer", {"inputs": []}, {}, 404, "Specific(half_plus_two, x)"),
    ("not JSON", "/v2/models/half_plus_two/infer", b"{", {}, 400, "JSON Parse error"),
    ("not an object", "/v2/models/half_plus_two/infer", b"[]", {}, 400, "must be a JSON object"),
    ("no inputs", "/v2/models/half_plus_two/infer", {}, {}, 400, "needs 'inputs'"),
    ("input not object", "/v2/models/half_plus_two/infer", {"inputs": [1]}, {}, 400, "inputs[0] must be"),
    ("unknown datatype", "/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}, {}, 400, "unknown datatype 'FP8'"),
    ("bad shape", "/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}, {}, 400, "non-negative"),
    ("count mismatch", "/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}, {}, 400, "needs 2 elements"),
    ("wrong type", "/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}, {}, 400,
     "is not of expected type: float"),
    ("no data", "/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, {}, 400, "neither 'data'"),
    ("duplicate input", "/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2}, {}, 400, "more than once"),
    ("unknown output", "/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{"name": "z"}]},
     {}, 400, "unexpected inference output 'z' for model 'half_plus_two'"),
    ("unknown input", "/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "q", "shape": [1], "datatype": "FP32", "data": [1]}]}, {}, 400, "q"),
    ("header length beyond body", "/v2/models/half_plus_two/infer", b"{}", {"Inference-Header-Content-Length": "9"},
     400, "outside the body"),
    ("header length not a number", "/v2/models/half_plus_two/infer", b"{}",
     {"Inference-Header-Content-Length": "x"}, 400, "must be an integer"),
    ("binary size beyond data", "/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
     {"Inference-Header-Content-Length": "-"}, 400, "runs past"),
    ("unsupported encoding", "/v2/models/half_plus_two/infer", b"{}", {"Content-Encoding": "br"}, 400,
     "unsupported Content-Encoding"),
    ("corrupt gzip", "/v2/models/half_plus_two/infer", b"not gzip", {"Content-Encoding": "gzip"}, 400,
     "not valid gzip"),
]


@pytest.mark.parametrize("name,path,body,headers,status,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_infer_errors(app, name, path, body, headers, status, message):
    if headers.get("Inference-Header-Content-Length") == "-":
        body = orjson.dumps(body)
        headers = {"Inference-Header-Content-Length": str(len(body))}
    r = call(app, "POST", path, body, headers)
    assert r.status == status, r.body
    assert message in r.json()["error"]


def test_binary_size_mismatch_and_trailing_bytes(app):
    body, headers = binary_request({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                                "parameters": {"binary_data_size": 4}}]}, [b"\0" * 4])
    r = call(app, "POST", "/v2/models/half_plus_two/infer", body, headers)
    assert r.status == 400 and "does not match shape [2] of FP32 (8 bytes)" in r.json()["error"]
    body, headers = binary_request({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                                "parameters": {"binary_data_size": 4}}]}, [b"\0" * 6])
    r = call(app, "POST", "/v2/models/half_plus_two/infer", body, headers)
    assert r.status == 400 and "2 bytes of binary data after" in r.json()["error"]
    body, headers = binary_request({"inputs": [{"name": "s_bytes", "shape": [1], "datatype": "BYTES",
                                                "parameters": {"binary_data_size": 6}}]},
                                   [struct.pack("<I", 9) + b"ab"])
    r = call(app, "POST", "/v2/models/multi/infer", body, headers)
    assert r.status == 400 and "runs past" in r.json()["error"]


def test_routes_and_methods(app):
    assert call(app, "GET", "/v2/models/half_plus_two/infer").status == 405
    assert call(app, "POST", "/v2/models/half_plus_two").status == 405
    assert call(app, "GET", "/v2/nothing").status == 404
    assert call(app, "GET", "/elsewhere").status == 404


NOT_ALLOWED = [
    ("TRACE", "/v2/", "GET"), ("TRACE", "/v2", "GET"), ("TRACE", "/v2/health/live", "GET"),
    ("POST", "/v2/health/ready", "GET"), ("DELETE", "/v2/models/stats", "GET"),
    ("GET", "/v2/repository/index", "POST"), ("PUT", "/v2/models/half_plus_two/infer", "POST"),
    ("GET", "/v2/models/half_plus_two/versions/123/infer", "POST"), ("PATCH", "/v2/models/half_plus_two", "GET"),
    ("OPTIONS", "/v2/models/half_plus_two/ready", "GET"), ("POST", "/v2/models/nope/config", "GET"),
    ("POST", "/metrics", "GET"), ("TRACE", "/monitoring/prometheus/metrics", "GET"),
]


@pytest.mark.parametrize("method, path, allow", NOT_ALLOWED)
def test_a_method_a_known_path_does_not_take_is_405_with_allow(app, method, path, allow):
    r = call(app, method, path)
    assert r.status == 405 and r.headers["Allow"] == allow
    assert allow in r.json()["error"]


@pytest.mark.parametrize("version", ["x", "-1", "1.0", "99999999999999999999", "123abc"])
@pytest.mark.parametrize("suffix, method", [("", "GET"), ("/ready", "GET"), ("/config", "GET"),
                                            ("/infer", "POST")])
def test_a_malformed_version_is_not_found(app, version, suffix, method):
    r = call(app, method, f"/v2/models/half_plus_two/versions/{version}{suffix}", {"inputs": []})
    assert r.status == 404, r.body


def test_version_zero_is_not_found_unless_the_option_reads_it_as_the_default():
    from tidal.server.dataplane import DataPlane

    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [2.0]}]}
    for zero_is_default, status in ((False, 404), (True, 200)):
        manager = FakeManager([half_plus_two(123), half_plus_two(124)])
        app = ModelServerApp(manager, plane=DataPlane(manager, version_zero_is_default=zero_is_default))
        r = call(app, "POST", "/v2/models/half_plus_two/versions/0/infer", body)
        assert r.status == status, r.body
        assert call(app, "GET", "/v2/models/half_plus_two/versions/0").status == status
        assert call(app, "GET", "/v1/models/half_plus_two/versions/0/metadata").status == status
        if zero_is_default:
            assert r.json()["model_version"] == "124"  # the default: the latest


def test_config_stats_and_index(app):
    cfg = call(app, "GET", "/v2/models/half_plus_two/config").json()
    assert cfg["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1]}]
    assert cfg["platform"] == "onnxruntime_onnx" and cfg["max_batch_size"] == 0
    call(app, "POST", "/v2/models/half_plus_two/infer",
         {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]})
    call(app, "POST", "/v2/models/half_plus_two/infer",
         {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["bad"]}]})
    app.metrics.observe_batch("half_plus_two", 124, 4, 0.001)
    stats = call(app, "GET", "/v2/models/half_plus_two/stats").json()["model_stats"]
    assert len(stats) == 1 and stats[0]["version"] == "124"
    inf = stats[0]["inference_stats"]
    assert inf["success"]["count"] == 1 and inf["fail"]["count"] == 1
    assert inf["queue"] == {"count": 1, "ns": 1_000_000}
    everything = call(app, "GET", "/v2/models/stats").json()["model_stats"]
    assert {(s["name"], s["version"]) for s in everything} >= {("half_plus_two", "123"), ("multi", "1")}
    index = call(app, "POST", "/v2/repository/index").json()
    assert {"name": "broken", "version": "7", "state": "UNAVAILABLE", "reason": "failed to load"} in index


def test_nan_and_infinity_in_json_outputs(app):
    r = call(app, "POST", "/v2/models/half_plus_two/infer",
             b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [NaN, Infinity, 1]}]}')
    assert r.status == 200, r.body
    assert b'"data":[NaN,Infinity,2.5]' in r.body
