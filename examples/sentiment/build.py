"""Trains the sample text-sentiment classifier on data.csv (TF-IDF + logistic regression) and exports it to ONNX."""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

HERE = Path(__file__).resolve().parent
DATA = HERE / "data.csv"
DEFAULT_VERSION = 1623831335  # the reference procedure's `--version-policy=specific:1623831335`
LABELS = ("negative", "positive")  # column order of `probabilities` (sklearn sorts classes)
OPSET = 17
# The same pattern must hold in Python's re (training) and re2 (onnxruntime's Tokenizer).
TOKEN_PATTERN = r"[a-z0-9']+"


@dataclass(frozen=True)
class Dataset:
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    test_sources: list[str]  # "generated" or "handwritten", to report accuracy on each


def load_data(path: str | Path = DATA) -> Dataset:
    """Read data.csv (text,label,source,split) into its train and test halves."""
    parts: dict[str, tuple[list[str], list[str], list[str]]] = {"train": ([], [], []), "test": ([], [], [])}
    with Path(path).open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if row.get("split") not in parts or row.get("label") not in LABELS or not row.get("text"):
                raise ValueError(f"{path}:{line}: bad row {row}")
            texts, labels, sources = parts[row["split"]]
            texts.append(row["text"])
            labels.append(row["label"])
            sources.append(row.get("source") or "")
    if not parts["train"][0] or not parts["test"][0]:
        raise ValueError(f"{path}: need both train and test rows")
    return Dataset(*parts["train"][:2], *parts["test"])


def make_pipeline() -> Pipeline:
    features = FeatureUnion([
        # Word uni- and bigrams catch "not good"; character n-grams carry unseen inflections.
        ("words", TfidfVectorizer(ngram_range=(1, 2), token_pattern=TOKEN_PATTERN)),
        ("chars", TfidfVectorizer(analyzer="char", ngram_range=(2, 4), min_df=2)),
    ])
    return Pipeline([("features", features), ("classifier", LogisticRegression(C=10.0, max_iter=5000))])


def train(data: Dataset | None = None) -> Pipeline:
    """Fit the pipeline on the train split (deterministic: lbfgs has no randomness)."""
    data = data or load_data()
    pipeline = make_pipeline().fit(data.train_texts, data.train_labels)
    if tuple(pipeline.classes_) != LABELS:
        raise RuntimeError(f"unexpected classes {pipeline.classes_}")
    return pipeline


def accuracy(pipeline: Pipeline, texts: list[str], labels: list[str]) -> float:
    return float(np.mean(pipeline.predict(texts) == np.asarray(labels)))


def to_onnx(pipeline: Pipeline) -> onnx.ModelProto:
    """Convert with skl2onnx: input `text` STRING [-1], outputs `label` STRING [-1] and `probabilities` FP32 [-1, 2]."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    with warnings.catch_warnings():
        # skl2onnx warns that analyzer="char" "may not work"; the build checks the outputs against sklearn instead.
        warnings.filterwarnings("ignore", message=".*CountVectorizer may not work.*")
        model = convert_sklearn(
            pipeline,
            name="sentiment",
            initial_types=[("text", StringTensorType([None]))],
            final_types=[("label", StringTensorType([None])), ("probabilities", FloatTensorType([None, len(LABELS)]))],
            options={
                id(pipeline.steps[-1][1]): {"zipmap": False},
                # onnxruntime's StringNormalizer defaults to en_US.UTF-8, absent on a bare Debian;
                # "C" exists everywhere and lowercases ASCII, which is all the training text holds.
                **{id(vectorizer): {"locale": "C"} for _, vectorizer in pipeline.named_steps["features"].transformer_list},
            },
            target_opset={"": OPSET, "ai.onnx.ml": 3},
        )
    model.doc_string = "Text sentiment: text -> label (negative|positive), probabilities [negative, positive]"
    onnx.checker.check_model(model)
    return model


def check_against_sklearn(model: onnx.ModelProto, pipeline: Pipeline, texts: list[str], atol: float = 1e-4) -> float:
    """Run the ONNX model in onnxruntime and fail unless labels equal sklearn's and probabilities agree within atol."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"text": np.asarray(texts, dtype=object)})
    expected = pipeline.predict_proba(texts)
    worst = float(np.max(np.abs(probabilities - expected)))
    if worst > atol or list(labels) != list(pipeline.predict(texts)):
        raise RuntimeError(f"ONNX export disagrees with sklearn (max |dp| = {worst:.2e})")
    return worst


def build(out_dir: str | Path, version: int = DEFAULT_VERSION) -> Path:
    """Train, export, verify, and write `<out_dir>/<version>/model.onnx`; return the file's path."""
    return _build(out_dir, version)[0]


def _build(out_dir: str | Path, version: int) -> tuple[Path, Pipeline, Dataset]:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    data = load_data()
    pipeline = train(data)
    model = to_onnx(pipeline)
    check_against_sklearn(model, pipeline, data.test_texts)
    target = Path(out_dir) / str(version) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(target))
    return target, pipeline, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="model base path; the version directory is created under it")
    parser.add_argument("--version", type=int, default=DEFAULT_VERSION, help=f"version directory (default {DEFAULT_VERSION})")
    parser.add_argument("--report", action="store_true", help="print train and held-out accuracy")
    args = parser.parse_args(argv)
    if args.version < 0:
        parser.error("--version must be a non-negative integer")
    path, pipeline, data = _build(args.out, args.version)
    if args.report:
        handwritten = [i for i, source in enumerate(data.test_sources) if source == "handwritten"]
        print(f"train accuracy {accuracy(pipeline, data.train_texts, data.train_labels):.3f}, "
              f"held-out accuracy {accuracy(pipeline, data.test_texts, data.test_labels):.3f} "
              f"({len(data.test_texts)} sentences; "
              f"{accuracy(pipeline, [data.test_texts[i] for i in handwritten], [data.test_labels[i] for i in handwritten]):.3f} "
              f"on the {len(handwritten)} hand-written ones)", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
