"""TF Serving REST adapter: routes, predict in both formats, classify/regress, status, metadata, errors."""

from __future__ import annotations

import base64
import json

import pytest

from tests.server.conftest import call
from tests.server.fakes import FakeManager, Status, classifier, half_plus_two, multi
from tidal.server.app import ModelServerApp


@pytest.fixture
def app():
    manager = FakeManager([half_plus_two(123), half_plus_two(124), multi(), classifier()],
                          labels={("half_plus_two", "stable"): 123, ("half_plus_two", "canary"): 124},
                          loading={"broken": [Status(7, "END", "UNKNOWN", "failed to load model.onnx")]})
    return ModelServerApp(manager)


HPT = "/v1/models/half_plus_two"

# (name, method, path, body, status, expected JSON)
OK_CASES = [
    ("row", "POST", HPT + ":predict", {"instances": [1.0, 2.0, 5.0]}, {"predictions": [2.5, 3.0, 4.5]}),
    ("columnar", "POST", HPT + ":predict", {"inputs": [1.0, 2.0, 5.0]}, {"outputs": [2.5, 3.0, 4.5]}),
    ("columnar named", "POST", HPT + ":predict", {"inputs": {"x": [1.0]}}, {"outputs": [2.5]}),
    ("row named", "POST", HPT + ":predict", {"instances": [{"x": 1.0}, {"x": 3}]}, {"predictions": [2.5, 3.5]}),
    ("ints for floats", "POST", HPT + ":predict", {"instances": [1, 2]}, {"predictions": [2.5, 3.0]}),
    ("default signature by name", "POST", HPT + ":predict",
     {"signature_name": "serving_default", "instances": [2.0]}, {"predictions": [3.0]}),
    ("empty signature name is the default", "POST", HPT + ":predict",
     {"signature_name": "", "instances": [2.0]}, {"predictions": [3.0]}),
    ("specific version", "POST", HPT + "/versions/123:predict", {"instances": [0.0]}, {"predictions": [2.0]}),
    ("label", "POST", HPT + "/labels/stable:predict", {"instances": [0.0]}, {"predictions": [2.0]}),
    ("case-insensitive route", "POST", "/V1/Models/half_plus_two:PREDICT", {"instances": [4.0]},
     {"predictions": [4.0]}),
    ("extra keys ignored", "POST", HPT + ":predict", {"instances": [4.0], "foo": 1}, {"predictions": [4.0]}),
]


@pytest.mark.parametrize("name,method,path,body,expected", OK_CASES, ids=[c[0] for c in OK_CASES])
def test_ok(app, name, method, path, body, expected):
    r = call(app, method, path, body)
    assert r.status == 200, r.body
    assert r.content_type == b"application/json"
    assert r.json() == expected


ERROR_CASES = [
    ("unknown model", "POST", "/v1/models/nope:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "POST", HPT + "/versions/9:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Specific(half_plus_two, 9)"),
    ("unknown label", "POST", HPT + "/labels/gone:predict", {"instances": [1.0]}, 404,
     "Unrecognized servable version label: gone"),
    ("huge version", "POST", HPT + "/versions/99999999999999999999:predict", {"instances": [1.0]}, 400,
     "Failed to convert version: 99999999999999999999 to numeric."),
    ("no method", "POST", HPT, {"instances": [1.0]}, 400, "Malformed request: POST /v1/models/half_plus_two"),
    ("bad verb", "POST", HPT + ":explain", {"instances": [1.0]}, 400,
     "Malformed request: POST /v1/models/half_plus_two:explain"),
    ("GET predict", "GET", HPT + ":predict", b"", 400, "Malformed request: GET /v1/models/half_plus_two:predict"),
    ("PUT", "PUT", HPT, b"", 400, "Malformed request: PUT /v1/models/half_plus_two"),
    ("empty body", "POST", HPT + ":predict", b"", 400, "JSON Parse error: The document is empty"),
    ("not JSON", "POST", HPT + ":predict", b"{instances:", 400, "JSON Parse error:"),
    ("not an object", "POST", HPT + ":predict", b"[1,2]", 400, "JSON Value: [1,2] Is not object"),
    ("both keys", "POST", HPT + ":predict", {"instances": [1.0], "inputs": [1.0]}, 400,
     "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
    ("neither key", "POST", HPT + ":predict", {"foo": [1.0]}, 400, "Missing 'inputs' or 'instances' key"),
    ("instances not a list", "POST", HPT + ":predict", {"instances": 1.0}, 400,
     "Excepting 'instances' to be an list/array"),
    ("empty instances", "POST", HPT + ":predict", {"instances": []}, 400, "No values in 'instances' array"),
    ("signature not a string", "POST", HPT + ":predict", {"signature_name": 3, "instances": [1.0]}, 400,
     "'signature_name' key must be a string value."),
    ("unknown signature", "POST", HPT + ":predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature key "nope" not found.'),
    ("string for float", "POST", HPT + ":predict", {"instances": ["a"]}, 400,
     'JSON Value: "a" Type: String is not of expected type: float'),
    ("bool for float", "POST", HPT + ":predict", {"instances": [1.0, True]}, 400,
     "JSON Value: true Type: True is not of expected type: float"),
    ("null for float", "POST", HPT + ":predict", {"inputs": [1.0, None]}, 400,
     "JSON Value: null Type: Null is not of expected type: float"),
    ("lossy int", "POST", HPT + ":predict", {"inputs": [16777217]}, 400,
     "Cannot convert JSON value: 16777217 to float without loss of precision."),
    ("lossy double", "POST", HPT + ":predict", {"inputs": [1e39]}, 400,
     "to float without loss of precision."),
    ("ragged rows", "POST", HPT + ":predict", {"inputs": [[1.0, 2.0], [3.0]]}, 400,
     "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ("scalar among lists", "POST", HPT + ":predict", {"inputs": [[1.0], 2.0]}, 400,
     "JSON Value: 2.0 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ("wrong rank", "POST", HPT + ":predict", {"instances": [[1.0, 2.0]]}, 400, "input 'x'"),
    ("instances shapes differ", "POST", "/v1/models/multi:predict",
     {"instances": [{"a": [1, 2], "b": 1.0, "s_bytes": "x"}, {"a": [1, 2, 3], "b": 1.0, "s_bytes": "y"}]}, 400,
     "Failed to process element: 1 key: a of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3"),
    ("instance missing key", "POST", "/v1/models/multi:predict",
     {"instances": [{"a": [1, 2], "b": 1.0}]}, 400,
     "keys must be equal to: a,b,s_bytes"),
    ("instance unknown key", "POST", "/v1/models/multi:predict",
     {"instances": [{"a": [1, 2], "b": 1.0, "s_bytes": "x", "zz": 1}]}, 400,
     "Error: INVALID_ARGUMENT: JSON object: does not have named input: zz"),
    ("plain list for many inputs", "POST", "/v1/models/multi:predict", {"instances": [1, 2]}, 400,
     "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
     "tensorinfo_map"),
    ("plain inputs for many inputs", "POST", "/v1/models/multi:predict", {"inputs": [1, 2]}, 400,
     "inputs is a plain value/list, but expecting an object as multiple input tensors required"),
    ("missing named input", "POST", "/v1/models/multi:predict", {"inputs": {"a": [[1, 2]], "b": [1.0]}}, 400,
     "Missing named input: s_bytes in 'inputs' object."),
    ("float for int64", "POST", "/v1/models/multi:predict",
     {"inputs": {"a": [[1.5, 2]], "b": [1.0], "s_bytes": ["x"]}}, 400,
     "JSON Value: 1.5 Type: Number is not of expected type: int64"),
    ("bad base64", "POST", "/v1/models/multi:predict",
     {"inputs": {"a": [[1, 2]], "b": [1.0], "s_bytes": [{"b64": "!!"}]}}, 400, "Unable to base64 decode"),
    ("object for string", "POST", "/v1/models/multi:predict",
     {"inputs": {"a": [[1, 2]], "b": [1.0], "s_bytes": [{"x": "y"}]}}, 400,
     "not formatted correctly for base64 data"),
    ("status: no model name", "GET", "/v1/models", b"", 400, "Missing model name in request."),
    ("status: unknown model", "GET", "/v1/models/nope", b"", 404, "Could not find any versions of model nope"),
    ("status: unknown version", "GET", HPT + "/versions/5", b"", 404,
     "Could not find version 5 of model half_plus_two"),
    ("metadata: no model name", "GET", "/v1/models//metadata", b"", 400, "Malformed request"),
    ("metadata: unknown model", "GET", "/v1/models/nope/metadata", b"", 404,
     "Servable not found for request: Latest(nope)"),
    ("classify on a predict model", "POST", HPT + ":classify", {"examples": [{"x": 1.0}]}, 400,
     "Expected classification signature method_name to be tensorflow/serving/classify. "
     "Was: tensorflow/serving/predict"),
    ("regress on a predict model", "POST", HPT + ":regress", {"examples": [{"x": 1.0}]}, 400,
     "Expected regression signature method_name to be tensorflow/serving/regress."),
    ("classify without examples", "POST", "/v1/models/sentiment:classify", {"context": {}}, 400,
     "When method is classify, key 'examples' is expected and was not found"),
    ("classify empty examples", "POST", "/v1/models/sentiment:classify", {"examples": []}, 400,
     "'examples' value is an empty array"),
    ("classify examples not a list", "POST", "/v1/models/sentiment:classify", {"examples": {}}, 400,
     "Expecting 'examples' value to be an list/array"),
    ("classify example not an object", "POST", "/v1/models/sentiment:classify", {"examples": [1]}, 400,
     "Example must be JSON object but got JSON Number"),
    ("classify missing feature", "POST", "/v1/models/sentiment:classify", {"examples": [{"words": "x"}]}, 400,
     "Example 0 is missing feature: text"),
    ("classify null feature", "POST", "/v1/models/sentiment:classify", {"examples": [{"text": None}]}, 400,
     "Feature: text has element with unexpected JSON type: Null"),
]


@pytest.mark.parametrize("name,method,path,body,status,message", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors(app, name, method, path, body, status, message):
    r = call(app, method, path, body)
    assert r.status == status, r.body
    assert r.content_type == b"application/json"
    assert message in r.json()["error"]


def test_nan_and_infinity_in_and_out(app):
    r = call(app, "POST", HPT + ":predict", b'{"instances": [NaN, Infinity, -Infinity, 1.0]}')
    assert r.status == 200, r.body
    assert r.body.count(b"NaN") == 1 and b"-Infinity" in r.body
    out = json.loads(r.body)["predictions"]
    assert out[0] != out[0] and out[1] == float("inf") and out[2] == float("-inf") and out[3] == 2.5


def test_float32_written_shortest(app):
    r = call(app, "POST", HPT + ":predict", {"instances": [0.4]})
    assert r.body == b'{"predictions":[2.2]}'


def test_multi_row_and_columnar_with_bytes(app):
    payload = base64.b64encode(b"\x00\xffraw").decode()
    row = call(app, "POST", "/v1/models/multi:predict", {"instances": [
        {"a": [1, 2], "b": 0.5, "s_bytes": {"b64": payload}},
        {"a": [3, 4], "b": 1.5, "s_bytes": "hi"},
    ]})
    assert row.status == 200, row.body
    preds = row.json()["predictions"]
    assert preds[0] == {"sum": 3.5, "echo_bytes": {"b64": payload}, "upper": "\x00\ufffdRAW"}
    assert preds[1] == {"sum": 8.5, "echo_bytes": {"b64": base64.b64encode(b"hi").decode()}, "upper": "HI"}
    col = call(app, "POST", "/v1/models/multi:predict",
               {"inputs": {"a": [[1, 2], [3, 4]], "b": [0.5, 1.5], "s_bytes": [{"b64": payload}, "hi"]}})
    assert col.status == 200, col.body
    outs = col.json()["outputs"]
    assert outs["sum"] == [3.5, 8.5] and outs["upper"] == ["\x00\ufffdRAW", "HI"]
    assert outs["echo_bytes"][0] == {"b64": payload}


def test_single_b64_instance_is_a_value_not_an_object(app):
    # A one-input model takes {"b64": ...} elements as values.
    r = call(app, "POST", "/v1/models/sentiment:predict", {"instances": [{"b64": base64.b64encode(b"good").decode()}]})
    assert r.status == 200, r.body
    assert r.json()["predictions"][0]["label"] == "positive"


def test_classify_and_regress(app):
    r = call(app, "POST", "/v1/models/sentiment:classify",
             {"examples": [{"text": "good film"}, {"text": ["bad"]}]})
    assert r.status == 200, r.body
    results = r.json()["results"]
    assert [c[0] for c in results[0]] == ["negative", "positive"]
    assert results[0][1][1] == pytest.approx(0.9) and results[1][1][1] == pytest.approx(0.2)
    r = call(app, "POST", "/v1/models/sentiment:regress", {"context": {"text": "good"}, "examples": [{}, {}]})
    assert r.status == 200, r.body
    assert r.json()["results"] == pytest.approx([0.9, 0.9])


def test_status_and_labels(app):
    r = call(app, "GET", HPT)
    assert r.status == 200
    assert r.json() == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "124", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert [s["version"] for s in call(app, "GET", HPT + "/versions/124").json()["model_version_status"]] == ["124"]
    assert [s["version"] for s in call(app, "GET", HPT + "/labels/stable").json()["model_version_status"]] == ["123"]
    broken = call(app, "GET", "/v1/models/broken").json()["model_version_status"][0]
    assert broken["state"] == "END" and broken["status"]["error_message"] == "failed to load model.onnx"


def test_metadata(app):
    r = call(app, "GET", HPT + "/versions/123/metadata")
    assert r.status == 200
    doc = r.json()
    assert doc["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["x"]["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert call(app, "GET", HPT + "/metadata").json()["model_spec"]["version"] == "124"


def test_url_encoded_name_and_label(app):
    manager = FakeManager([half_plus_two(1, name="a b")], labels={("a b", "x y"): 1})
    app2 = ModelServerApp(manager)
    r = call(app2, "POST", "/v1/models/a%20b/labels/x%20y:predict", {"instances": [2.0]})
    assert r.status == 200 and r.json() == {"predictions": [3.0]}


def test_route_cache_is_bounded(app):
    for i in range(5000):
        call(app, "GET", f"/v1/models/m{i}/x/y")
    assert len(app.tfserving._routes) <= 4096


def test_cached_route_errors_do_not_grow(app):
    for _ in range(50):
        assert call(app, "POST", HPT, {"instances": [1.0]}).status == 400
    exc = app.tfserving._routes[("POST", HPT)]
    depth, tb = 0, exc.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth < 5
