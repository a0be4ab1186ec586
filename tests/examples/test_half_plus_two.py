"""Checks the half_plus_two ONNX builder: layout, signature and TF Serving's expected values."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import EXAMPLES_DIR, load_example


def test_layout_and_values(half_plus_two_base):
    path = half_plus_two_base / "123" / "model.onnx"
    assert path.is_file()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert (inp.name, inp.type, len(inp.shape)) == ("x", "tensor(float)", 1)
    assert (out.name, out.type, len(out.shape)) == ("y", "tensor(float)", 1)
    # The dimension is symbolic, i.e. a batch of any size.
    assert not isinstance(inp.shape[0], int)
    (y,) = session.run(None, {"x": np.array([1.0, 2.0, 5.0], dtype=np.float32)})
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.array([2.5, 3.0, 4.5], dtype=np.float32))


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_any_batch_size(half_plus_two_base, n):
    session = ort.InferenceSession(str(half_plus_two_base / "123" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.linspace(-100, 100, n, dtype=np.float32)
    (y,) = session.run(["y"], {"x": x})
    assert y.shape == (n,)
    np.testing.assert_allclose(y, 0.5 * x + 2, rtol=0, atol=1e-5)


def test_custom_version_and_bad_version(tmp_path):
    builder = load_example("half_plus_two")
    path = builder.build(tmp_path, version=7)
    assert path == tmp_path / "7" / "model.onnx"
    onnx.checker.check_model(str(path))
    for bad in (-1, "1", 1.5, True):
        with pytest.raises(ValueError, match="version"):
            builder.build(tmp_path, version=bad)


def test_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / "half_plus_two" / "build.py"), "--out", str(tmp_path), "--version", "5"],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.strip() == str(tmp_path / "5" / "model.onnx")
    assert (tmp_path / "5" / "model.onnx").is_file()
