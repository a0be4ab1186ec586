"""Trains the sample text-sentiment classifier as a small Keras model on ../sentiment/data.csv and saves it as a SavedModel.

The SavedModel twin of the ONNX sample: the same data, features of the same kind
(TF-IDF over word 1-2-grams and character 2-4-grams) and a softmax layer, with the
same names: input `text` (string [-1]), outputs `label` (string [-1]) and
`probabilities` (float [-1, 2], columns negative, positive). It also has a TF Serving
classify signature, `classification`, over tf.Examples with a string feature `text`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "sentiment" / "data.csv"
DEFAULT_VERSION = 1623831335  # the reference procedure's `--version-policy=specific:1623831335`, as the ONNX twin
LABELS = ("negative", "positive")
CLASSIFY = "tensorflow/serving/classify"
EPOCHS = 40
SEED = 1


@dataclass(frozen=True)
class Dataset:
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]


def load_data(path: Path = DATA) -> Dataset:
    """data.csv (text,label,source,split) split as written, the same halves the ONNX sample uses."""
    parts: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    with Path(path).open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if row.get("split") not in parts or row.get("label") not in LABELS or not row.get("text"):
                raise ValueError(f"{path}:{line}: bad row {row}")
            texts, labels = parts[row["split"]]
            texts.append(row["text"])
            labels.append(row["label"])
    if not parts["train"][0] or not parts["test"][0]:
        raise ValueError(f"{path}: need both train and test rows")
    return Dataset(*parts["train"], *parts["test"])


def train(data):
    """Fit vectorizers and a softmax layer; returns the Keras model (strings in, probabilities out)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    words = keras.layers.TextVectorization(ngrams=2, output_mode="tf_idf", max_tokens=20000, name="words")
    chars = keras.layers.TextVectorization(split="character", ngrams=(2, 3, 4), output_mode="tf_idf",
                                           max_tokens=20000, name="chars")
    texts = tf.constant(data.train_texts)
    words.adapt(texts)
    chars.adapt(texts)
    text = keras.Input(shape=(), dtype="string", name="text")
    features = keras.layers.Concatenate()([words(text), chars(text)])
    probabilities = keras.layers.Dense(len(LABELS), activation="softmax", name="probabilities",
                                       kernel_regularizer=keras.regularizers.L2(1e-4))(features)
    model = keras.Model(text, probabilities, name="sentiment")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    labels = np.array([LABELS.index(y) for y in data.train_labels])
    model.fit(texts, labels, epochs=EPOCHS, batch_size=32, shuffle=True, verbose=0)
    return model


def accuracy(model, texts: list[str], labels: list[str]) -> float:
    import tensorflow as tf

    predicted = np.argmax(model(tf.constant(texts)).numpy(), axis=1)
    return float(np.mean(predicted == np.array([LABELS.index(y) for y in labels])))


def _module(model):
    import tensorflow as tf

    class Sentiment(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.labels = tf.constant(LABELS)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def predict(self, text):
            probabilities = self.model(text)
            return {"label": tf.gather(self.labels, tf.argmax(probabilities, axis=1)), "probabilities": probabilities}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            text = tf.io.parse_example(inputs, {"text": tf.io.FixedLenFeature([], tf.string)})["text"]
            scores = self.model(text)
            return {"classes": tf.tile(self.labels[tf.newaxis, :], [tf.shape(scores)[0], 1]), "scores": scores}

    return Sentiment()


def save(model, target: Path) -> None:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    module = _module(model)
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.predict,
                                                         "classification": module.classify})
    # tf.saved_model.save writes every signature as predict; TF Serving's :classify needs the classify method.
    pb = target / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pb.read_bytes())
    for meta_graph in saved.meta_graphs:
        meta_graph.signature_def["classification"].method_name = CLASSIFY
    pb.write_bytes(saved.SerializeToString(deterministic=True))


def check_saved(model, target: Path, texts: list[str], atol: float = 1e-5) -> float:
    """Reload the SavedModel and fail unless it answers as the Keras model does."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(target))
    out = loaded.signatures["serving_default"](text=tf.constant(texts))
    expected = model(tf.constant(texts)).numpy()
    worst = float(np.max(np.abs(out["probabilities"].numpy() - expected)))
    labels = [LABELS[i] for i in np.argmax(expected, axis=1)]
    if worst > atol or [v.decode() for v in out["label"].numpy()] != labels:
        raise RuntimeError(f"the SavedModel disagrees with the Keras model (max |dp| = {worst:.2e})")
    return worst


def build(out_dir: str | Path, version: int = DEFAULT_VERSION) -> Path:
    """Train, save, verify, and return the version directory `<out_dir>/<version>`."""
    return _build(out_dir, version)[0]


def _build(out_dir, version: int):
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    data = load_data()
    model = train(data)
    target = Path(out_dir) / str(version)
    save(model, target)
    check_saved(model, target, data.test_texts)
    return target, model, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="model base path; the version directory is created under it")
    parser.add_argument("--version", type=int, default=DEFAULT_VERSION, help=f"version directory (default {DEFAULT_VERSION})")
    parser.add_argument("--report", action="store_true", help="print train and held-out accuracy")
    args = parser.parse_args(argv)
    if args.version < 0:
        parser.error("--version must be a non-negative integer")
    target, model, data = _build(args.out, args.version)
    if args.report:
        print(f"train accuracy {accuracy(model, data.train_texts, data.train_labels):.3f}, "
              f"held-out accuracy {accuracy(model, data.test_texts, data.test_labels):.3f} "
              f"({len(data.test_texts)} sentences)", file=sys.stderr)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
