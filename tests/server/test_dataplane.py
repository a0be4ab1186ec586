"""The data plane under the adapters: its rules as tables, and REST and gRPC giving the same answer or error class.

The parity table runs each request through the TF Serving REST adapter and through the
gRPC adapter (in-process, over the same fake manager) and compares what a client of
each would read. The real-process parity cases are in test_grpc.py.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from tests.server.conftest import call
from tests.server.fakes import FakeManager, FakeServable, Sig, Spec, classifier, half_plus_two
from tidal.errors import Code, FailedPrecondition, Internal, InvalidArgument, NotFound, Unavailable
from tidal.server import dataplane
from tidal.server.app import ModelServerApp
from tidal.server.dataplane import Method
from tidal.server.large import LargeBodies, PayloadTooLarge, decoded_size

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def _obj(rows):
    arr = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=object)
    arr[:] = rows
    return arr


# -- the classify/regress builders ------------------------------------------------------------

F32 = np.float32
CLASSIFY_CASES = [
    # (name, outputs, n, expected labels, expected scores, or the error it raises)
    ("classes and scores", {"classes": _obj([["a", "b"]]), "scores": np.array([[0.25, 0.75]], F32)}, 1,
     [["a", "b"]], [[0.25, 0.75]], None),
    ("scores only: no labels", {"scores": np.array([[3.0], [4.0]], F32)}, 2, None, [[3.0], [4.0]], None),
    ("classes only: no scores", {"classes": _obj([[b"x"]])}, 1, [["x"]], None, None),
    ("integer classes become text", {"classes": np.array([[1, 2]], np.int64)}, 1, [["1", "2"]], None, None),
    ("float64 scores are read as float32", {"scores": np.array([[0.1]], np.float64)}, 1, None, [[F32(0.1)]], None),
    ("neither classes nor scores", {"probabilities": np.array([[0.5]], F32)}, 1, None, None,
     "Expected classification signature outputs to contain classes or scores (it has {probabilities})"),
    ("1-D scores", {"scores": np.array([0.5, 0.5], F32)}, 2, None, None,
     "Expected scores Tensor shape: [batch_size num_classes] with batch_size 2 but got [2]"),
    ("batch differs from the examples", {"scores": np.array([[0.5]], F32)}, 2, None, None,
     "with batch_size 2 but got [1, 1]"),
    ("integer scores", {"scores": np.array([[1]], np.int32)}, 1, None, None, "Expected scores Tensor of DT_FLOAT"),
    ("classes and scores disagree in width", {"classes": _obj([["a"]]), "scores": np.array([[0.1, 0.9]], F32)}, 1,
     None, None, "Tensors class and score should match in dim[1]. Got 1 vs. 2"),
]


@pytest.mark.parametrize("name,outputs,n,labels,scores,error", CLASSIFY_CASES, ids=[c[0] for c in CLASSIFY_CASES])
def test_classifications(name, outputs, n, labels, scores, error):
    if error:
        with pytest.raises(InvalidArgument) as info:
            dataplane.classifications(outputs, n)
        assert error in info.value.message
        return
    found = dataplane.classifications(outputs, n)
    assert found.labels == labels
    if scores is None:
        assert found.scores is None
    else:
        assert found.scores.dtype == np.float32 and found.scores.tolist() == np.array(scores, F32).tolist()
    assert found.rows == n


REGRESS_CASES = [
    ("[n]", {"outputs": np.array([1.5, 2.5], F32)}, 2, [1.5, 2.5], None),
    ("[n, 1]", {"outputs": np.array([[1.5], [2.5]], F32)}, 2, [1.5, 2.5], None),
    ("one output of another name", {"y": np.array([7], np.int64)}, 1, [7.0], None),
    ("[n, 2]", {"outputs": np.array([[1, 2]], F32)}, 1, None, "either [batch_size] or [batch_size, 1] but got [1, 2]"),
    ("several outputs, none named outputs", {"a": np.zeros(1), "b": np.zeros(1)}, 1, None,
     "No output named 'outputs' (the signature has {a, b})"),
    ("strings", {"outputs": _obj([["a"]])}, 1, None, "Expected output Tensor of DT_FLOAT"),
]


@pytest.mark.parametrize("name,outputs,n,values,error", REGRESS_CASES, ids=[c[0] for c in REGRESS_CASES])
def test_regressions(name, outputs, n, values, error):
    if error:
        with pytest.raises(InvalidArgument) as info:
            dataplane.regressions(outputs, n)
        assert error in info.value.message
        return
    found = dataplane.regressions(outputs, n)
    assert found.dtype == np.float32 and found.tolist() == values


# -- signatures -------------------------------------------------------------------------------

def _sigs(**methods):
    return FakeServable("m", 1, {name: Sig(name, method, {}, {}) for name, method in methods.items()}, None)


PREDICT = "tensorflow/serving/predict"
SIGNATURE_CASES = [
    # (name, signatures, requested, method, expected signature or (error class, message))
    ("default for predict", dict(serving_default=PREDICT, other=PREDICT), "", Method.PREDICT, "serving_default"),
    ("named", dict(serving_default=PREDICT, other=PREDICT), "other", Method.PREDICT, "other"),
    ("the only signature under another name", dict(only=PREDICT), None, Method.PREDICT, "only"),
    ("classify falls back to 'classification'", dict(serving_default=PREDICT, classification=CLASSIFY), "",
     Method.CLASSIFY, "classification"),
    ("regress falls back to 'regression'", dict(serving_default=PREDICT, regression=REGRESS), "",
     Method.REGRESS, "regression"),
    ("a default of the method wins", dict(serving_default=CLASSIFY, classification=CLASSIFY), "",
     Method.CLASSIFY, "serving_default"),
    ("unknown for predict", dict(serving_default=PREDICT), "nope", Method.PREDICT,
     (FailedPrecondition, 'Serving signature key "nope" not found.')),
    ("unknown for classify", dict(serving_default=PREDICT), "nope", Method.CLASSIFY,
     (InvalidArgument, "No signature was found with the name: nope")),
    ("wrong method", dict(serving_default=PREDICT), "", Method.REGRESS,
     (InvalidArgument, "Expected regression signature method_name to be tensorflow/serving/regress. "
                       "Was: tensorflow/serving/predict")),
    ("predict runs a classify signature", dict(serving_default=PREDICT, c=CLASSIFY), "c", Method.PREDICT, "c"),
]


@pytest.mark.parametrize("name,sigs,requested,method,expected", SIGNATURE_CASES, ids=[c[0] for c in SIGNATURE_CASES])
def test_signature(name, sigs, requested, method, expected):
    servable = _sigs(**sigs)
    if isinstance(expected, tuple):
        cls, message = expected
        with pytest.raises(cls) as info:
            dataplane.signature(servable.signatures, requested, method)
        assert type(info.value) is cls and info.value.message == message
    else:
        assert dataplane.signature(servable.signatures, requested, method).name == expected


# -- the one error table ------------------------------------------------------------------------

FAULT_CASES = [
    # (exception, code, HTTP status, a server fault?)
    (InvalidArgument("x"), Code.INVALID_ARGUMENT, 400, False),
    (FailedPrecondition("x"), Code.FAILED_PRECONDITION, 400, False),
    (NotFound("x"), Code.NOT_FOUND, 404, False),
    (PayloadTooLarge("x"), Code.RESOURCE_EXHAUSTED, 413, False),
    (Unavailable("x"), Code.UNAVAILABLE, 503, False),
    (Internal("model run failed"), Code.INTERNAL, 500, False),
    (RecursionError(), Code.INVALID_ARGUMENT, 400, False),
    (MemoryError(), Code.RESOURCE_EXHAUSTED, 413, False),
    (ValueError("a bug"), Code.INTERNAL, 500, True),
    (KeyError("a bug"), Code.INTERNAL, 500, True),
]


@pytest.mark.parametrize("exc,code,status,server_fault", FAULT_CASES, ids=[type(c[0]).__name__ for c in FAULT_CASES])
def test_fault(exc, code, status, server_fault):
    f = dataplane.fault(exc)
    assert (f.code, f.http_status, f.server_fault) == (code, status, server_fault)
    if server_fault:
        assert f.message == dataplane.INTERNAL_MESSAGE  # nothing of the bug reaches the client


def test_report_logs_a_traceback_only_for_server_faults(caplog):
    caplog.set_level(logging.DEBUG, logger="tidal.server")
    for exc in (InvalidArgument("bad input"), NotFound("no model"), PayloadTooLarge("too big")):
        try:
            raise exc
        except Exception as e:
            dataplane.report(e, "predict", "m")
    assert len(caplog.records) == 3
    assert all(r.exc_info is None and r.levelno == logging.DEBUG for r in caplog.records)
    caplog.clear()
    try:
        raise ValueError("a bug")
    except ValueError as e:
        dataplane.report(e, "predict", "m")
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


# -- the memory estimate ---------------------------------------------------------------------------

def test_decoded_size_grows_with_what_the_json_becomes():
    numbers = b"[" + b",".join([b"1.5"] * 1000) + b"]"
    strings = b"[" + b",".join([b'"ab"'] * 1000) + b"]"
    one_string = b'["' + b"a" * 5000 + b'"]'
    # 1000 values and the list: 24 each beside their objects, then 32 a float, 49 a string, 56 the list
    assert decoded_size(numbers) == len(numbers) + 1001 * 24 + 1000 * 32 + 56
    assert decoded_size(strings) == len(strings) + 1001 * 24 + 1000 * 49 + 56
    assert decoded_size(one_string) == len(one_string) + 2 * 24 + 49 + 56


def test_admit_refuses_over_the_budget_in_one_line():
    large = LargeBodies(offload_bytes=10, memory_budget=100_000)
    large.admit(b"[1,2,3]")
    with pytest.raises(PayloadTooLarge) as info:
        large.admit(b"[" + b",".join([b"1"] * 5000) + b"]")
    assert info.value.http_status == 413 and "\n" not in info.value.message
    assert "more than the per-request budget of 0.1 MiB" in info.value.message


def _texts(items, shape=None):
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr.reshape(shape or (len(items),))


@pytest.mark.parametrize("arr", [
    _texts(["ab", b"\x00\xff", "", "\u00e9t\u00e9", "\ud800"]),  # text, raw bytes, empty, UTF-8, a lone surrogate
    _texts(["a", b"b", "c", b"d"], (2, 2)),
    _texts([]),
    _texts([str(i) if i % 3 else bytes([i % 256]) for i in range((1 << 16) * 2 + 3)]),  # several slices
], ids=["kinds", "2-D", "empty", "long"])
def test_strings_cross_the_process_boundary_packed(arr):
    import pickle

    from tidal.server.large import PackedStrings

    back = pickle.loads(pickle.dumps(PackedStrings(arr))).unpack()
    assert back.shape == arr.shape and back.dtype == object
    assert [(type(v), v) for v in back.reshape(-1).tolist()] == [(type(v), v) for v in arr.reshape(-1).tolist()]


def child_decode(kind: str):
    """A stand-in decoder for the decoding child: answers, or fails in each way a decoder can."""
    if kind == "ok":
        return {"x": np.arange(4, dtype=np.float32), "s": _texts(["a", b"b"])}
    if kind == "invalid":
        raise InvalidArgument("bad tensor")
    if kind == "not found":
        raise NotFound("no such model")
    if kind == "too large":
        raise PayloadTooLarge("over the budget")
    raise KeyError("a bug")


def test_decoding_in_the_child_keeps_the_error_class():
    large = LargeBodies()

    async def outcomes():
        out = []
        for kind in ("ok", "invalid", "not found", "too large", "bug", "ok"):
            try:
                out.append(await large.decode(child_decode, kind))
            except Exception as exc:
                out.append(exc)
        return out

    try:
        ok, invalid, not_found, too_large, bug, again = asyncio.run(outcomes())
    finally:
        large.close()
    assert ok["x"].tolist() == [0.0, 1.0, 2.0, 3.0] and again["x"].dtype == np.float32
    assert ok["s"].dtype == object and ok["s"].tolist() == ["a", b"b"]
    assert (dataplane.fault(invalid).code, invalid.message) == (Code.INVALID_ARGUMENT, "bad tensor")
    assert dataplane.fault(not_found).http_status == 404
    assert isinstance(too_large, PayloadTooLarge) and dataplane.fault(too_large).http_status == 413
    assert dataplane.fault(bug) == dataplane.fault(Internal("Internal: decoding the request failed; see the server log"))


# -- REST and gRPC over the same data plane -----------------------------------------------------------

def quirky():
    """A model whose classify signature answers 1-D scores: TF Serving's classifier refuses those."""
    sig = Sig("classification", CLASSIFY, {"x": Spec("x", "FP32", (-1,))}, {"scores": Spec("scores", "FP32", (-1,))})
    reg = Sig("regression", REGRESS, {"x": Spec("x", "FP32", (-1,))}, {"outputs": Spec("outputs", "FP32", (-1, 2))})
    return FakeServable("quirky", 1, {"classification": sig, "regression": reg},
                        lambda s, i: {"scores": i["x"]} if s == "classification"
                        else {"outputs": np.stack([i["x"], i["x"]], axis=1)})


def numeric_classifier():
    """classes and scores by name, over a float feature."""
    sig = Sig("classification", CLASSIFY, {"x": Spec("x", "FP32", (-1,))},
              {"classes": Spec("classes", "BYTES", (-1, 2)), "scores": Spec("scores", "FP32", (-1, 2))})

    def fn(s, i):
        x = i["x"]
        classes = np.empty((len(x), 2), dtype=object)
        classes[:] = ["low", "high"]
        return {"classes": classes, "scores": np.stack([1 - x / 10, x / 10], axis=1).astype(np.float32)}
    return FakeServable("numeric", 1, {"classification": sig}, fn)


@pytest.fixture(scope="module")
def planes():
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed")
    from tidal.server.grpc_server import GrpcServer
    from tidal.server.metrics import ServerMetrics

    manager = FakeManager([half_plus_two(123), classifier(), quirky(), numeric_classifier()],
                          labels={("half_plus_two", "stable"): 123})
    app = ModelServerApp(manager)
    grpc_server = GrpcServer(manager, ServerMetrics(), "127.0.0.1", 0, plane=app.plane)
    return app, grpc_server


def _grpc(grpc_server, api: str, request):
    """What a gRPC client reads: ("ok", response) or ("error", code, message)."""
    from tidal.server.grpc_api import RpcFault

    handler = {"predict": grpc_server.adapter.predict, "classify": grpc_server.adapter.classify,
               "regress": grpc_server.adapter.regress}[api]
    try:
        return ("ok", asyncio.run(grpc_server._runner.call(api, request, handler)))
    except RpcFault as exc:
        return ("error", exc.fault.code, exc.fault.message)


def _spec(request, model, version=None, label=None, signature=""):
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    if signature:
        request.model_spec.signature_name = signature
    return request


def _examples(pb, api, model, examples, signature="", version=None, label=None):
    cls = pb.classification_pb2.ClassificationRequest if api == "classify" else pb.regression_pb2.RegressionRequest
    request = _spec(cls(), model, version, label, signature)
    for ex in examples:
        features = request.input.example_list.examples.add().features.feature
        for key, value in ex.items():
            if isinstance(value, str):
                features[key].bytes_list.value.append(value.encode())
            else:
                features[key].float_list.value.append(value)
    return request


def _predict(pb, model, xs, version=None, label=None, signature=""):
    request = _spec(pb.predict_pb2.PredictRequest(), model, version, label, signature)
    tensor = request.inputs["x"]
    tensor.dtype = 1  # DT_FLOAT
    tensor.tensor_shape.dim.add().size = len(xs)
    tensor.float_val.extend(xs)
    return request


# (name, REST path suffix, REST body, api, gRPC request builder)
PARITY = [
    ("predict", "half_plus_two:predict", {"instances": [1.0, 3.0]}, "predict",
     lambda pb: _predict(pb, "half_plus_two", [1.0, 3.0])),
    ("predict, a label", "half_plus_two/labels/stable:predict", {"instances": [2.0]}, "predict",
     lambda pb: _predict(pb, "half_plus_two", [2.0], label="stable")),
    ("predict, unknown model", "nope:predict", {"instances": [1.0]}, "predict", lambda pb: _predict(pb, "nope", [1.0])),
    ("predict, unknown version", "half_plus_two/versions/9:predict", {"instances": [1.0]}, "predict",
     lambda pb: _predict(pb, "half_plus_two", [1.0], version=9)),
    ("predict, unknown signature", "half_plus_two:predict", {"signature_name": "nope", "instances": [1.0]}, "predict",
     lambda pb: _predict(pb, "half_plus_two", [1.0], signature="nope")),
    ("classify, text classifier", "sentiment:classify", {"examples": [{"text": "good"}, {"text": "bad"}]}, "classify",
     lambda pb: _examples(pb, "classify", "sentiment", [{"text": "good"}, {"text": "bad"}])),
    ("classify, numeric classifier", "numeric:classify", {"examples": [{"x": 2.0}, {"x": 7.5}]}, "classify",
     lambda pb: _examples(pb, "classify", "numeric", [{"x": 2.0}, {"x": 7.5}])),
    ("classify, 1-D scores (accepted by REST alone before)", "quirky:classify", {"examples": [{"x": 0.5}]},
     "classify", lambda pb: _examples(pb, "classify", "quirky", [{"x": 0.5}])),
    ("regress, [n, 2] outputs", "quirky:regress", {"examples": [{"x": 0.5}]}, "regress",
     lambda pb: _examples(pb, "regress", "quirky", [{"x": 0.5}])),
    ("regress", "sentiment:regress", {"examples": [{"text": "good"}, {"text": "meh"}]}, "regress",
     lambda pb: _examples(pb, "regress", "sentiment", [{"text": "good"}, {"text": "meh"}])),
    ("classify on a predict-only model", "half_plus_two:classify", {"examples": [{"x": 1.0}]}, "classify",
     lambda pb: _examples(pb, "classify", "half_plus_two", [{"x": 1.0}])),
    ("regress with a classify signature", "sentiment:regress",
     {"signature_name": "classification", "examples": [{"text": "a"}]}, "regress",
     lambda pb: _examples(pb, "regress", "sentiment", [{"text": "a"}], signature="classification")),
    ("classify, unknown signature", "sentiment:classify", {"signature_name": "nope", "examples": [{"text": "a"}]},
     "classify", lambda pb: _examples(pb, "classify", "sentiment", [{"text": "a"}], signature="nope")),
    ("classify, a missing feature", "sentiment:classify", {"examples": [{"words": "a"}]}, "classify",
     lambda pb: _examples(pb, "classify", "sentiment", [{"words": "a"}])),
]


def _rest_answer(api: str, doc: dict):
    """The REST answer as the same numbers a gRPC client reads."""
    if api == "predict":
        return doc["predictions"]
    if api == "classify":
        return [[(label, np.float32(score)) for label, score in row] for row in doc["results"]]
    return [np.float32(v) for v in doc["results"]]


def _grpc_answer(api: str, response):
    if api == "predict":
        (tensor,) = response.outputs.values()
        return list(tensor.float_val)
    if api == "classify":
        return [[(c.label, np.float32(c.score)) for c in row.classes] for row in response.result.classifications]
    return [np.float32(r.value) for r in response.result.regressions]


@pytest.mark.parametrize("name,path,body,api,make", PARITY, ids=[c[0] for c in PARITY])
def test_rest_and_grpc_agree(planes, name, path, body, api, make):
    from tidal.errors import http_status
    from tidal.server import tfs_protos

    app, grpc_server = planes
    rest = call(app, "POST", "/v1/models/" + path, body)
    grpc_out = _grpc(grpc_server, api, make(tfs_protos.load()))
    if rest.status == 200:
        assert grpc_out[0] == "ok", (rest.json(), grpc_out)
        assert _rest_answer(api, rest.json()) == _grpc_answer(api, grpc_out[1])
    else:
        assert grpc_out[0] == "error", (rest.status, rest.json(), grpc_out)
        _, code, message = grpc_out
        # The same error class: gRPC's code is the one that maps to REST's status, with the same message.
        assert http_status(code) == rest.status, (code, rest.status)
        assert rest.json()["error"] == message


def test_the_quirky_classify_output_is_refused_by_both(planes):
    app, _ = planes
    r = call(app, "POST", "/v1/models/quirky:classify", {"examples": [{"x": 0.5}]})
    assert r.status == 400
    assert "Expected scores Tensor shape: [batch_size num_classes]" in r.json()["error"]
