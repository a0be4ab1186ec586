"""JSON <-> numpy codecs: the fast path agrees with the exact one; encoding keeps TF Serving's forms."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidal.errors import InvalidArgument
from tidal.server import tensors

DTYPES = [tensors.BY_V2[n] for n in ("FP32", "FP64", "FP16", "INT64", "INT32", "INT8", "UINT8", "UINT64", "BOOL")]

scalars = st.one_of(
    st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.booleans(), st.none(), st.text(max_size=3))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=20)


def _outcome(fn):
    try:
        return ("ok", fn())
    except InvalidArgument:
        return ("error", None)


@settings(max_examples=400, deadline=None)
@given(value=values, dt=st.sampled_from(DTYPES), integral=st.booleans())
def test_fast_path_agrees_with_exact_path(value, dt, integral):
    body = orjson.dumps(value)
    fast = _outcome(lambda: tensors.json_to_tensor(value, dt, body, integral_floats=integral))
    exact = _outcome(lambda: tensors.exact_tensor(value, dt, integral_floats=integral))
    assert fast[0] == exact[0], (value, dt.v2)
    if fast[0] == "ok":
        assert fast[1].dtype == exact[1].dtype and fast[1].shape == exact[1].shape
        np.testing.assert_array_equal(fast[1], exact[1])


CASES = [
    # name, value, datatype, integral floats, expected array or error substring
    ("floats", [[1.0, 2.5], [3, 4]], "FP32", False, np.array([[1, 2.5], [3, 4]], np.float32)),
    ("scalar", 7, "INT64", False, np.array(7, np.int64)),
    ("empty", [[]], "INT32", False, np.zeros((1, 0), np.int32)),
    ("integral floats for ints (V2)", [0.0, 1.0], "INT64", True, np.array([0, 1], np.int64)),
    ("integral floats refused (TF)", [0.0, 1.0], "INT64", False, "is not of expected type: int64"),
    ("fraction for ints", [0.5], "INT64", True, "JSON Value: 0.5 Type: Number is not of expected type: int64"),
    ("out of range int8", [300], "INT8", False, "JSON Value: 300 Type: Number is not of expected type: int8"),
    ("negative uint", [-1], "UINT64", False, "is not of expected type: uint64"),
    ("bools", [True, False], "BOOL", False, np.array([True, False])),
    ("number for bool", [1], "BOOL", False, "JSON Value: 1 Type: Number is not of expected type: bool"),
    ("strings", ["a", "b"], "BYTES", False, np.array(["a", "b"], dtype=object)),
    ("b64", [{"b64": "aGk="}], "BYTES", False, np.array([b"hi"], dtype=object)),
    ("number for string", [1], "BYTES", False, "JSON Value: 1 Type: Number is not of expected type: string"),
    ("lossy float16", [70000.0], "FP16", False, "to half without loss of precision"),
    ("too deep", [[1.0], [[2.0]]], "FP32", False, "Encountered list at unexpected level: 2 expected < 2"),
]


@pytest.mark.parametrize("name,value,dt,integral,expected", CASES, ids=[c[0] for c in CASES])
def test_decode_cases(name, value, dt, integral, expected):
    body = orjson.dumps(value)
    if isinstance(expected, str):
        with pytest.raises(InvalidArgument, match=expected.replace("(", r"\(").replace("[", r"\[")):
            tensors.json_to_tensor(value, tensors.BY_V2[dt], body, integral_floats=integral)
    else:
        got = tensors.json_to_tensor(value, tensors.BY_V2[dt], body, integral_floats=integral)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_parse_json_errors_and_constants():
    with pytest.raises(InvalidArgument, match="The document is empty"):
        tensors.parse_json(b"")
    with pytest.raises(InvalidArgument, match=r"JSON Parse error: .* at offset: \d+"):
        tensors.parse_json(b'{"a": ')
    doc = tensors.parse_json(b'{"x": [NaN, -Infinity]}')
    assert np.isnan(doc["x"][0]) and doc["x"][1] == -np.inf
    with pytest.raises(InvalidArgument):
        tensors.parse_json(b"[" * 100_000)  # deep nesting is an error, not a crash


@pytest.mark.parametrize("arr,text", [
    (np.array([0.2, 3.0], np.float32), "[0.2,3.0]"),
    (np.array([[1, 2]], np.int64), "[[1,2]]"),
    (np.array([np.nan, np.inf, -np.inf, 0.1], np.float32), "[NaN,Infinity,-Infinity,0.1]"),
    (np.array([True]), "[true]"),
    (np.array(["a", b"b"], dtype=object), '["a","b"]'),
    (np.zeros((2, 0), dtype=object), "[[],[]]"),
    (np.array([[b"x"], [b"y"]], dtype=object), '[["x"],["y"]]'),
])
def test_encode(arr, text):
    assert tensors.dumps(tensors.jsonable(arr, finite_checked=True)).decode() == text


def test_encode_b64():
    out = tensors.dumps(tensors.jsonable(np.array([b"\x00\x01"], dtype=object), as_b64=True))
    assert json.loads(out) == [{"b64": "AAE="}]


@pytest.mark.parametrize("text,big", [
    (b'{"x": [1.5, 16777216.0]}', True), (b'{"x": [1e30]}', True), (b'{"x": [0.123456789]}', False),
    (b'{"instances": [1.0, 2.0]}', False), (b'{"x": [-1234567.5]}', False),
])
def test_big_number_scan(text, big):
    # The scan may only err on the side of checking: a big number is never missed.
    assert bool(tensors._MAYBE_BIG["FP32"].search(text)) == big


def test_lossy_float_caught_with_and_without_the_body():
    value = [1.5, 16777217]  # numpy reads both as float64; only the magnitude check catches the int
    for body in (orjson.dumps(value), None):
        with pytest.raises(InvalidArgument, match="without loss of precision"):
            tensors.json_to_tensor(value, tensors.BY_V2["FP32"], body)


# -- large and deep values -------------------------------------------------------------------

LONG = tensors._SLICE * 2 + 5  # past the length numpy is handed in slices


@pytest.mark.parametrize("name,value,dt,expected", [
    ("floats", [0.5] * LONG, "FP32", np.full(LONG, 0.5, np.float32)),
    ("ints for floats", list(range(LONG)), "FP64", np.arange(LONG, dtype=np.float64)),
    ("ints, then a float in a later slice", [1] * (LONG - 1) + [1.5], "FP32",
     np.array([1] * (LONG - 1) + [1.5], np.float32)),
    ("rows", [[1.0, 2.0]] * LONG, "FP32", np.tile(np.array([1.0, 2.0], np.float32), (LONG, 1))),
    ("ragged in a later slice", [[1.0, 2.0]] * (LONG - 1) + [[1.0]], "FP32", None),
])
def test_long_lists_decode_in_slices_as_in_one_piece(name, value, dt, expected):
    got = tensors.fast_tensor(value, tensors.BY_V2[dt], orjson.dumps(value), False)
    if expected is None:
        assert got is None
        with pytest.raises(InvalidArgument, match="unexpected size"):
            tensors.json_to_tensor(value, tensors.BY_V2[dt], orjson.dumps(value))
    else:
        assert got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.parametrize("arr", [np.arange(LONG, dtype=np.float32) / 7, np.arange(LONG * 3).reshape(LONG, 3),
                                 np.ones((LONG, 2, 2), np.float64)], ids=["floats", "int rows", "blocks"])
def test_long_tensors_encode_in_slices_as_in_one_piece(arr):
    assert tensors.dumps({"t": tensors.jsonable(arr)}) == orjson.dumps({"t": arr}, option=orjson.OPT_SERIALIZE_NUMPY)


@pytest.mark.parametrize("depth,refused", [(32, False), (33, True), (64, True), (1000, True)])
def test_more_levels_than_a_tensor_has_dimensions_are_refused_before_numpy(depth, refused):
    value = 1.0
    for _ in range(depth):
        value = [value]
    if refused:
        with pytest.raises(InvalidArgument, match=f"nested {depth} levels deep: a tensor has at most 32 dimensions"):
            tensors.json_to_tensor(value, tensors.BY_V2["FP32"], b"")
    else:
        assert tensors.json_to_tensor(value, tensors.BY_V2["FP32"], b"").shape == (1,) * depth


@pytest.mark.parametrize("depth,text", [(300, "[" * 200 + "..."), (1020, "<Array nested too deeply to show>")])
def test_a_value_too_deep_to_write_is_cut_or_named(depth, text):
    # orjson writes 254 levels, the standard library about 1,000; an error message never fails on the value
    assert tensors.json_text(orjson.loads(b"[" * depth + b"]" * depth)) == text
