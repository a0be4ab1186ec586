"""Checks the sentiment sample: reproducible data set, ONNX signature, agreement with sklearn, accuracy."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import EXAMPLES_DIR, load_example

SENTIMENT_DIR = EXAMPLES_DIR / "sentiment"


def _make_data_module():
    spec = importlib.util.spec_from_file_location("tidal_example_sentiment_make_data", SENTIMENT_DIR / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def session(sentiment_base):
    return ort.InferenceSession(str(sentiment_base / "1623831335" / "model.onnx"), providers=["CPUExecutionProvider"])


def _run(session, texts):
    return session.run(["label", "probabilities"], {"text": np.asarray(texts, dtype=object)})


def test_committed_data_is_what_the_script_writes():
    make_data = _make_data_module()
    assert (SENTIMENT_DIR / "data.csv").read_text(encoding="utf-8") == make_data.make_dataset()


def test_data_set_shape():
    with (SENTIMENT_DIR / "data.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 300
    assert len({r["text"] for r in rows}) == len(rows)
    for split in ("train", "test"):
        labels = [r["label"] for r in rows if r["split"] == split]
        # Balanced within a few sentences in each half.
        assert abs(labels.count("positive") - labels.count("negative")) <= 4, split
        assert any(r["source"] == "handwritten" for r in rows if r["split"] == split)


def test_signature(session):
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, len(inp.shape)) == ("text", "tensor(string)", 1)
    outputs = {o.name: o for o in session.get_outputs()}
    assert set(outputs) == {"label", "probabilities"}
    assert outputs["label"].type == "tensor(string)" and len(outputs["label"].shape) == 1
    assert outputs["probabilities"].type == "tensor(float)" and outputs["probabilities"].shape[1] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("great movie", "positive"),
        ("I loved it, highly recommended.", "positive"),
        ("Absolutely wonderful staff!", "positive"),
        ("terrible service, never again", "negative"),
        ("The food was cold and bland.", "negative"),
        ("What a waste of money.", "negative"),
    ],
)
def test_clear_sentences(session, text, expected):
    labels, probabilities = _run(session, [text])
    assert labels.tolist() == [expected]
    assert probabilities.dtype == np.float32 and probabilities.shape == (1, 2)
    # Column 0 is negative, column 1 positive; the label is the larger one.
    assert probabilities[0, 1 if expected == "positive" else 0] > 0.5


def test_onnx_matches_sklearn_and_accuracy(session):
    builder = load_example("sentiment")
    data = builder.load_data()
    pipeline = builder.train(data)
    labels, probabilities = _run(session, data.test_texts)
    assert labels.tolist() == pipeline.predict(data.test_texts).tolist()
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(data.test_texts), atol=1e-4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    correct = labels == np.asarray(data.test_labels)
    assert float(np.mean(correct)) >= 0.85, float(np.mean(correct))
    # Hand-written reviews use words the phrase lists never saw; they are the harder half.
    handwritten = np.asarray(data.test_sources) == "handwritten"
    assert handwritten.sum() >= 20
    assert float(np.mean(correct[handwritten])) >= 0.65, float(np.mean(correct[handwritten]))


def test_batch_is_row_wise(session):
    texts = ["great movie", "awful, just awful", "great movie"]
    labels, probabilities = _run(session, texts)
    assert labels.tolist()[0] == labels.tolist()[2] == "positive" and labels.tolist()[1] == "negative"
    np.testing.assert_array_equal(probabilities[0], probabilities[2])
    single_labels, single_probabilities = _run(session, texts[1:2])
    np.testing.assert_allclose(single_probabilities[0], probabilities[1], atol=1e-6)


def test_build_layout_and_bad_version(tmp_path):
    builder = load_example("sentiment")
    assert builder.build(tmp_path, version=3) == tmp_path / "3" / "model.onnx"
    with pytest.raises(ValueError, match="version"):
        builder.build(tmp_path, version=-2)


def test_bad_data_rows_are_rejected(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label,source,split\nfine,neutral,handwritten,train\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad row"):
        load_example("sentiment").load_data(bad)


def test_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SENTIMENT_DIR / "build.py"), "--out", str(tmp_path), "--report"],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.strip() == str(tmp_path / "1623831335" / "model.onnx")
    assert "held-out accuracy" in result.stderr
