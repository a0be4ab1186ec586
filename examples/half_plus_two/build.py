"""Builds TF Serving's classic half_plus_two test model (y = 0.5x + 2) as ONNX in TF Serving's version layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_VERSION = 123  # TF Serving's saved_model_half_plus_two ships version 00000123
# Old enough that any onnxruntime from the last few years (KServe's pinned one too) loads it.
OPSET = 17
IR_VERSION = 8


def make_model() -> onnx.ModelProto:
    """The graph: y = x * 0.5 + 2 over a 1-D float tensor of any length (the batch)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])
    a = numpy_helper.from_array(np.array(0.5, dtype=np.float32), name="a")
    b = numpy_helper.from_array(np.array(2.0, dtype=np.float32), name="b")
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "a"], ["ax"], name="mul"),
            helper.make_node("Add", ["ax", "b"], ["y"], name="add"),
        ],
        "half_plus_two",
        [x],
        [y],
        initializer=[a, b],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="tidal-examples",
        doc_string="y = 0.5 * x + 2 (TF Serving's half_plus_two)",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def build(out_dir: str | Path, version: int = DEFAULT_VERSION) -> Path:
    """Write `<out_dir>/<version>/model.onnx` and return the file's path."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    target = Path(out_dir) / str(version) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(make_model(), str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="model base path; the version directory is created under it")
    parser.add_argument("--version", type=int, default=DEFAULT_VERSION, help=f"version directory (default {DEFAULT_VERSION})")
    args = parser.parse_args(argv)
    if args.version < 0:
        parser.error("--version must be a non-negative integer")
    print(build(args.out, args.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
