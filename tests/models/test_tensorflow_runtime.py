"""TensorFlow SavedModel runtime: signatures and metadata, TF Serving's half_plus_two REST cases, version policies."""

from __future__ import annotations

import asyncio
import base64
import inspect
import shutil

import numpy as np
import orjson
import pytest

tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install tidal[tensorflow])")

from tidal.errors import FailedPrecondition, InvalidArgument  # noqa: E402
from tidal.http.server import Request  # noqa: E402
from tidal.models.config import ModelConfig, RuntimeOptions  # noqa: E402
from tidal.models.manager import ModelManager  # noqa: E402
from tidal.models.runtimes import load_runtime  # noqa: E402
from tidal.models.signatures import CLASSIFY, PREDICT, REGRESS  # noqa: E402
from tidal.server.app import ModelServerApp  # noqa: E402


def example(**features) -> bytes:
    feature = {}
    for name, value in features.items():
        if isinstance(value, float):
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        elif isinstance(value, int):
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def hpt_base(half_plus_two_tf_base):
    return half_plus_two_tf_base


@pytest.fixture(scope="module")
def runtime(hpt_base):
    rt = load_runtime(str(hpt_base / "123"), RuntimeOptions(intra_op_threads=1))
    yield rt
    rt.close()


class Server:
    """A model manager and the REST app over it, on one event loop for the whole module."""

    def __init__(self, configs) -> None:
        self.loop = asyncio.new_event_loop()
        self.manager = ModelManager(configs, poll_seconds=0)
        self.loop.run_until_complete(self.manager.start())
        self.app = ModelServerApp(self.manager)

    def call(self, method: str, path: str, body=None):
        req = Request(method, path.encode(), {}, b"" if body is None else orjson.dumps(body), "test", None)

        async def handle():  # the app starts handlers eagerly, so it is called on the running loop
            resp = self.app(req)
            return (await resp) if inspect.isawaitable(resp) else resp

        resp = self.loop.run_until_complete(handle())
        return resp.status, orjson.loads(resp.body)

    def close(self) -> None:
        self.loop.run_until_complete(self.manager.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, hpt_base):
    base = tmp_path_factory.mktemp("hpt_two_versions")
    shutil.copytree(hpt_base / "123", base / "123")
    shutil.copytree(hpt_base / "123", base / "124")
    srv = Server([ModelConfig(name="half_plus_two", base_path=str(base), version_policy="all",
                              version_labels={"stable": 123, "canary": 124})])
    yield srv
    srv.close()


# -- the runtime itself ---------------------------------------------------------------------

def test_signatures_and_methods_come_from_the_saved_model(runtime):
    assert runtime.platform == "tensorflow"
    sigs = runtime.signatures
    assert sorted(sigs) == ["classify_x_to_y", "regress_x_to_y", "regress_x_to_y2", "serving_default"]
    default = sigs["serving_default"]
    assert default.method == PREDICT and not default.serialized_examples
    assert {n: (s.datatype, s.shape) for n, s in default.inputs.items()} == {"x": ("FP32", (-1,))}
    assert {n: (s.datatype, s.shape) for n, s in default.outputs.items()} == {"y": ("FP32", (-1,))}
    classify = sigs["classify_x_to_y"]
    assert classify.method == CLASSIFY and classify.serialized_examples
    assert {n: (s.datatype, s.shape) for n, s in classify.inputs.items()} == {"inputs": ("BYTES", (-1,))}
    assert {n: (s.datatype, s.shape) for n, s in classify.outputs.items()} == {"scores": ("FP32", (-1, 1))}
    assert sigs["regress_x_to_y"].method == REGRESS and sigs["regress_x_to_y2"].method == REGRESS


def test_run_predict_and_examples(runtime):
    y = runtime.run("serving_default", {"x": np.array([1.0, 2.0, 5.0], np.float32)})["y"]
    np.testing.assert_allclose(y, [2.5, 3.0, 4.5])
    batch = np.array([example(x=2.0), example(x=4.0)], dtype=object)
    np.testing.assert_allclose(runtime.run("classify_x_to_y", {"inputs": batch})["scores"], [[3.0], [4.0]])
    np.testing.assert_allclose(runtime.run("regress_x_to_y2", {"inputs": batch})["outputs"], [[4.0], [5.0]])


def test_run_errors_are_invalid_argument(runtime):
    with pytest.raises(InvalidArgument, match="Could not parse example input"):
        runtime.run("classify_x_to_y", {"inputs": np.array([b"not a proto"], dtype=object)})
    with pytest.raises(InvalidArgument, match="Data types don't match"):
        runtime.run("regress_x_to_y", {"inputs": np.array([example(x=3)], dtype=object)})
    with pytest.raises(InvalidArgument, match="unknown signature"):
        runtime.run("nope", {"x": np.array([1.0], np.float32)})


def test_thread_settings_are_applied_once_per_process():
    from tidal.models.runtimes import tensorflow as tf_runtime

    in_force = tf_runtime.configure_threads(RuntimeOptions(intra_op_threads=1))
    assert in_force == (tf.config.threading.get_intra_op_parallelism_threads(),
                        tf.config.threading.get_inter_op_parallelism_threads())
    # A second model asking for other settings gets the process's (and a warning), not an error.
    assert tf_runtime.configure_threads(RuntimeOptions(intra_op_threads=7, inter_op_threads=3)) == in_force


def test_unservable_signatures_are_skipped_and_a_model_with_none_is_refused(tmp_path):
    class Mixed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
        def any_rank(self, x):
            return {"y": x + 1.0}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int64)])
        def shaped(self, x):
            return {"y": x * 2}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.complex64)])
        def complex_input(self, x):
            return {"y": tf.math.real(x)}

    module = Mixed()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={
        "any_rank": module.any_rank, "shaped": module.shaped, "complex_input": module.complex_input})
    rt = load_runtime(str(tmp_path / "1"), RuntimeOptions())
    assert list(rt.signatures) == ["any_rank", "shaped"]
    assert rt.signatures["shaped"].inputs["x"].shape == (-1, 2)
    np.testing.assert_array_equal(rt.run("shaped", {"x": np.array([[1, 2]], np.int64)})["y"], [[2, 4]])
    # An unknown rank is served: the request's tensor gives the shape, as in TF Serving.
    assert not rt.signatures["any_rank"].inputs["x"].rank_known
    np.testing.assert_array_equal(rt.run("any_rank", {"x": np.ones((2, 2, 2), np.float32)})["y"],
                                  np.full((2, 2, 2), 2.0))

    tf.saved_model.save(module, str(tmp_path / "2"), signatures={"complex_input": module.complex_input})
    with pytest.raises(FailedPrecondition, match="no signature Tidal can serve"):
        load_runtime(str(tmp_path / "2"), RuntimeOptions())


def test_a_corrupt_saved_model_is_a_load_error(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"\x08\x01garbage")
    with pytest.raises(FailedPrecondition, match="SavedModel"):
        load_runtime(str(tmp_path / "1"), RuntimeOptions())


# -- TF Serving's REST cases for half_plus_two (http_rest_api_handler_test.cc) ---------------

HPT = "/v1/models/half_plus_two"
OK_CASES = [
    ("predict latest", HPT + ":predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    ("predict version", HPT + "/versions/123:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    ("predict label", HPT + "/labels/stable:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    ("predict named signature", HPT + "/versions/123:predict",
     {"signature_name": "serving_default", "instances": [3.0, 4.0]}, {"predictions": [3.5, 4.0]}),
    ("predict columnar", HPT + ":predict", {"inputs": {"x": [1.0, 2.0, 5.0]}}, {"outputs": [2.5, 3.0, 4.5]}),
    ("classify", HPT + ":classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
     {"results": [[["", 3.0]]]}),
    ("regress", HPT + ":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]},
     {"results": [3.0, 4.0]}),
    ("regress other signature", HPT + ":regress", {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}]},
     {"results": [4.0]}),
    ("regress with context", HPT + "/versions/124:regress",
     {"signature_name": "regress_x_to_y", "context": {"x": 1.0}, "examples": [{}, {"x": 4.0}]},
     {"results": [2.5, 4.0]}),
    ("feature as a list", HPT + ":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": [6.0]}]},
     {"results": [5.0]}),
    ("predict on a classify signature with b64 examples", HPT + ":predict",
     {"signature_name": "classify_x_to_y",
      "instances": [{"b64": base64.b64encode(example(x=2.0)).decode()}]}, {"predictions": [[3.0]]}),
]


@pytest.mark.parametrize("name,path,body,expected", OK_CASES, ids=[c[0] for c in OK_CASES])
def test_rest_ok(server, name, path, body, expected):
    status, doc = server.call("POST", path, body)
    assert status == 200, doc
    assert doc == expected


ERROR_CASES = [
    ("wrong type", HPT + ":predict", {"instances": ["x", "y"]}, 400, "not of expected type: float"),
    ("unknown label", HPT + "/labels/Version_Nonexistent:predict", {"instances": [1.0]}, 400,
     "Unrecognized servable version label"),
    ("unknown version", HPT + "/versions/99:predict", {"instances": [1.0]}, 404, "Servable not found"),
    ("unknown model", "/v1/models/foo:predict", {"instances": [1.0]}, 404, "Servable not found"),
    ("signature_name not a string", HPT + ":predict", {"signature_name": 100}, 400,
     "'signature_name' key must be a string value."),
    ("unknown signature", HPT + ":predict", {"signature_name": "nope", "instances": [1.0]}, 400, "nope"),
    ("classify on the predict signature", HPT + ":classify", {"examples": [{"x": 2.0}]}, 400,
     "Expected classification signature method_name to be tensorflow/serving/classify"),
    ("regress on a classify signature", HPT + ":regress",
     {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, 400, "regression signature method_name"),
    ("int feature for a float", HPT + ":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 1}]},
     400, "Data types don't match"),
    ("missing feature", HPT + ":regress", {"signature_name": "regress_x_to_y", "examples": [{"y": 1.0}]},
     400, "Feature: x (data type: float) is required"),
    ("mixed feature kinds", HPT + ":regress",
     {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]}, 400,
     "Unexpected element type in feature: x expecting type: float"),
    ("null feature", HPT + ":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": None}]}, 400,
     "Feature: x has element with unexpected JSON type: Null"),
    ("example not an object", HPT + ":regress", {"signature_name": "regress_x_to_y", "examples": [1.0]}, 400,
     "Example must be JSON object but got JSON Number"),
    ("no examples", HPT + ":classify", {"signature_name": "classify_x_to_y"}, 400,
     "When method is classify, key 'examples' is expected"),
    ("empty examples", HPT + ":regress", {"signature_name": "regress_x_to_y", "examples": []}, 400,
     "'examples' value is an empty array"),
    ("bad b64 example", HPT + ":predict", {"signature_name": "classify_x_to_y", "instances": [{"b64": "Zm9v"}]},
     400, "Could not parse example input"),
]


@pytest.mark.parametrize("name,path,body,status,message", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_rest_errors(server, name, path, body, status, message):
    got, doc = server.call("POST", path, body)
    assert got == status, doc
    assert message in doc["error"]


def test_rest_status_and_metadata(server):
    status, doc = server.call("GET", HPT)
    assert status == 200
    assert sorted(doc["model_version_status"], key=lambda s: s["version"]) == [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in ("123", "124")]
    status, doc = server.call("GET", HPT + "/versions/123/metadata")
    assert status == 200, doc
    assert doc["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert sorted(sigs) == ["classify_x_to_y", "regress_x_to_y", "regress_x_to_y2", "serving_default"]
    assert sigs["serving_default"]["method_name"] == PREDICT
    assert sigs["classify_x_to_y"]["method_name"] == CLASSIFY
    assert sigs["regress_x_to_y"]["method_name"] == REGRESS
    assert sigs["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sigs["serving_default"]["inputs"]["x"]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert sigs["classify_x_to_y"]["inputs"]["inputs"]["dtype"] == "DT_STRING"
    assert sigs["classify_x_to_y"]["outputs"]["scores"]["tensor_shape"]["dim"][1]["size"] == "1"


# -- version policies over SavedModel versions ----------------------------------------------

@pytest.mark.parametrize("policy,served", [("latest:2", [2, 3]), ("specific:1,3", [1, 3]), ("all", [1, 2, 3]),
                                           ("latest", [3])])
def test_version_policies(tmp_path_factory, hpt_base, policy, served):
    base = tmp_path_factory.mktemp("versions")
    for v in (1, 2, 3):
        shutil.copytree(hpt_base / "123", base / str(v))
    srv = Server([ModelConfig(name="m", base_path=str(base), version_policy=policy)])
    try:
        statuses = srv.manager.status("m")
        assert sorted(s.version for s in statuses if s.state.value == "AVAILABLE") == served
        for v in served:
            status, doc = srv.call("POST", f"/v1/models/m/versions/{v}:predict", {"instances": [2.0]})
            assert (status, doc) == (200, {"predictions": [3.0]})
        status, doc = srv.call("POST", "/v1/models/m:predict", {"instances": [2.0]})
        assert status == 200
    finally:
        srv.close()


def test_a_broken_version_is_reported_and_the_previous_one_keeps_serving(tmp_path, hpt_base):
    shutil.copytree(hpt_base / "123", tmp_path / "1")
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "saved_model.pb").write_bytes(b"\x08\x01garbage")
    srv = Server([ModelConfig(name="m", base_path=str(tmp_path), version_policy="all")])
    try:
        by_version = {s.version: s for s in srv.manager.status("m")}
        assert by_version[1].state.value == "AVAILABLE"
        assert by_version[2].error_code != "OK" and "SavedModel" in by_version[2].error_message
        assert srv.call("POST", "/v1/models/m:predict", {"instances": [2.0]}) == (200, {"predictions": [3.0]})
    finally:
        srv.close()
