"""Tiny ONNX models built with the onnx helper API, and a helper to lay them out as TF Serving versions."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

OPSET = [helper.make_opsetid("", 17)]


def _save(model, path: Path) -> Path:
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def half_plus_two(path: Path, *, shape=(None,), slope: float = 0.5, offset: float = 2.0) -> Path:
    """y = slope * x + offset; input `x` FP32 of the given shape (None = variable)."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Add", ["ax", "b"], ["y"])],
        "half_plus_two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
        initializer=[helper.make_tensor("a", TensorProto.FLOAT, [], [slope]),
                     helper.make_tensor("b", TensorProto.FLOAT, [], [offset])],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def two_inputs(path: Path) -> Path:
    """sum = a + b (FP32 [-1, 3]) and count = n * 2 (INT64 [-1]); two outputs."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Add", ["n", "n"], ["count"])],
        "two_inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 3]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None, 3]),
         helper.make_tensor_value_info("count", TensorProto.INT64, [None])],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def row_sum(path: Path) -> Path:
    """total = sum of each row; input `x` FP32 [-1, -1] (rows of any width)."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0)],
        "row_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [None])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def classifier(path: Path, *, labels=("neg", "pos"), zipmap: bool = False) -> Path:
    """A linear classifier over x FP32 [-1, 2] in skl2onnx's style: output_label and output_probability."""
    n = len(labels)
    coef = np.arange(2 * n, dtype=np.float32).reshape(2, n) - n  # deterministic weights
    ml = helper.make_opsetid("ai.onnx.ml", 3)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("ArgMax", ["probs"], ["idx"], axis=1, keepdims=0),
        helper.make_node("LabelEncoder", ["idx"], ["output_label"], domain="ai.onnx.ml",
                         keys_int64s=list(range(n)), values_strings=list(labels)),
    ]
    if zipmap:
        nodes.append(helper.make_node("ZipMap", ["probs"], ["output_probability"], domain="ai.onnx.ml",
                                      classlabels_strings=list(labels)))
        prob_info = helper.make_value_info(
            "output_probability",
            helper.make_sequence_type_proto(helper.make_map_type_proto(
                TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))
    else:
        nodes.append(helper.make_node("Identity", ["probs"], ["output_probability"]))
        prob_info = helper.make_tensor_value_info("output_probability", TensorProto.FLOAT, [None, n])
        # Where the class names live for a tensor output: a classifier node's attributes.
        nodes.append(helper.make_node("ZipMap", ["probs"], ["unused_map"], domain="ai.onnx.ml",
                                      classlabels_strings=list(labels)))
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("output_label", TensorProto.STRING, [None]), prob_info],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [2, n], coef.flatten().tolist())],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET + [ml]), path)


def text_echo(path: Path) -> Path:
    """Strings in, the same strings out: `text` BYTES [-1, 1] -> `echo`."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])],
        "text_echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [None, 1])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, [None, 1])],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an onnx model")
    return path


def version_dir(base: Path, version: int | str) -> Path:
    d = base / str(version)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def model_base(tmp_path) -> Path:
    base = tmp_path / "models" / "hpt"
    base.mkdir(parents=True)
    return base


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests in a fresh event loop, with a deadline so a hang fails instead of stalling."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), 60))
    return True
