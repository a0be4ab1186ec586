"""The Open Inference Protocol over gRPC end to end, with tritonclient's gRPC client and its own messages.

One `tidal model-server` process serves the ONNX half_plus_two (`hp`), the ONNX
sentiment classifier (`sentiment`, BYTES in) and, where TensorFlow is installed, the
half_plus_two SavedModel (`hp_tf`), on the gRPC port that also carries TF Serving's
services. KServe's own Python client is not used: the `kserve` package brings a model
server with it (fastapi, uvicorn, kubernetes, pandas, ...); its gRPC client speaks these
same messages.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import orjson
import pytest

grpc = pytest.importorskip("grpc")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (the dev extra)")

from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.server.procs import ServerProcess, free_port, start_config_server  # noqa: E402

pytestmark = pytest.mark.e2e
HAS_TF = importlib.util.find_spec("tensorflow") is not None
MODELS = ["hp", "hp_tf"] if HAS_TF else ["hp"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, request, half_plus_two_base, sentiment_base):
    root = tmp_path_factory.mktemp("grpc_v2")
    configs = [f"config {{ name: 'hp' base_path: '{half_plus_two_base}' }}",
               f"config {{ name: 'sentiment' base_path: '{sentiment_base}' }}"]
    if HAS_TF:
        tf_base = request.getfixturevalue("half_plus_two_tf_base")
        configs.append(f"config {{ name: 'hp_tf' base_path: '{tf_base}' }}")
    proc = start_config_server(root, "model_config_list {\n" + "\n".join(configs) + "\n}\n")
    yield proc
    assert proc.terminate() == 0, proc.log()


@pytest.fixture(scope="module")
def client(server):
    c = grpcclient.InferenceServerClient(server.grpc_address)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_address) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield service_pb2_grpc.GRPCInferenceServiceStub(ch)


# -- tritonclient ---------------------------------------------------------------------

def test_server_readiness_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "tidal" and "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("model", MODELS)
def test_model_readiness_and_metadata(client, model):
    assert client.is_model_ready(model)
    assert client.is_model_ready(model, "123")
    assert not client.is_model_ready(model, "7")
    meta = client.get_model_metadata(model, as_json=True)
    assert meta["name"] == model and meta["versions"] == ["123"]
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [("x", "FP32")]
    assert [t["name"] for t in meta["outputs"]] == ["y"]


@pytest.mark.parametrize("model", MODELS)
def test_infer_with_raw_contents(client, model):
    x = grpcclient.InferInput("x", [3], "FP32")
    x.set_data_from_numpy(np.array([1.0, 2.0, 5.0], dtype=np.float32))
    result = client.infer(model, [x], request_id="r1", outputs=[grpcclient.InferRequestedOutput("y")])
    np.testing.assert_allclose(result.as_numpy("y"), [2.5, 3.0, 4.5])
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (model, "123", "r1")
    assert len(response.raw_output_contents) == 1


def test_infer_bytes_with_raw_contents_matches_rest(client, server):
    texts = [b"I love this, it is wonderful", b"terrible, I hate it"]
    x = grpcclient.InferInput("text", [2], "BYTES")
    x.set_data_from_numpy(np.array(texts, dtype=object))
    result = client.infer("sentiment", [x])
    body = orjson.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                     "data": [t.decode() for t in texts]}]})
    status, _, rest = server.request("POST", "/v2/models/sentiment/infer", body)
    assert status == 200, rest
    for out in orjson.loads(rest)["outputs"]:
        got = result.as_numpy(out["name"])
        assert list(got.shape) == out["shape"]
        want = out["data"]
        flat = got.reshape(-1).tolist()
        if out["datatype"] == "BYTES":
            assert [v.decode() for v in flat] == want
        else:
            np.testing.assert_allclose(flat, want, rtol=1e-6)


# -- typed contents, with the protocol's messages ---------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_infer_with_typed_contents_answers_typed(stub, model):
    request = pb.ModelInferRequest(model_name=model, model_version="123", id="typed")
    t = request.inputs.add(name="x", datatype="FP32", shape=[2])
    t.contents.fp32_contents.extend([4.0, 6.0])
    response = stub.ModelInfer(request, timeout=10)
    assert not response.raw_output_contents
    (out,) = response.outputs
    assert out.name == "y" and out.datatype == "FP32" and list(out.contents.fp32_contents) == [4.0, 5.0]
    assert response.id == "typed"


def test_typed_bytes_contents(stub):
    request = pb.ModelInferRequest(model_name="sentiment")
    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"great fun")
    response = stub.ModelInfer(request, timeout=10)
    assert response.outputs and not response.raw_output_contents
    assert all(o.shape[0] == 1 for o in response.outputs)


# -- bad input: INVALID_ARGUMENT or NOT_FOUND with one clear line, never a crash ------------

def _infer(model="hp", version="", shape=(2,), datatype="FP32", fp32=None, raw=None, **kw):
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    t = request.inputs.add(name=kw.get("name", "x"), datatype=datatype, shape=list(shape))
    if fp32 is not None:
        t.contents.fp32_contents.extend(fp32)
    if "int" in kw:
        t.contents.int_contents.extend(kw["int"])
    for chunk in raw or []:
        request.raw_input_contents.append(chunk)
    for name in kw.get("outputs", []):
        request.outputs.add(name=name)
    return request


BAD = [
    ("shape disagrees with contents", _infer(shape=(3,), fp32=[1.0, 2.0]),
     grpc.StatusCode.INVALID_ARGUMENT, "shape [3] needs 3 elements, fp32_contents has 2"),
    ("raw contents of the wrong length", _infer(raw=[b"\0" * 7]),
     grpc.StatusCode.INVALID_ARGUMENT, "binary data of 7 bytes does not match shape [2] of FP32 (8 bytes)"),
    ("raw contents for fewer inputs", _infer(raw=[b"\0" * 8, b"\0" * 8]),
     grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents has 2 entries for 1 inputs"),
    ("contents and raw contents", _infer(fp32=[1.0, 2.0], raw=[b"\0" * 8]),
     grpc.StatusCode.INVALID_ARGUMENT, "give each input's data one way"),
    ("another datatype than the model's", _infer(datatype="INT32", int=[1, 2]),
     grpc.StatusCode.INVALID_ARGUMENT, "data-type is 'INT32', but model 'hp' expects 'FP32'"),
    ("an unknown datatype", _infer(datatype="FLOAT", fp32=[1.0, 2.0]),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown datatype 'FLOAT'"),
    ("values in the wrong field", _infer(int=[1, 2]),
     grpc.StatusCode.INVALID_ARGUMENT, "has its values in int_contents; FP32 values go in fp32_contents"),
    ("FP16 for an FP32 input", _infer(datatype="FP16", shape=(0,)),
     grpc.StatusCode.INVALID_ARGUMENT, "data-type is 'FP16', but model 'hp' expects 'FP32'"),
    ("an unknown input", _infer(name="z", fp32=[1.0, 2.0]),
     grpc.StatusCode.INVALID_ARGUMENT, ""),
    ("an unknown output", _infer(fp32=[1.0, 2.0], outputs=["nope"]),
     grpc.StatusCode.INVALID_ARGUMENT, "unexpected inference output 'nope' for model 'hp'"),
    ("no inputs", pb.ModelInferRequest(model_name="hp"),
     grpc.StatusCode.INVALID_ARGUMENT, "needs inputs"),
    ("an unknown model", _infer(model="nope", fp32=[1.0, 2.0]),
     grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    ("an unknown version", _infer(version="7", fp32=[1.0, 2.0]),
     grpc.StatusCode.NOT_FOUND, "Specific(hp, 7)"),
    ("a malformed version", _infer(version="v1", fp32=[1.0, 2.0]),
     grpc.StatusCode.NOT_FOUND, "Specific(hp, v1)"),
    ("version 0 (off by default, as in TF Serving)", _infer(version="0", fp32=[1.0, 2.0]),
     grpc.StatusCode.NOT_FOUND, "Specific(hp, 0)"),
]


@pytest.mark.parametrize("request_, code, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_infer_requests(stub, client, request_, code, message):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request_, timeout=10)
    assert err.value.code() == code, err.value.details()
    assert message in err.value.details()
    assert client.is_server_live()


@pytest.mark.parametrize("method", ["ModelInfer", "ModelMetadata", "ModelReady", "ServerLive"])
def test_bytes_that_are_no_message_are_invalid_argument(server, method):
    with grpc.insecure_channel(server.grpc_address) as ch:
        call = ch.unary_unary(f"/inference.GRPCInferenceService/{method}")  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff\xff", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Failed to parse the request message" in err.value.details()


def test_metadata_and_readiness_of_unknown_models(client):
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("hp", "x/y")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        client.is_model_ready("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_v2_grpc_requests_are_in_the_metrics(server, client):
    x = grpcclient.InferInput("x", [1], "FP32")
    x.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    client.infer("hp", [x])
    status, _, body = server.request("GET", "/metrics")
    assert status == 200
    assert b'api="grpc_v2_infer"' in body


@pytest.mark.parametrize("method, path, allow", [("TRACE", "/v2/", "GET"), ("TRACE", "/v2/health/live", "GET"),
                                                 ("DELETE", "/v2/health/ready", "GET"),
                                                 ("PROPFIND", "/v2/models/hp", "GET"),
                                                 ("PUT", "/v2/models/hp/infer", "POST")])
def test_rest_405_carries_allow_over_a_socket(server, method, path, allow):
    status, headers, _ = server.request(method, path)
    assert (status, headers.get("allow")) == (405, allow)


BLOCK_TENSORFLOW = '''\
import sys


class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_serving"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTensorFlow())
'''


def test_without_tensorflow_the_port_serves_v2_alone(tmp_path, half_plus_two_base):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    grpc_port = free_port()
    proc = ServerProcess(["--port", str(grpc_port), "--model_name", "hp", "--model_base_path", str(half_plus_two_base)],
                         tmp_path / "server.log", pythonpath=(str(tmp_path / "site"),)).start()
    try:
        c = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        x = grpcclient.InferInput("x", [2], "FP32")
        x.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
        np.testing.assert_allclose(c.infer("hp", [x]).as_numpy("y"), [2.5, 3.0])
        c.close()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary("/tensorflow.serving.PredictionService/Predict")(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert proc.terminate() == 0, proc.log()
    assert "serving the Open Inference Protocol's alone" in proc.log()
