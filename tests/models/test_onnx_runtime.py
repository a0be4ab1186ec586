"""The ONNX runtime: signatures from the model, classify/regress views, errors, and the runtime registry."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.conftest import classifier, corrupt, half_plus_two, text_echo, two_inputs
from tidal.errors import FailedPrecondition, InvalidArgument
from tidal.models.config import RuntimeOptions
from tidal.models.runtimes import detect, load_runtime
from tidal.models.signatures import CLASSIFY, PREDICT, REGRESS, TensorSpec

OPTS = RuntimeOptions(intra_op_threads=1, inter_op_threads=1)


def test_half_plus_two_signatures_and_run(tmp_path):
    half_plus_two(tmp_path / "model.onnx")
    rt = load_runtime(str(tmp_path), OPTS)
    assert rt.platform == "onnxruntime_onnx"
    sig = rt.signatures["serving_default"]
    assert sig.method == PREDICT
    assert sig.inputs == {"x": TensorSpec("x", "FP32", (-1,))}
    assert sig.outputs == {"y": TensorSpec("y", "FP32", (-1,))}
    # 0.5 * [1, 2, 5] + 2 = [2.5, 3, 4.5]
    out = rt.run("serving_default", {"x": np.array([1, 2, 5], np.float32)})
    np.testing.assert_allclose(out["y"], [2.5, 3.0, 4.5])
    assert rt.signatures["regression"].method == REGRESS
    np.testing.assert_allclose(rt.run("regression", {"x": np.array([4], np.float32)})["outputs"], [4.0])
    assert "classification" not in rt.signatures
    rt.close()


def test_fixed_and_symbolic_dims(tmp_path):
    half_plus_two(tmp_path / "model.onnx", shape=("batch", 3))
    rt = load_runtime(str(tmp_path), OPTS)
    assert rt.signatures["serving_default"].inputs["x"].shape == (-1, 3)
    assert "regression" not in rt.signatures  # output [-1, 3] is not one value per example


def test_two_inputs_two_outputs_no_classify_or_regress(tmp_path):
    two_inputs(tmp_path / "model.onnx")
    rt = load_runtime(str(tmp_path), OPTS)
    assert set(rt.signatures) == {"serving_default"}
    sig = rt.signatures["serving_default"]
    assert [(s.name, s.datatype, s.shape) for s in sig.inputs.values()] == [
        ("a", "FP32", (-1, 3)), ("b", "FP32", (-1, 3)), ("n", "INT64", (-1,))]
    assert list(sig.outputs) == ["sum", "count"]


@pytest.mark.parametrize("zipmap", [False, True], ids=["probability tensor", "zipmap"])
def test_classifier_gets_a_classify_signature(tmp_path, zipmap):
    classifier(tmp_path / "model.onnx", labels=("neg", "pos"), zipmap=zipmap)
    rt = load_runtime(str(tmp_path), OPTS)
    cls = rt.signatures["classification"]
    assert cls.method == CLASSIFY
    assert cls.outputs == {"classes": TensorSpec("classes", "BYTES", (-1, 2)),
                           "scores": TensorSpec("scores", "FP32", (-1, 2))}
    x = np.array([[1, 2], [3, -4]], np.float32)
    out = rt.run("classification", {"x": x})
    assert out["classes"].tolist() == [["neg", "pos"], ["neg", "pos"]]
    # W = [[-2, -1], [0, 1]]: logits row 0 = [-2, 1], row 1 = [-6, -7]; softmax([-2, 1])[1] = 1/(1+e^-3)
    np.testing.assert_allclose(out["scores"][:, 1], [1 / (1 + np.exp(-3)), 1 / (1 + np.exp(1))], rtol=1e-5)
    np.testing.assert_allclose(out["scores"].sum(axis=1), [1, 1], rtol=1e-5)
    pred = rt.run("serving_default", {"x": x})
    assert pred["output_label"].tolist() == ["pos", "neg"]
    assert pred["output_probability"].shape == (2, 2)  # zipmap dicts become a dense tensor


def test_string_inputs_accept_bytes_and_str(tmp_path):
    text_echo(tmp_path / "model.onnx")
    rt = load_runtime(str(tmp_path), OPTS)
    assert rt.signatures["serving_default"].inputs["text"].datatype == "BYTES"
    out = rt.run("serving_default", {"text": np.array([[b"caf\xc3\xa9"], ["plain"]], dtype=object)})
    assert out["echo"].tolist() == [["café"], ["plain"]]


def test_runtime_errors_become_invalid_argument(tmp_path):
    half_plus_two(tmp_path / "model.onnx")
    rt = load_runtime(str(tmp_path), OPTS)
    with pytest.raises(InvalidArgument) as e:
        rt.run("serving_default", {"x": np.ones((2, 2), np.float32)})  # wrong rank slips past no check here
    assert "ONNXRuntimeError" not in e.value.message
    with pytest.raises(InvalidArgument, match="unknown signature"):
        rt.run("nope", {"x": np.ones(1, np.float32)})


def test_corrupt_model_is_a_clear_load_error(tmp_path):
    corrupt(tmp_path / "model.onnx")
    with pytest.raises(FailedPrecondition, match="onnxruntime cannot load model.onnx"):
        load_runtime(str(tmp_path), OPTS)


def test_a_runtime_that_is_not_installed_names_the_extra(tmp_path, monkeypatch):
    from tidal.models import runtimes

    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    (tmp_path / "variables").mkdir()
    assert detect(str(tmp_path)) == "tensorflow"
    # As on a machine without TensorFlow: the runtime's module cannot be imported.
    entry = runtimes.RUNTIMES["tensorflow"]
    monkeypatch.setitem(runtimes.RUNTIMES, "tensorflow", runtimes.RuntimeEntry(
        entry.platform, entry.recognises, "tidal.models.runtimes.not_installed_here", entry.extra))
    with pytest.raises(FailedPrecondition, match=r"pip install tidal\[tensorflow\]"):
        load_runtime(str(tmp_path), OPTS)


def test_unrecognised_directory(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(FailedPrecondition, match="no runtime recognises.*weights.bin"):
        detect(str(tmp_path))


def test_several_onnx_files_need_a_model_onnx(tmp_path):
    half_plus_two(tmp_path / "a.onnx")
    half_plus_two(tmp_path / "b.onnx", slope=2.0)
    with pytest.raises(FailedPrecondition, match="several .onnx files"):
        load_runtime(str(tmp_path), OPTS)
    half_plus_two(tmp_path / "model.onnx", slope=3.0)
    rt = load_runtime(str(tmp_path), OPTS)
    np.testing.assert_allclose(rt.run("serving_default", {"x": np.array([1], np.float32)})["y"], [5.0])


def test_a_large_run_shrinks_the_arena_and_answers_the_same(tmp_path):
    # Past 16 MiB of inputs the run asks onnxruntime to give its arena's growth back afterwards.
    half_plus_two(tmp_path / "model.onnx")
    rt = load_runtime(str(tmp_path), OPTS)
    for n in (3, (16 << 20) // 4 + 1, 3):
        x = np.arange(n, dtype=np.float32)
        np.testing.assert_allclose(rt.run("serving_default", {"x": x})["y"], 0.5 * x + 2)
    rt.close()
