"""Request tensors checked and converted against a signature."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.errors import InvalidArgument
from tidal.models.signatures import Signature, TensorSpec, conform

SIG = Signature("serving_default", "tensorflow/serving/predict",
                {"x": TensorSpec("x", "FP32", (-1, 3)), "ids": TensorSpec("ids", "INT64", (-1,)),
                 "text": TensorSpec("text", "BYTES", (-1,))})


def ok_inputs(**over):
    base = {"x": np.zeros((2, 3), np.float32), "ids": np.array([1, 2]), "text": np.array(["a", "b"], dtype=object)}
    base.update(over)
    return base


GOOD = [
    ("exact dtypes", {}, {"x": np.float32, "ids": np.int64, "text": object}),
    ("ints for floats", {"x": np.ones((2, 3), np.int64)}, {"x": np.float32}),
    ("float64 narrowed", {"x": np.ones((2, 3), np.float64)}, {"x": np.float32}),
    ("int32 widened", {"ids": np.array([1, 2], np.int32)}, {"ids": np.int64}),
    ("bools for ints", {"ids": np.array([True, False])}, {"ids": np.int64}),
    ("unicode strings", {"text": np.array(["a", "b"])}, {"text": object}),
    ("bytes strings", {"text": np.array([b"a", b"b"])}, {"text": object}),
    ("plain lists", {"ids": [1, 2]}, {"ids": np.int64}),
]


@pytest.mark.parametrize("over,dtypes", [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_conform_accepts(over, dtypes):
    out = conform(SIG, ok_inputs(**over))
    for name, dt in dtypes.items():
        assert out[name].dtype == np.dtype(dt)


BAD = [
    ("floats for ints", {"ids": np.array([1.5, 2.0])}, "input 'ids' expects INT64, got FP64 values"),
    ("strings for floats", {"x": np.array([["a"] * 3] * 2)}, "input 'x' expects FP32, got string values"),
    ("numbers for strings", {"text": np.array([1, 2])}, "input 'text' expects BYTES (strings), got INT64 values"),
    ("wrong rank", {"x": np.zeros(6, np.float32)}, "input 'x' expects rank 2 (shape [-1, 3]), got rank 1 (shape [6])"),
    ("wrong fixed dim", {"x": np.zeros((2, 4), np.float32)}, "input 'x' expects shape [-1, 3], got [2, 4]"),
    ("objects for floats", {"x": np.array([[None] * 3] * 2)}, "input 'x' expects FP32, got mixed/object values"),
    ("ragged list", {"x": [[1.0, 2.0, 3.0], [1.0]]}, "input 'x' is not a rectangular tensor"),
]


@pytest.mark.parametrize("over,message", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_conform_rejects(over, message):
    with pytest.raises(InvalidArgument) as e:
        conform(SIG, ok_inputs(**over))
    assert e.value.message == message


def test_unknown_and_missing_names():
    inputs = ok_inputs()
    del inputs["ids"]
    inputs["idz"] = np.array([1])
    with pytest.raises(InvalidArgument) as e:
        conform(SIG, inputs)
    assert e.value.message == ("unknown input 'idz'; missing input 'ids' for signature 'serving_default' "
                               "(expected inputs: 'x', 'ids', 'text')")


@pytest.mark.parametrize("over", [c[1] for c in BAD], ids=[c[0] for c in BAD])
def test_checker_rejects_like_conform(over):
    from tidal.models.signatures import InputChecker

    with pytest.raises(InvalidArgument):
        InputChecker(SIG)(ok_inputs(**over))


def test_checker_passes_exact_inputs_through_and_converts_others():
    from tidal.models.signatures import InputChecker

    check = InputChecker(SIG)
    exact = ok_inputs()
    assert check(exact) is exact
    assert check(ok_inputs(ids=np.array([1, 2], np.int32)))["ids"].dtype == np.int64
