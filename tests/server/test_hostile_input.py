"""Hostile input against a real model server: every client mistake is a 400 (or 413) in one line, never a 500.

One `tidal model-server` process serves the ONNX half_plus_two (`x`: FP32 [-1]) over REST and
gRPC. Each case is sent as a client would send it; the answer's status and message are
checked, and at the end the server's log must hold no traceback and no line about them.
"""

from __future__ import annotations

import orjson
import pytest

from tests.server.procs import ServerProcess, free_port

pytestmark = pytest.mark.e2e

HPT = "/v1/models/hpt:predict"
V2 = "/v2/models/hpt/infer"


def nested(depth: int, leaf: bytes = b"1.0") -> bytes:
    """`depth` levels of lists around one value."""
    return b"[" * depth + leaf + b"]" * depth


def v2(shape, data=None, datatype="FP32", **extra) -> bytes:
    tensor = {"name": "x", "datatype": datatype, "shape": shape, **extra}
    if data is not None:
        tensor["data"] = data
    return orjson.dumps({"inputs": [tensor]})


def v2_raw(shape, data: bytes, datatype="FP32") -> bytes:
    return (b'{"inputs": [{"name": "x", "datatype": "%s", "shape": %s, "data": %s}]}'
            % (datatype.encode(), orjson.dumps(shape), data))


# (name, path, body, headers, status, a part of the message)
REST_CASES = [
    # deep nesting: past the most dimensions a tensor has (32), and past what the parser takes (1024)
    ("instances 33 levels", HPT, b'{"instances": ' + nested(33) + b"}", {}, 400,
     "nested 33 levels deep: a tensor has at most 32 dimensions"),
    ("instances 65 levels", HPT, b'{"instances": ' + nested(65) + b"}", {}, 400, "nested 65 levels deep"),
    ("instances 1,000 levels", HPT, b'{"instances": ' + nested(1000) + b"}", {}, 400, "nested 1000 levels deep"),
    ("instances 1,000 levels of strings", HPT, b'{"instances": ' + nested(1000, b'"a"') + b"}", {}, 400,
     "nested 1000 levels deep"),
    ("inputs 100 levels", HPT, b'{"inputs": ' + nested(100) + b"}", {}, 400, "nested 100 levels deep"),
    ("named inputs 200 levels", HPT, b'{"inputs": {"x": ' + nested(200) + b"}}", {}, 400, "nested 200 levels deep"),
    ("row objects 70 levels", HPT, b'{"instances": [{"x": ' + nested(70) + b"}]}", {}, 400, "levels deep"),
    ("a document 1,000 levels deep", HPT, nested(1000), {}, 400, "Is not object"),
    ("a document 1,025 levels deep", HPT, nested(1025), {}, 400, "nested more than 1024 levels deep"),
    ("1,000,000 levels", HPT, b'{"instances": ' + nested(1_000_000) + b"}", {}, 400,
     "nested more than 1024 levels deep"),
    ("1,000,000 levels and a NaN", HPT, b'{"instances": ' + nested(1_000_000, b"NaN") + b"}", {}, 400,
     "nested more than 1024 levels deep"),
    ("deep inside a later element", HPT, b'{"instances": [1.0, ' + nested(500) + b"]}", {}, 400,
     "nested 500 levels deep"),
    ("classify examples 100 levels", "/v1/models/hpt:regress", b'{"examples": [{"x": ' + nested(100) + b"}]}", {},
     400, "unexpected JSON type: Array"),
    # V2 shapes
    ("V2 shape whose product overflows int64", V2, v2([1 << 40, 1 << 40], [1.0]), {}, 400,
     "shape [1099511627776, 1099511627776] needs 1208925819614629174706176 elements, data has 1"),
    ("V2 shape wrapping to the data's size", V2, v2([1 << 32, 1 << 32, 2], [1.0, 2.0]), {}, 400, "needs"),
    ("V2 shape disagreeing with the data", V2, v2([3], [1.0, 2.0]), {}, 400, "shape [3] needs 3 elements, data has 2"),
    ("V2 shape of 33 dimensions", V2, v2([1] * 33, [1.0]), {}, 400,
     "'shape' has 33 dimensions; a tensor has at most 32"),
    ("V2 shape of 65 dimensions", V2, v2([1] * 65, [1.0]), {}, 400, "'shape' has 65 dimensions"),
    ("V2 data 100 levels", V2, v2_raw([1], nested(100)), {}, 400, "nested 100 levels deep"),
    ("V2 data 1,000,000 levels", V2, v2_raw([1], nested(1_000_000)), {}, 400, "nested more than 1024 levels deep"),
    ("V2 binary shape overflowing int64", V2,
     orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1 << 32, 1 << 32],
                               "parameters": {"binary_data_size": 4}}]}) + b"\x00" * 4,
     "binary", 400, "does not match shape [4294967296, 4294967296]"),
    # V2 datatypes: refused as the protocol says, not converted
    ("V2 FP64 for an FP32 input", V2, v2([2], [1.0, 2.0], "FP64"), {}, 400,
     "inference input 'x' data-type is 'FP64', but model 'hpt' expects 'FP32'"),
    ("V2 INT32 for an FP32 input", V2, v2([1], [1], "INT32"), {}, 400, "data-type is 'INT32'"),
    ("V2 BYTES for an FP32 input", V2, v2([1], ["a"], "BYTES"), {}, 400, "data-type is 'BYTES'"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_base):
    root = tmp_path_factory.mktemp("hostile")
    grpc_port = free_port()
    proc = ServerProcess(["--port", str(grpc_port), "--model_name", "hpt", "--model_base_path",
                          str(half_plus_two_base)], root / "server.log").start()
    proc.grpc_address = f"127.0.0.1:{grpc_port}"
    yield proc
    assert proc.terminate() == 0, proc.log()


def _headers(kind, body: bytes) -> dict:
    if kind == "binary":
        return {"Inference-Header-Content-Length": str(len(body) - 4)}
    return {}


@pytest.mark.parametrize("name,path,body,headers,status,message", REST_CASES, ids=[c[0] for c in REST_CASES])
def test_rest_refuses_in_one_clear_line(server, name, path, body, headers, status, message):
    got, _, raw = server.request("POST", path, body, _headers(headers, body))
    doc = orjson.loads(raw)
    assert got == status, doc
    assert message in doc["error"], doc["error"]
    assert "\n" not in doc["error"] and len(doc["error"]) < 600


def _tensor(request, dims, values):
    from tensorflow.core.framework import types_pb2

    t = request.inputs["x"]
    t.dtype = types_pb2.DT_FLOAT
    for d in dims:
        t.tensor_shape.dim.add().size = d
    t.float_val.extend(values)
    return request


GRPC_CASES = [
    ("33 dimensions", [1] * 33, [1.0], "has 33 dimensions; a tensor has at most 32"),
    ("65 dimensions", [1] * 65, [1.0], "has 65 dimensions"),
    ("a shape whose product overflows int64", [1 << 40, 1 << 40], [1.0], "larger than any tensor Tidal accepts"),
    ("a shape disagreeing with the values", [2], [1.0, 2.0, 3.0], "has 3 values, more than its shape [2] holds"),
]


@pytest.mark.parametrize("name,dims,values,message", GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_grpc_refuses_with_invalid_argument(server, name, dims, values, message):
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed")
    grpc = pytest.importorskip("grpc")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hpt"
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(_tensor(request, dims, values), 10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert message in info.value.details()


def test_client_mistakes_leave_no_traceback_and_no_line_in_the_log(server):
    # After every case above (module order): the server answers, and its log says nothing of them.
    status, _, body = server.request("POST", HPT, b'{"instances": [2.0]}')
    assert (status, orjson.loads(body)) == (200, {"predictions": [3.0]})
    log = server.log()
    assert "Traceback" not in log
    assert "ERROR" not in log and "levels deep" not in log and "data-type" not in log, log[-2000:]
