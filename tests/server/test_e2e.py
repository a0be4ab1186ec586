"""End to end: `tidal model-server` as a real process, answering TF Serving's half_plus_two cases and V2 clients."""

from __future__ import annotations

import base64
import shutil
import struct
import threading
import time

import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import load_example
from tests.server.procs import ServerProcess, build_slow_model

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_base, sentiment_base):
    root = tmp_path_factory.mktemp("e2e")
    hpt = root / "half_plus_two"
    shutil.copytree(half_plus_two_base, hpt)
    load_example("half_plus_two").build(hpt, 124)
    config = root / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{
    name: 'half_plus_two'
    base_path: '{hpt}'
    model_platform: 'tensorflow'
    model_version_policy {{ all {{}} }}
    version_labels {{ key: 'stable' value: 123 }}
    version_labels {{ key: 'canary' value: 124 }}
  }}
  config {{
    name: 'sentiment'
    base_path: '{sentiment_base}'
  }}
}}
""")
    proc = ServerProcess(["--model_config_file", str(config), "--tensorflow_intra_op_parallelism", "1"],
                         root / "server.log").start()
    yield proc
    assert proc.terminate() == 0, proc.log()


def post(server, path, doc, headers=None):
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    status, hdrs, out = server.request("POST", path, body, headers)
    return status, hdrs, out


def jpost(server, path, doc, headers=None):
    status, hdrs, out = post(server, path, doc, headers)
    assert hdrs["content-type"] == "application/json"
    return status, orjson.loads(out)


HPT = "/v1/models/half_plus_two"

# TF Serving's half_plus_two REST cases (tensorflow_serving/g3doc/api_rest.md and its tests).
CASES = [
    ("row", HPT + ":predict", {"instances": [1.0, 2.0, 5.0]}, 200, {"predictions": [2.5, 3.0, 4.5]}),
    ("columnar", HPT + ":predict", {"inputs": [1.0, 2.0, 5.0]}, 200, {"outputs": [2.5, 3.0, 4.5]}),
    ("signature", HPT + ":predict", {"signature_name": "serving_default", "instances": [[1.0][0]]}, 200,
     {"predictions": [2.5]}),
    ("version", HPT + "/versions/123:predict", {"instances": [1.0]}, 200, {"predictions": [2.5]}),
    ("label", HPT + "/labels/canary:predict", {"instances": [3.0]}, 200, {"predictions": [3.5]}),
    ("regress", HPT + ":regress", {"examples": [{"x": 1.0}, {"x": 3.0}]}, 200, {"results": [2.5, 3.5]}),
    ("unknown model", "/v1/models/nope:predict", {"instances": [1.0]}, 404,
     {"error": "Servable not found for request: Latest(nope)"}),
    ("unknown version", HPT + "/versions/999:predict", {"instances": [1.0]}, 404,
     {"error": "Servable not found for request: Specific(half_plus_two, 999)"}),
    ("bad type", HPT + ":predict", {"instances": ["x"]}, 400,
     {"error": "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"x\" "
               "Type: String is not of expected type: float"}),
    ("both keys", HPT + ":predict", {"instances": [1.0], "inputs": [1.0]}, 400, None),
]


@pytest.mark.parametrize("name,path,doc,status,expected", CASES, ids=[c[0] for c in CASES])
def test_half_plus_two_rest(server, name, path, doc, status, expected):
    got_status, got = jpost(server, path, doc)
    assert got_status == status, got
    if expected is not None:
        assert got == expected
    else:
        assert "error" in got


def test_status_metadata_and_labels(server):
    status, _, body = server.request("GET", HPT)
    assert status == 200
    versions = {s["version"]: s["state"] for s in orjson.loads(body)["model_version_status"]}
    assert versions == {"123": "AVAILABLE", "124": "AVAILABLE"}
    status, _, body = server.request("GET", HPT + "/labels/stable")
    assert [s["version"] for s in orjson.loads(body)["model_version_status"]] == ["123"]
    status, _, body = server.request("GET", HPT + "/metadata")
    meta = orjson.loads(body)
    assert meta["model_spec"]["version"] == "124"
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT" and sig["method_name"] == "tensorflow/serving/predict"
    status, _, body = server.request("GET", "/v1/models/nope")
    assert status == 404 and orjson.loads(body) == {"error": "Could not find any versions of model nope"}


def test_sentiment_predict_classify_and_b64(server):
    status, out = jpost(server, "/v1/models/sentiment:predict",
                        {"instances": ["what a wonderful, moving film", {"b64": base64.b64encode(
                            "boring and far too long".encode()).decode()}]})
    assert status == 200, out
    assert [p["label"] for p in out["predictions"]] == ["positive", "negative"]
    status, out = jpost(server, "/v1/models/sentiment:classify",
                        {"examples": [{"text": "a delightful surprise"}]})
    assert status == 200, out
    (result,) = out["results"]
    assert {label for label, _ in result} == {"negative", "positive"}
    assert sum(score for _, score in result) == pytest.approx(1.0, abs=1e-5)


def test_v2_metadata_and_infer_json_and_binary(server):
    status, _, body = server.request("GET", "/v2/models/half_plus_two")
    assert status == 200 and orjson.loads(body)["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    # No Content-Type, integral floats, extra fields: all fine.
    status, out = jpost(server, "/v2/models/half_plus_two/versions/123/infer", {
        "id": "7", "model_name": "half_plus_two",
        "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]})
    assert status == 200 and out["outputs"][0]["data"] == [2.5, 3.0] and out["id"] == "7"
    head = orjson.dumps({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 12}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
    raw = np.array([1, 2, 5], "<f4").tobytes()
    status, hdrs, body = post(server, "/v2/models/half_plus_two/infer", head + raw,
                              {"Inference-Header-Content-Length": str(len(head)),
                               "Content-Type": "application/octet-stream"})
    assert status == 200
    n = int(hdrs["inference-header-content-length"])
    doc = orjson.loads(body[:n])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 12
    assert np.frombuffer(body[n:], "<f4").tolist() == [2.5, 3.0, 4.5]
    # BYTES through the binary extension to the sentiment model.
    text = "an absolute joy".encode()
    head = orjson.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 4 + len(text)}}]})
    status, out = jpost(server, "/v2/models/sentiment/infer", head + struct.pack("<I", len(text)) + text,
                        {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, out
    assert {o["name"] for o in out["outputs"]} >= {"label"}


def test_metrics_count_requests_and_batches(server):
    for _ in range(3):
        post(server, HPT + ":predict", {"instances": [1.0]})
    for path in ("/metrics", "/monitoring/prometheus/metrics"):
        status, hdrs, body = server.request("GET", path)
        assert status == 200 and hdrs["content-type"].startswith("text/plain")
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        ok = [s.value for s in fams["tidal_requests"].samples
              if s.labels == {"model": "half_plus_two", "version": "124", "api": "predict", "code": "200"}]
        assert ok and ok[0] >= 3
        sizes = [s for s in fams["tidal_batch_size"].samples if s.labels.get("model") == "half_plus_two"]
        assert sizes, "the batcher's on_batch callback reaches the metrics"


def test_sigterm_drains_request_in_flight(tmp_path):
    build_slow_model(tmp_path / "slow")
    proc = ServerProcess(["--model_name", "slow", "--model_base_path", str(tmp_path / "slow"),
                          "--tensorflow_intra_op_parallelism", "1"], tmp_path / "server.log").start()
    result = {}
    # Size the request so that it computes for about two seconds on this machine, whatever its speed.
    t0 = time.monotonic()
    assert post(proc, "/v1/models/slow:predict", {"inputs": [500]})[0] == 200
    n = max(500, min(20000, int(500 * 2.0 / max(time.monotonic() - t0, 1e-3))))

    def slow_request():
        result["answer"] = post(proc, "/v1/models/slow:predict", {"inputs": [n]})

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.3)  # the request is being computed (about two seconds)
    t0 = time.monotonic()
    code = proc.terminate()
    t.join(30)
    status, _, body = result["answer"]
    assert status == 200 and orjson.loads(body) == {"outputs": [1.0]}
    assert code == 0, proc.log()
    assert "draining 1 requests in flight" in proc.log()
    assert time.monotonic() - t0 < 20
