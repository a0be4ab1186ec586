"""TF Serving's gRPC API end to end: TF Serving's own half_plus_two cases with its client package, errors, robustness.

One `tidal model-server` process serves the half_plus_two SavedModel (two versions,
labels) as `default` and as `half_plus_two`, the Keras sentiment SavedModel as
`sentiment`, and the ONNX half_plus_two as `onnx`; the gRPC clients are
tensorflow-serving-api's stubs, as a TF Serving user's code would be. The REST
robustness generator of the ONNX path runs against the SavedModels too.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import numpy as np
import orjson
import pytest

pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed (pip install tidal[tensorflow])")
grpc = pytest.importorskip("grpc")

from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2, model_service_pb2_grpc,
    predict_pb2, prediction_service_pb2_grpc, regression_pb2,
)
from tensorflow.core.framework import types_pb2  # noqa: E402

from tests.server.procs import REPO, start_config_server  # noqa: E402

pytestmark = pytest.mark.e2e
RPC_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_base, half_plus_two_tf_base, sentiment_tf_base):
    root = tmp_path_factory.mktemp("grpc")
    tf_base = root / "half_plus_two"
    shutil.copytree(half_plus_two_tf_base / "123", tf_base / "123")
    shutil.copytree(half_plus_two_tf_base / "123", tf_base / "124")
    proc = start_config_server(root, f"""
model_config_list {{
  config {{
    name: 'default'
    base_path: '{tf_base}'
    model_platform: 'tensorflow'
    model_version_policy {{ all {{}} }}
    version_labels {{ key: 'stable' value: 123 }}
    version_labels {{ key: 'canary' value: 124 }}
  }}
  config {{ name: 'onnx' base_path: '{half_plus_two_base}' }}
  config {{ name: 'half_plus_two' base_path: '{half_plus_two_tf_base}' }}
  config {{ name: 'sentiment' base_path: '{sentiment_tf_base}' }}
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


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(model="default", x=(2.0,), signature="", output_filter=("y",), version=None, label=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature:
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.extend(x)
    request.inputs["x"].tensor_shape.dim.add().size = len(x)
    request.output_filter.extend(output_filter)
    return request


def examples_request(cls, model="default", signature="", xs=(2.0,), context=None):
    request = cls()
    request.model_spec.name = model
    if signature:
        request.model_spec.signature_name = signature
    if context is None:
        examples = request.input.example_list.examples
    else:
        request.input.example_list_with_context.context.features.feature["x"].float_list.value.append(context)
        examples = request.input.example_list_with_context.examples
    for x in xs:
        example = examples.add()
        if x is not None:
            example.features.feature["x"].float_list.value.append(x)
    return request


def check_spec(spec, name, signature, version):
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature, version)


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, RPC_TIMEOUT)
    return info.value


# -- TF Serving's tensorflow_model_server_test.py cases -----------------------------------

@pytest.mark.parametrize("specify_output", [True, False])
def test_predict(stub, specify_output):
    result = stub.Predict(predict_request(output_filter=("y",) if specify_output else ()), RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [3.0]
    check_spec(result.model_spec, "default", "serving_default", 124)


@pytest.mark.parametrize("version,label,expected", [(123, None, 123), (None, "stable", 123), (None, "canary", 124)])
def test_predict_version_and_label(stub, version, label, expected):
    result = stub.Predict(predict_request(x=(1.0, 2.0), version=version, label=label), RPC_TIMEOUT)
    assert list(result.outputs["y"].float_val) == [2.5, 3.0]
    assert [d.size for d in result.outputs["y"].tensor_shape.dim] == [2]
    assert result.model_spec.version.value == expected


def test_classify(stub):
    result = stub.Classify(examples_request(classification_pb2.ClassificationRequest, signature="classify_x_to_y"),
                           RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    check_spec(result.model_spec, "default", "classify_x_to_y", 124)


def test_regress(stub):
    result = stub.Regress(examples_request(regression_pb2.RegressionRequest, signature="regress_x_to_y"), RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    check_spec(result.model_spec, "default", "regress_x_to_y", 124)


def test_regress_with_context_and_several_examples(stub):
    request = examples_request(regression_pb2.RegressionRequest, signature="regress_x_to_y2", xs=(None, 4.0),
                               context=1.0)
    result = stub.Regress(request, RPC_TIMEOUT)
    assert [r.value for r in result.result.regressions] == [3.5, 5.0]


def test_multi_inference(stub):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                              ("classify_x_to_y", "tensorflow/serving/classify")):
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
    result = stub.MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for r, signature in zip(result.results, ("regress_x_to_y", "classify_x_to_y")):
        check_spec(r.model_spec, "default", signature, 124)
    request.tasks[1].model_spec.signature_name = "regress_x_to_y"
    err = rpc_error(stub.MultiInference, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Duplicate evaluation of signature: regress_x_to_y" in err.details()
    request.tasks[1].model_spec.name = "onnx"
    err = rpc_error(stub.MultiInference, request)
    assert "must access the same model name" in err.details()


def test_get_model_status(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    result = model_stub.GetModelStatus(request, RPC_TIMEOUT)
    assert sorted(s.version for s in result.model_version_status) == [123, 124]
    for status in result.model_version_status:
        assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert status.status.error_code == 0
    request.model_spec.version.value = 123
    (only,) = model_stub.GetModelStatus(request, RPC_TIMEOUT).model_version_status
    assert only.version == 123


def test_get_model_metadata(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.model_spec.version.value = 123
    request.metadata_field.append("signature_def")
    result = stub.GetModelMetadata(request, RPC_TIMEOUT)
    assert (result.model_spec.name, result.model_spec.version.value) == ("default", 123)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert result.metadata["signature_def"].Unpack(sig_map)
    sigs = sig_map.signature_def
    assert sorted(sigs) == ["classify_x_to_y", "regress_x_to_y", "regress_x_to_y2", "serving_default"]
    assert sigs["serving_default"].method_name == "tensorflow/serving/predict"
    assert sigs["classify_x_to_y"].method_name == "tensorflow/serving/classify"
    assert sigs["regress_x_to_y"].method_name == "tensorflow/serving/regress"
    x = sigs["serving_default"].inputs["x"]
    assert x.dtype == types_pb2.DT_FLOAT and [d.size for d in x.tensor_shape.dim] == [-1]
    assert sigs["classify_x_to_y"].inputs["inputs"].dtype == types_pb2.DT_STRING
    assert [d.size for d in sigs["classify_x_to_y"].outputs["scores"].tensor_shape.dim] == [-1, 1]


# -- the ONNX model over gRPC (TensorProto <-> numpy, Tidal's classify/regress views) ---------

def test_onnx_model_predict_and_regress(stub):
    result = stub.Predict(predict_request(model="onnx", x=(1.0, 5.0)), RPC_TIMEOUT)
    assert list(result.outputs["y"].float_val) == [2.5, 4.5]
    result = stub.Regress(examples_request(regression_pb2.RegressionRequest, model="onnx", xs=(2.0, 6.0)), RPC_TIMEOUT)
    assert [r.value for r in result.result.regressions] == [3.0, 5.0]
    assert result.model_spec.signature_name == "regression"


def test_tensor_content_inputs(stub):
    request = predict_request(x=())
    request.inputs["x"].tensor_shape.dim[0].size = 3
    request.inputs["x"].tensor_content = np.array([0.0, 2.0, 4.0], "<f4").tobytes()
    assert list(stub.Predict(request, RPC_TIMEOUT).outputs["y"].float_val) == [2.0, 3.0, 4.0]


# -- errors map to TF Serving's status codes ----------------------------------------------

def _unknown_input():
    r = predict_request()
    r.inputs["z"].CopyFrom(r.inputs["x"])
    return r


def _missing_input():
    r = predict_request()
    del r.inputs["x"]
    return r


def _string_input():
    r = predict_request(x=())
    r.inputs["x"].dtype = types_pb2.DT_STRING
    r.inputs["x"].tensor_shape.dim[0].size = 1
    r.inputs["x"].string_val.append(b"a")
    return r


def _bad_content():
    r = predict_request(x=())
    r.inputs["x"].tensor_shape.dim[0].size = 4
    r.inputs["x"].tensor_content = b"\x00" * 3
    return r


def _huge_shape():
    r = predict_request(x=(1.0,))
    r.inputs["x"].tensor_shape.dim[0].size = 1 << 40
    return r


def _garbage_example():
    r = predict_pb2.PredictRequest()
    r.model_spec.name = "default"
    r.model_spec.signature_name = "classify_x_to_y"
    r.inputs["inputs"].dtype = types_pb2.DT_STRING
    r.inputs["inputs"].tensor_shape.dim.add().size = 1
    r.inputs["inputs"].string_val.append(b"not an example")
    return r


def _no_spec():
    r = predict_request()
    r.ClearField("model_spec")
    return r


PREDICT_ERRORS = [
    ("unknown model", lambda: predict_request(model="nope"), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", lambda: predict_request(version=99), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Specific(default, 99)"),
    ("unknown label", lambda: predict_request(label="gone"), grpc.StatusCode.INVALID_ARGUMENT,
     "Unrecognized servable version label: gone"),
    ("unknown signature", lambda: predict_request(signature="nope"), grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    ("unknown input", _unknown_input, grpc.StatusCode.INVALID_ARGUMENT,
     "input tensor alias not found in signature: z. Inputs expected to be in the set {x}."),
    ("missing input", _missing_input, grpc.StatusCode.INVALID_ARGUMENT, "Missing but required: {x}."),
    ("unknown output", lambda: predict_request(output_filter=("w",)), grpc.StatusCode.INVALID_ARGUMENT,
     "output tensor alias not found in signature: w"),
    ("duplicate output", lambda: predict_request(output_filter=("y", "y")), grpc.StatusCode.INVALID_ARGUMENT,
     "duplicate output tensor alias: y"),
    ("wrong dtype", _string_input, grpc.StatusCode.INVALID_ARGUMENT, "expects FP32"),
    ("bad tensor_content", _bad_content, grpc.StatusCode.INVALID_ARGUMENT, "tensor_content holds 3 bytes"),
    ("huge shape", _huge_shape, grpc.StatusCode.INVALID_ARGUMENT, "larger than any tensor Tidal accepts"),
    ("garbage example", _garbage_example, grpc.StatusCode.INVALID_ARGUMENT, "Could not parse example input"),
    ("no model spec", _no_spec, grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
]


@pytest.mark.parametrize("name,make,code,message", PREDICT_ERRORS, ids=[e[0] for e in PREDICT_ERRORS])
def test_predict_errors(stub, name, make, code, message):
    err = rpc_error(stub.Predict, make())
    assert err.code() == code, err.details()
    assert message in err.details()


def test_classify_and_regress_errors(stub):
    err = rpc_error(stub.Classify, examples_request(classification_pb2.ClassificationRequest))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expected classification signature method_name to be tensorflow/serving/classify" in err.details()
    err = rpc_error(stub.Regress, examples_request(regression_pb2.RegressionRequest, signature="classify_x_to_y"))
    assert "Expected regression signature method_name" in err.details()
    err = rpc_error(stub.Regress, examples_request(regression_pb2.RegressionRequest, signature="nope"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "No signature was found with the name: nope" in err.details()
    err = rpc_error(stub.Classify, examples_request(classification_pb2.ClassificationRequest,
                                                    signature="classify_x_to_y", xs=()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "Input is empty" in err.details()
    err = rpc_error(stub.Regress, examples_request(regression_pb2.RegressionRequest, signature="regress_x_to_y",
                                                   xs=(None,)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "Feature: x (data type: float) is required" in err.details()


def test_metadata_and_status_errors(stub, model_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    err = rpc_error(stub.GetModelMetadata, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "at least one metadata_field" in err.details()
    request.metadata_field.append("everything")
    err = rpc_error(stub.GetModelMetadata, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "Metadata field everything is not supported" in err.details()
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    assert rpc_error(model_stub.GetModelStatus, status).code() == grpc.StatusCode.NOT_FOUND


# -- robustness: generated bad requests, the server stays up --------------------------------

ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
# None of these converts to the FP32 input (Tidal, like REST, takes bool, int and float types for a float input).
DTYPES = [types_pb2.DT_STRING, types_pb2.DT_COMPLEX64, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, 999]


def bad_predict(rng: random.Random) -> predict_pb2.PredictRequest:
    """A Predict request that must be refused (by construction never a valid one)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = rng.choice(["default", "onnx", "nope", ""])
    kind = rng.randrange(6)
    tensor = request.inputs[rng.choice(["x", "x", "inputs", "z"])]
    tensor.dtype = rng.choice(DTYPES)
    for _ in range(rng.randrange(0, 4)):
        tensor.tensor_shape.dim.add().size = rng.choice([0, 1, 3, -1, 1 << 33])
    if kind == 0:
        tensor.tensor_content = rng.randbytes(rng.randrange(0, 64))
    elif kind == 1:
        tensor.float_val.extend(rng.random() for _ in range(rng.randrange(0, 9)))
    elif kind == 2:
        tensor.string_val.extend(rng.randbytes(rng.randrange(0, 16)) for _ in range(rng.randrange(0, 4)))
    elif kind == 3:
        tensor.int64_val.extend(rng.randrange(-(1 << 63), 1 << 63) for _ in range(rng.randrange(0, 4)))
    elif kind == 4:
        tensor.tensor_shape.unknown_rank = True
    else:
        request.model_spec.signature_name = rng.choice(["classify_x_to_y", "regress_x_to_y", "nope", "regression"])
        tensor.half_val.extend(rng.randrange(0, 1 << 16) for _ in range(rng.randrange(0, 4)))
    return request


def test_generated_bad_requests_are_refused_and_the_server_stays_up(server, stub, channel):
    rng = random.Random(7)
    requests = [bad_predict(rng) for _ in range(600)]
    futures = [stub.Predict.future(r, RPC_TIMEOUT) for r in requests]
    # Bytes that are not a request message at all, on every method.
    raw_calls = [channel.unary_unary(f"/tensorflow.serving.PredictionService/{m}") for m in
                 ("Predict", "Classify", "Regress", "GetModelMetadata")]
    raw = [call.future(rng.randbytes(rng.randrange(1, 200)), RPC_TIMEOUT) for call in raw_calls for _ in range(25)]
    unexpected = []
    for request, future in zip(requests, futures):
        try:
            future.result()
            unexpected.append(("OK", str(request)))
        except grpc.RpcError as err:
            if err.code() not in ALLOWED:
                unexpected.append((str(err.code()), err.details()))
    assert not unexpected, unexpected[:5]
    for future in raw:
        with pytest.raises(grpc.RpcError) as info:
            future.result()
        assert info.value.code() in ALLOWED, info.value.details()
    assert list(stub.Predict(predict_request(), RPC_TIMEOUT).outputs["y"].float_val) == [3.0]
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()


# -- shared with REST: the same process, metrics and model versions ------------------------

def test_rest_serves_the_saved_model_and_metrics_count_grpc(server, stub):
    stub.Predict(predict_request(), RPC_TIMEOUT)
    status, _, body = server.request("POST", "/v1/models/default/labels/stable:regress",
                                     orjson.dumps({"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}))
    assert (status, orjson.loads(body)) == (200, {"results": [3.0]})
    status, _, body = server.request("GET", "/metrics")
    text = body.decode()
    assert 'api="grpc_predict"' in text and 'model="default",version="124"' in text


# (name, REST path, REST body, gRPC method, gRPC request): the same model and request both ways
PARITY = [
    ("predict", "default:predict", {"instances": [1.0, 4.0]}, "Predict", lambda: predict_request(x=(1.0, 4.0))),
    ("predict, a version", "default/versions/123:predict", {"instances": [2.0]}, "Predict",
     lambda: predict_request(x=(2.0,), version=123)),
    ("predict, the ONNX model", "onnx:predict", {"instances": [3.0]}, "Predict",
     lambda: predict_request(model="onnx", x=(3.0,))),
    ("classify, a SavedModel signature", "default:classify",
     {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": 5.0}]}, "Classify",
     lambda: examples_request(classification_pb2.ClassificationRequest, signature="classify_x_to_y", xs=(2.0, 5.0))),
    ("classify, labels and scores", "sentiment:classify", {"examples": [{"text": "great movie"}]}, "Classify",
     lambda: _sentiment_classify("great movie")),
    ("regress, with a context", "default:regress",
     {"signature_name": "regress_x_to_y2", "context": {"x": 1.0}, "examples": [{}, {"x": 4.0}]}, "Regress",
     lambda: examples_request(regression_pb2.RegressionRequest, signature="regress_x_to_y2", xs=(None, 4.0),
                              context=1.0)),
    ("regress, the ONNX view", "onnx:regress", {"examples": [{"x": 2.0}, {"x": 6.0}]}, "Regress",
     lambda: examples_request(regression_pb2.RegressionRequest, model="onnx", xs=(2.0, 6.0))),
    ("unknown model", "nope:predict", {"instances": [1.0]}, "Predict", lambda: predict_request(model="nope")),
    ("unknown version", "default/versions/99:predict", {"instances": [1.0]}, "Predict",
     lambda: predict_request(version=99)),
    ("unknown signature", "default:predict", {"signature_name": "nope", "instances": [1.0]}, "Predict",
     lambda: predict_request(signature="nope")),
    ("classify a predict signature", "default:classify", {"examples": [{"x": 2.0}]}, "Classify",
     lambda: examples_request(classification_pb2.ClassificationRequest)),
    ("regress a classify signature", "default:regress", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
     "Regress", lambda: examples_request(regression_pb2.RegressionRequest, signature="classify_x_to_y")),
    ("classify, no signature of the name", "default:classify", {"signature_name": "nope", "examples": [{"x": 1.0}]},
     "Classify", lambda: examples_request(classification_pb2.ClassificationRequest, signature="nope")),
]


def _sentiment_classify(text: str):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "sentiment"
    request.input.example_list.examples.add().features.feature["text"].bytes_list.value.append(text.encode())
    return request


def _read(method: str, rest: dict | None, response) -> list:
    """The answer as a client reads it, from REST JSON or from a gRPC response, in float32."""
    if method == "Predict":
        if rest is not None:
            return [np.float32(v) for v in rest["predictions"]]
        return [np.float32(v) for v in response.outputs["y"].float_val]
    if method == "Classify":
        if rest is not None:
            return [[(label, np.float32(score)) for label, score in row] for row in rest["results"]]
        return [[(c.label, np.float32(c.score)) for c in row.classes] for row in response.result.classifications]
    if rest is not None:
        return [np.float32(v) for v in rest["results"]]
    return [np.float32(r.value) for r in response.result.regressions]


_HTTP = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
         grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.UNIMPLEMENTED: 501}


@pytest.mark.parametrize("name,path,body,method,make", PARITY, ids=[c[0] for c in PARITY])
def test_rest_and_grpc_give_the_same_answer_or_error_class(server, stub, name, path, body, method, make):
    status, _, raw = server.request("POST", "/v1/models/" + path, orjson.dumps(body))
    doc = orjson.loads(raw)
    try:
        response = getattr(stub, method)(make(), RPC_TIMEOUT)
    except grpc.RpcError as err:
        assert status != 200, (doc, err.code(), err.details())
        assert (_HTTP.get(err.code()), err.details()) == (status, doc["error"])
        return
    assert status == 200, doc
    assert _read(method, doc, None) == _read(method, None, response)


def test_a_grpc_port_in_use_is_a_clear_error(server, half_plus_two_base):
    taken = server.grpc_address.rsplit(":", 1)[1]
    proc = subprocess.run([sys.executable, "-m", "tidal", "model-server", "--port", taken, "--rest_api_host",
                           "127.0.0.1", "--rest_api_port", "0", "--model_base_path", str(half_plus_two_base)],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{taken} for gRPC" in proc.stderr


def test_rest_generated_bad_requests_against_saved_models_all_4xx(server):
    """The ONNX path's generator (tests/server/test_robustness.py) at the SavedModel twins of its models."""
    from tests.server.test_robustness import encode, generate, pipeline

    rng = random.Random(20261125)
    generated = [generate(rng) for _ in range(10_000)]
    statuses: list[int] = []
    order: list[tuple] = []
    for i in range(4):
        statuses += pipeline(server.port, [encode(*g) for g in generated[i::4]])
        order += generated[i::4]
    bad = [(s, g[0], g[1], g[3][:80]) for s, g in zip(statuses, order) if not 400 <= s < 500]
    assert not bad, f"{len(bad)} requests not answered 4xx, e.g. {bad[:5]}"
    assert server.proc.poll() is None
    status, _, body = server.request("POST", "/v1/models/sentiment:predict", b'{"instances": ["great movie"]}')
    assert status == 200 and orjson.loads(body)["predictions"][0]["label"] == "positive"


def test_sentiment_strings_over_grpc(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sentiment"
    text = request.inputs["text"]
    text.dtype = types_pb2.DT_STRING
    text.tensor_shape.dim.add().size = 2
    text.string_val.extend([b"great movie, loved it", "terrible service, never again".encode()])
    result = stub.Predict(request, RPC_TIMEOUT)
    assert list(result.outputs["label"].string_val) == [b"positive", b"negative"]
    assert [d.size for d in result.outputs["probabilities"].tensor_shape.dim] == [2, 2]
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "sentiment"
    request.model_spec.signature_name = "classification"
    request.input.example_list.examples.add().features.feature["text"].bytes_list.value.append(b"great movie")
    (row,) = stub.Classify(request, RPC_TIMEOUT).result.classifications
    assert [c.label for c in row.classes] == ["negative", "positive"]
    assert row.classes[1].score > row.classes[0].score
