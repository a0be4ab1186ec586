"""Targets resolve to the right paths; sample bodies satisfy the model's declared inputs."""

from __future__ import annotations

import orjson
import pytest

from tidal.bench.payload import (InputSpec, Target, encode, inputs_from_metadata, metadata_path, parse_target,
                                 read_body, sample_body)
from tidal.errors import UserError


@pytest.mark.parametrize("url, model, protocol, version, expected", [
    ("http://127.0.0.1:8501/v1/models/half:predict", None, None, None,
     Target("127.0.0.1", 8501, "/v1/models/half:predict", "tfserving", "half")),
    ("127.0.0.1:9000/v2/models/half/versions/2/infer", None, None, None,
     Target("127.0.0.1", 9000, "/v2/models/half/versions/2/infer", "v2", "half")),
    ("http://localhost:8080/svc/", "half", None, None,
     Target("localhost", 8080, "/svc/v1/models/half:predict", "tfserving", "half")),
    ("http://localhost:8080", "half", "v2", "3",
     Target("localhost", 8080, "/v2/models/half/versions/3/infer", "v2", "half")),
    ("http://localhost:8080", "half", "tfserving", "3",
     Target("localhost", 8080, "/v1/models/half/versions/3:predict", "tfserving", "half")),
    ("http://localhost/v2/health/ready", None, None, None,
     Target("localhost", 80, "/v2/health/ready", None, None)),
])
def test_parse_target(url, model, protocol, version, expected):
    assert parse_target(url, model, protocol, version) == expected


@pytest.mark.parametrize("url, message", [
    ("https://x:1/", "only http://"),
    ("http://:80/", "no host"),
    ("http://x:port/", "bad port"),
])
def test_parse_target_errors(url, message):
    with pytest.raises(UserError, match=message):
        parse_target(url, "m", None)


def test_metadata_paths():
    assert metadata_path(parse_target("h:1", "m", "tfserving", "2")) == "/v1/models/m/versions/2/metadata"
    assert metadata_path(parse_target("h:1", "m", "v2")) == "/v2/models/m"
    with pytest.raises(UserError, match="needs a model"):
        metadata_path(parse_target("h:1/", None, None))


TF_METADATA = {
    "model_spec": {"name": "m", "signature_name": "", "version": "1"},
    "metadata": {"signature_def": {"signature_def": {"serving_default": {
        "inputs": {
            "x": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "3"}], "unknown_rank": False}},
            "ids": {"dtype": "DT_INT64", "tensor_shape": {"dim": [{"size": "-1"}]}},
            "text": {"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1"}]}},
        },
        "outputs": {}, "method_name": "tensorflow/serving/predict"}}}}}


def test_inputs_from_tf_serving_metadata():
    assert inputs_from_metadata(TF_METADATA, "tfserving") == [
        InputSpec("x", "FP32", (-1, 3)), InputSpec("ids", "INT64", (-1,)), InputSpec("text", "BYTES", (-1,))]
    flat = {"metadata": {"signature_def": {"serving_default": {"inputs": {"x": {"dtype": "FP64", "shape": [-1, 2]}}}}}}
    assert inputs_from_metadata(flat, "tfserving") == [InputSpec("x", "FP64", (-1, 2))]
    with pytest.raises(UserError, match="no signature 'other'.*serving_default"):
        inputs_from_metadata(TF_METADATA, "tfserving", "other")
    with pytest.raises(UserError, match="cannot read the model's inputs"):
        inputs_from_metadata({"metadata": {}}, "tfserving")


def test_tf_serving_sample_body_is_columnar_with_the_batch():
    body = orjson.loads(sample_body(inputs_from_metadata(TF_METADATA, "tfserving"), "tfserving", batch=4))
    x, ids, text = body["inputs"]["x"], body["inputs"]["ids"], body["inputs"]["text"]
    assert len(x) == 4 and all(len(row) == 3 and all(0 <= v < 1 for v in row) for row in x)
    assert len(ids) == 4 and all(isinstance(v, int) for v in ids)
    assert text == [{"b64": "c2FtcGxl"}] * 4
    assert "signature_name" not in body
    # Deterministic: the same request every run, so runs compare.
    assert sample_body(inputs_from_metadata(TF_METADATA, "tfserving"), "tfserving", batch=4) == \
        sample_body(inputs_from_metadata(TF_METADATA, "tfserving"), "tfserving", batch=4)


def test_v2_sample_body():
    doc = {"name": "m", "platform": "onnxruntime_onnx",
           "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]},
                      {"name": "flag", "datatype": "BOOL", "shape": [1]}], "outputs": []}
    body = orjson.loads(sample_body(inputs_from_metadata(doc, "v2"), "v2", batch=3))
    x, flag = body["inputs"]
    assert x["name"] == "x" and x["shape"] == [3, 2] and x["datatype"] == "FP32" and len(x["data"]) == 6
    assert flag["shape"] == [1] and flag["data"][0] in (True, False)


def test_sample_body_errors():
    with pytest.raises(UserError, match="declares no inputs"):
        sample_body([], "v2")
    with pytest.raises(UserError, match="cannot be built"):
        sample_body([InputSpec("q", "COMPLEX64", (1,))], "v2")


def test_read_body_and_encode(tmp_path):
    good = tmp_path / "req.json"
    good.write_bytes(b'{"instances": [1.0]}')
    assert read_body(str(good)) == b'{"instances": [1.0]}'
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"instances": [1.0')
    with pytest.raises(UserError, match="not valid JSON"):
        read_body(str(bad))
    with pytest.raises(UserError, match="cannot read body"):
        read_body(str(tmp_path / "none.json"))
    raw = encode(parse_target("h:1", "m", None), "POST", b"{}", [("X-Trace", "1")])
    assert raw == (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: h:1\r\nContent-Length: 2\r\n"
                   b"X-Trace: 1\r\nContent-Type: application/json\r\n\r\n{}")
