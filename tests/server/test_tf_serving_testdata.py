"""TF Serving's own test cases (tensorflow_model_server_test.py, the REST handler tests) on its TF1 testdata models.

The models are built by examples/tf_serving_testdata.py the way TF Serving's testdata scripts build
them (TF1 graphs: half_plus_two's predict input `x` is the parsed feature, declared [-1, 1] and fed
whatever shape the request has). One `tidal model-server` serves them over REST and gRPC with
tensorflow-serving-api's stubs; generated bad requests get no 5xx and no crash.
"""

from __future__ import annotations

import base64
import random
import shutil

import numpy as np
import orjson
import pytest

pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed (pip install tidal[tensorflow])")
grpc = pytest.importorskip("grpc")

from tensorflow.core.example import example_pb2  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2, model_service_pb2_grpc,
    predict_pb2, prediction_service_pb2_grpc, regression_pb2,
)

from tests.conftest import EXAMPLES_DIR  # noqa: E402
from tests.server.procs import start_config_server  # noqa: E402

pytestmark = pytest.mark.e2e
RPC_TIMEOUT = 10.0
BERT_VERSION = 1623831335


@pytest.fixture(scope="session")
def testdata(tmp_path_factory):
    """TF Serving's testdata models, built once per session."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tf_serving_testdata", EXAMPLES_DIR / "tf_serving_testdata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("tf_serving_testdata")
    module.build(out)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory, testdata):
    root = tmp_path_factory.mktemp("tfs_testdata_server")
    bert = root / "bert"
    # Two versions on disk; the reference procedure's policy serves one of them.
    shutil.copytree(testdata / "bert_tiny" / str(BERT_VERSION), bert / str(BERT_VERSION))
    shutil.copytree(testdata / "bert_tiny" / str(BERT_VERSION), bert / str(BERT_VERSION + 1))
    proc = start_config_server(root, f"""
model_config_list {{
  config {{ name: 'default' base_path: '{testdata / "saved_model_half_plus_two_cpu"}' model_platform: 'tensorflow' }}
  config {{ name: 'half_plus_two' base_path: '{testdata / "saved_model_half_plus_two_cpu"}' }}
  config {{ name: 'half_plus_three' base_path: '{testdata / "saved_model_half_plus_three"}' }}
  config {{ name: 'estimator' base_path: '{testdata / "estimator_linear"}' }}
  config {{ name: 'bert' base_path: '{bert}'
            model_version_policy {{ specific {{ versions: {BERT_VERSION} }} }} }}
}}
""")
    yield proc
    assert proc.terminate() == 0, proc.log()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_address) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def rest(server, path: str, doc=None) -> tuple[int, dict]:
    status, _, body = server.request("POST" if doc is not None else "GET", path,
                                     orjson.dumps(doc) if doc is not None else None)
    return status, orjson.loads(body)


# -- REST: tensorflow_model_server_test.py's *REST cases and the REST handler tests -------------

@pytest.mark.parametrize("path, doc, expected", [
    (":classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, {"results": [[["", 3.0]]]}),
    (":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}, {"results": [3.0]}),
    (":regress", {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}]}, {"results": [4.0]}),
    (":regress", {"signature_name": "regress_x_to_y", "context": {"x": 2.0}, "examples": [{}, {"x": 4.0}]},
     {"results": [3.0, 4.0]}),
    (":predict", {"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),
    (":predict", {"inputs": [2.0, 3.0, 4.0]}, {"outputs": [3.0, 3.5, 4.0]}),
    (":predict", {"instances": [[2.0], [3.0]]}, {"predictions": [[3.0], [3.5]]}),
    (":predict", {"signature_name": "serving_default", "inputs": {"x": [[1.0], [2.0], [5.0]]}},
     {"outputs": [[2.5], [3.0], [4.5]]}),
    ("/versions/123:predict", {"instances": [1.0, 2.0, 5.0]}, {"predictions": [2.5, 3.0, 4.5]}),
])
def test_half_plus_two_rest(server, path, doc, expected):
    assert rest(server, "/v1/models/default" + path, doc) == (200, expected)


def test_half_plus_three_rest(server):
    assert rest(server, "/v1/models/half_plus_three:predict", {"instances": [2.0]}) == (200, {"predictions": [4.0]})


def test_status_and_metadata_rest(server):
    assert rest(server, "/v1/models/default") == (200, {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    status, doc = rest(server, "/v1/models/default/metadata")
    assert status == 200 and doc["model_spec"] == {"name": "default", "signature_name": "", "version": "123"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) >= {"serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2", "regress_x2_to_y3"}
    x = sigs["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT" and x["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}
    assert sigs["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert sigs["classify_x_to_y"]["inputs"]["inputs"]["dtype"] == "DT_STRING"


@pytest.mark.parametrize("path, doc, message", [
    (":classify", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}, "classify"),
    (":regress", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, "regress"),
    (":regress", {"signature_name": "regress_x_to_y", "examples": [{"y": 2.0}]}, "Feature: x"),
    (":predict", {"instances": ["two"]}, "x"),
    (":predict", {"signature_name": "nope", "instances": [1.0]}, "nope"),
    (":predict", {"instances": [[1.0, 2.0], [3.0]]}, ""),
])
def test_half_plus_two_rest_errors(server, path, doc, message):
    status, body = rest(server, "/v1/models/default" + path, doc)
    assert status == 400 and message in body["error"] and 'File "' not in body["error"]


# -- gRPC: tensorflow_model_server_test.py ------------------------------------------------------

def predict_request(model="default", x=(2.0,), dims=(1,), output_filter=("y",), signature=""):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.extend(x)
    for d in dims:
        request.inputs["x"].tensor_shape.dim.add().size = d
    request.output_filter.extend(output_filter)
    return request


def check_spec(spec, name, signature, version):
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature, version)


@pytest.mark.parametrize("model, expected", [("default", 3.0), ("half_plus_two", 3.0), ("half_plus_three", 4.0)])
@pytest.mark.parametrize("specify_output", [True, False])
def test_predict_grpc(stub, model, expected, specify_output):
    result = stub.Predict(predict_request(model, output_filter=("y",) if specify_output else ()), RPC_TIMEOUT)
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [expected]
    check_spec(result.model_spec, model, "serving_default", 123)


def _examples(request, xs=(2.0,)):
    for x in xs:
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return request


def test_classify_regress_and_multi_inference_grpc(stub):
    request = _examples(classification_pb2.ClassificationRequest())
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    result = stub.Classify(request, RPC_TIMEOUT)
    assert [c.score for c in result.result.classifications[0].classes] == [3.0]
    check_spec(result.model_spec, "default", "classify_x_to_y", 123)

    for signature, expected in (("regress_x_to_y", 3.0), ("regress_x_to_y2", 4.0)):
        request = _examples(regression_pb2.RegressionRequest())
        request.model_spec.name = "default"
        request.model_spec.signature_name = signature
        result = stub.Regress(request, RPC_TIMEOUT)
        assert [r.value for r in result.result.regressions] == [expected]
        check_spec(result.model_spec, "default", signature, 123)

    request = _examples(inference_pb2.MultiInferenceRequest())
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = f"tensorflow/serving/{method}"
    result = stub.MultiInference(request, RPC_TIMEOUT)
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0


def test_predict_on_a_regress_signature_with_a_float_input_grpc(stub):
    # TF Serving's PredictionWithNamedRegressionSignature: regress_x2_to_y3 takes x2 itself, not tf.Examples.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x2_to_y3"
    request.inputs["inputs"].dtype = types_pb2.DT_FLOAT
    request.inputs["inputs"].float_val.append(2.0)
    result = stub.Predict(request, RPC_TIMEOUT)
    assert list(result.outputs["outputs"].float_val) == [4.0]
    check_spec(result.model_spec, "default", "regress_x2_to_y3", 123)


def test_status_and_metadata_grpc(stub, channel):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    result = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, RPC_TIMEOUT)
    assert [(s.version, s.status.error_code) for s in result.model_version_status] == [(123, 0)]
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = stub.GetModelMetadata(request, RPC_TIMEOUT)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    result.metadata["signature_def"].Unpack(sig_map)
    x = sig_map.signature_def["serving_default"].inputs["x"]
    assert x.dtype == types_pb2.DT_FLOAT and [d.size for d in x.tensor_shape.dim] == [-1, 1]


# -- an estimator's export: a serialized tf.Example input --------------------------------------

def _example(x: float) -> bytes:
    ex = example_pb2.Example()
    ex.features.feature["x"].float_list.value.append(x)
    return ex.SerializeToString()


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_estimator_export_rest_and_grpc(server, stub):
    # logit = 2x - 1: x=2 -> positive, x=-1 -> negative
    status, doc = rest(server, "/v1/models/estimator:classify", {"examples": [{"x": 2.0}, {"x": -1.0}]})
    assert status == 200
    (l0, s0), (l1, s1) = doc["results"][0]
    assert (l0, l1) == ("0", "1") and s1 == pytest.approx(_sigmoid(3.0), rel=1e-6)
    assert doc["results"][1][1][1] == pytest.approx(_sigmoid(-3.0), rel=1e-5)
    status, doc = rest(server, "/v1/models/estimator:regress",
                       {"signature_name": "regression", "examples": [{"x": 0.5}]})
    assert status == 200 and doc["results"] == [pytest.approx(0.5)]
    b64 = base64.b64encode(_example(2.0)).decode()
    status, doc = rest(server, "/v1/models/estimator:predict",
                       {"signature_name": "predict", "instances": [{"b64": b64}]})
    assert status == 200, doc
    assert doc["predictions"][0]["class_ids"] == [1]
    assert doc["predictions"][0]["logits"] == [pytest.approx(3.0)]

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "estimator"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(-1.0)
    (row,) = stub.Classify(request, RPC_TIMEOUT).result.classifications
    assert [c.label for c in row.classes] == ["0", "1"]
    assert row.classes[0].score == pytest.approx(1 - _sigmoid(-3.0), rel=1e-6)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "estimator"
    request.model_spec.signature_name = "predict"
    request.inputs["examples"].dtype = types_pb2.DT_STRING
    request.inputs["examples"].tensor_shape.dim.add().size = 1
    request.inputs["examples"].string_val.append(_example(-1.0))
    result = stub.Predict(request, RPC_TIMEOUT)
    assert list(result.outputs["class_ids"].int64_val) == [0]


# -- the reference procedure's model shape ------------------------------------------------------

def _bert_inputs(batch: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 1000, (batch, 128), dtype=np.int32)
    mask = np.ones((batch, 128), np.int32)
    mask[:, 64:] = 0
    return {"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros((batch, 128), np.int32)}


def test_bert_shaped_model_rest_and_grpc_same_answer(server, stub):
    status, doc = rest(server, "/v1/models/bert")
    assert status == 200 and [s["version"] for s in doc["model_version_status"]] == [str(BERT_VERSION)]
    inputs = _bert_inputs(3)
    status, doc = rest(server, "/v1/models/bert:predict",
                       {"inputs": {k: v.tolist() for k, v in inputs.items()}})
    assert status == 200, doc
    probs = np.array(doc["outputs"], dtype=np.float32)
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    status, doc = rest(server, "/v1/models/bert:predict",
                       {"instances": [{k: v[0].tolist() for k, v in inputs.items()}]})
    assert status == 200 and np.allclose(doc["predictions"][0], probs[0], atol=1e-6)

    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "bert"
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    result = stub.Predict(request, RPC_TIMEOUT)
    check_spec(result.model_spec, "bert", "serving_default", BERT_VERSION)
    assert np.allclose(tf.make_ndarray(result.outputs["probabilities"]), probs, atol=1e-6)
    request.model_spec.version.value = BERT_VERSION + 1  # on disk, not in the policy
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, RPC_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -- bad input: no 5xx, no crash -------------------------------------------------------------

OK_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION}


def bad_grpc_request(rng: random.Random) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = rng.choice(["default", "bert", "estimator", "half_plus_three"])
    request.model_spec.signature_name = rng.choice(["", "", "predict", "classify_x_to_y", "regress_x2_to_y3"])
    name = rng.choice(["x", "input_ids", "input_mask", "examples", "inputs", "zz"])
    tensor = request.inputs[name]
    tensor.dtype = rng.choice([types_pb2.DT_FLOAT, types_pb2.DT_INT32, types_pb2.DT_STRING, types_pb2.DT_INT64,
                               types_pb2.DT_HALF, 999])
    for _ in range(rng.randrange(0, 5)):
        tensor.tensor_shape.dim.add().size = rng.choice([0, 1, 2, 3, 128, -1, 1 << 33])
    kind = rng.randrange(5)
    if kind == 0:
        tensor.tensor_content = rng.randbytes(rng.randrange(0, 64))
    elif kind == 1:
        tensor.float_val.extend(rng.uniform(-1e30, 1e30) for _ in range(rng.randrange(0, 9)))
    elif kind == 2:
        tensor.string_val.extend(rng.randbytes(rng.randrange(0, 16)) for _ in range(rng.randrange(0, 4)))
    elif kind == 3:
        tensor.int_val.extend(rng.randrange(-(1 << 31), 1 << 31) for _ in range(rng.randrange(0, 300)))
    else:
        tensor.tensor_shape.unknown_rank = True
    return request


def test_generated_bad_requests_no_5xx_no_crash(server, stub):
    from tests.server.test_robustness import encode, generate, pipeline

    rng = random.Random(20261204)
    requests = [bad_grpc_request(rng) for _ in range(600)]
    futures = [stub.Predict.future(r, RPC_TIMEOUT) for r in requests]
    unexpected = []
    for request, future in zip(requests, futures):
        try:
            future.result()
        except grpc.RpcError as err:
            if err.code() not in OK_CODES:
                unexpected.append((str(err.code()), err.details(), str(request)[:200]))
    assert not unexpected, unexpected[:5]
    # REST's generator, aimed at half_plus_two (here the TF1 graph, whose shapes come from the request).
    generated = [generate(rng) for _ in range(3000)]
    statuses = pipeline(server.port, [encode(*g) for g in generated])
    bad = [(s, g[0], g[1], g[3][:80]) for s, g in zip(statuses, generated) if s >= 500]
    assert not bad, f"{len(bad)} requests answered 5xx, e.g. {bad[:5]}"
    assert list(stub.Predict(predict_request(), RPC_TIMEOUT).outputs["y"].float_val) == [3.0]
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()
