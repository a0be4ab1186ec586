"""The sample models through Tidal's own ONNX runtime: the signatures the server will publish, and a run of each."""

from __future__ import annotations

import numpy as np

from tidal.models.config import RuntimeOptions
from tidal.models.runtimes import detect
from tidal.models.runtimes import onnx as onnx_runtime


def _specs(tensors):
    return {name: (spec.datatype, tuple(spec.shape)) for name, spec in tensors.items()}


def test_half_plus_two_signature(half_plus_two_base):
    version_dir = str(half_plus_two_base / "123")
    assert detect(version_dir) == "onnx"
    runtime = onnx_runtime.load(version_dir, RuntimeOptions())
    try:
        default = runtime.signatures["serving_default"]
        assert _specs(default.inputs) == {"x": ("FP32", (-1,))}
        assert _specs(default.outputs) == {"y": ("FP32", (-1,))}
        out = runtime.run("serving_default", {"x": np.array([1.0, 2.0, 5.0], dtype=np.float32)})
        np.testing.assert_array_equal(out["y"], [2.5, 3.0, 4.5])
    finally:
        runtime.close()


def test_sentiment_predict_and_classify(sentiment_base):
    runtime = onnx_runtime.load(str(sentiment_base / "1623831335"), RuntimeOptions())
    try:
        default = runtime.signatures["serving_default"]
        assert _specs(default.inputs) == {"text": ("BYTES", (-1,))}
        assert _specs(default.outputs) == {"label": ("BYTES", (-1,)), "probabilities": ("FP32", (-1, 2))}
        texts = np.array([b"great movie", b"terrible service, never again"], dtype=object)
        out = runtime.run("serving_default", {"text": texts})
        assert [str(v) for v in out["label"]] == ["positive", "negative"]
        # The class names come from the exported classifier, so :classify answers with words.
        classified = runtime.run("classification", {"text": texts[:1]})
        assert [str(v) for v in classified["classes"][0]] == ["negative", "positive"]
        np.testing.assert_allclose(classified["scores"], out["probabilities"][:1], atol=1e-6)
    finally:
        runtime.close()
