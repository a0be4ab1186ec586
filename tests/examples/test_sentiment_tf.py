"""The Keras sentiment sample: a SavedModel with the ONNX twin's names, accurate, served through the TF runtime."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install tidal[tensorflow])")

from tests.conftest import load_example  # noqa: E402
from tidal.models.config import RuntimeOptions  # noqa: E402
from tidal.models.runtimes import load_runtime  # noqa: E402
from tidal.models.signatures import CLASSIFY, PREDICT  # noqa: E402


@pytest.fixture(scope="module")
def runtime(sentiment_tf_base):
    rt = load_runtime(str(sentiment_tf_base / "1623831335"), RuntimeOptions())
    yield rt
    rt.close()


def test_held_out_accuracy_of_the_saved_model(runtime):
    data = load_example("sentiment_tf").load_data()
    out = runtime.run("serving_default", {"text": np.array(data.test_texts, dtype=object)})
    accuracy = np.mean([label.decode() == want for label, want in zip(out["label"], data.test_labels)])
    assert accuracy >= 0.85


def test_the_saved_model_has_the_onnx_twins_signature(runtime):
    default = runtime.signatures["serving_default"]
    assert default.method == PREDICT
    assert {n: (s.datatype, s.shape) for n, s in default.inputs.items()} == {"text": ("BYTES", (-1,))}
    assert {n: (s.datatype, s.shape) for n, s in default.outputs.items()} == {
        "label": ("BYTES", (-1,)), "probabilities": ("FP32", (-1, 2))}
    classify = runtime.signatures["classification"]
    assert classify.method == CLASSIFY and classify.serialized_examples
    out = runtime.run("serving_default", {"text": np.array(["great movie, loved it", "terrible service, never again"],
                                                           dtype=object)})
    assert out["label"].tolist() == [b"positive", b"negative"]
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), [1.0, 1.0], rtol=1e-5)
    example = tf.train.Example(features=tf.train.Features(feature={
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"great movie, loved it"]))}))
    cls = runtime.run("classification", {"inputs": np.array([example.SerializeToString()], dtype=object)})
    assert cls["classes"].tolist() == [[b"negative", b"positive"]]
    np.testing.assert_allclose(cls["scores"], out["probabilities"][:1], rtol=1e-5)
