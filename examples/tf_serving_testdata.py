"""Builds TF Serving's own test SavedModels the way its testdata scripts do (TF1 graphs through tf.compat.v1).

Models, each written as `<out>/<name>/<version>/`:

| name | signatures |
|---|---|
| `saved_model_half_plus_two_cpu` (version 123) | `serving_default` (predict x -> y = 0.5x + 2, x is the parsed feature, shape [-1, 1]), `classify_x_to_y`, `regress_x_to_y`, `regress_x_to_y2` (0.5x + 3) over serialized tf.Examples, `regress_x2_to_y3` (0.5x2 + 3 over a float input, not tf.Examples: Predict runs it, as in TF Serving) |
| `saved_model_half_plus_three` (version 123) | the same graph with b = 3 |
| `estimator_linear` (version 1) | what an estimator's `export_saved_model` writes for a binary classifier with a `serving_input_receiver_fn` of one serialized tf.Example string tensor: `serving_default` and `classification` (classes, scores), `regression` (outputs), `predict` (logits, probabilities, class_ids) |
| `bert_tiny` (version 1623831335) | the reference procedure's model shape: `input_ids`, `input_mask`, `segment_ids` INT32 [-1, 128] -> `probabilities` FP32 [-1, 2], a small embedding + masked mean + softmax |

tf.estimator is gone from TensorFlow 2.16+, so `estimator_linear` is the same TF1 graph an estimator exports
(serialized tf.Example placeholder, parse_example, one linear head), built directly.

    python examples/tf_serving_testdata.py --out models/tfs_testdata
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HALF_PLUS_VERSION = 123
ESTIMATOR_VERSION = 1
BERT_VERSION = 1623831335  # the reference procedure's --version-policy=specific:1623831335
BERT_SEQ = 128
ESTIMATOR_WEIGHT, ESTIMATOR_BIAS = 2.0, -1.0  # logit = 2x - 1


def _v1():
    import tensorflow as tf

    return tf.compat.v1


def _signature(v1, inputs: dict, outputs: dict, method: str):
    info = v1.saved_model.utils.build_tensor_info
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()}, method)


def _save(v1, sess, target: Path, signatures: dict, as_text: bool = False) -> Path:
    builder = v1.saved_model.builder.SavedModelBuilder(str(target))
    builder.add_meta_graph_and_variables(sess, [v1.saved_model.tag_constants.SERVING],
                                         signature_def_map=signatures)
    builder.save(as_text)
    return target


def build_half_plus(out_dir: str | Path, b: float = 2.0, version: int = HALF_PLUS_VERSION,
                    as_text: bool = False) -> Path:
    """TF Serving's saved_model_half_plus_two (b=2) or _three (b=3): y = 0.5x + b, y2 = 0.5x + 3, y3 = 0.5x2 + 3."""
    v1 = _v1()
    consts = v1.saved_model.signature_constants
    target = Path(out_dir) / str(version)
    graph = v1.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        a = v1.Variable(0.5, name="a")
        bv = v1.Variable(b, name="b")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(v1.string, name="tf_example", shape=[None])
        parsed = v1.parse_example(serialized, {
            "x": v1.FixedLenFeature([1], dtype=v1.float32),
            "x2": v1.FixedLenFeature([1], dtype=v1.float32, default_value=[0.0]),
        })
        x = v1.identity(parsed["x"], name="x")  # [-1, 1]: a partially known shape
        y = v1.identity(a * x + bv, name="y")
        y2 = v1.identity(a * x + c, name="y2")
        x2 = v1.identity(parsed["x2"], name="x2")
        y3 = v1.identity(v1.Variable(0.5, name="a2") * x2 + v1.Variable(3.0, name="c2"), name="y3")
        signatures = {
            consts.DEFAULT_SERVING_SIGNATURE_DEF_KEY: _signature(v1, {"x": x}, {"y": y}, consts.PREDICT_METHOD_NAME),
            "regress_x_to_y": _signature(v1, {consts.REGRESS_INPUTS: serialized}, {consts.REGRESS_OUTPUTS: y},
                                         consts.REGRESS_METHOD_NAME),
            "regress_x_to_y2": _signature(v1, {consts.REGRESS_INPUTS: serialized}, {consts.REGRESS_OUTPUTS: y2},
                                          consts.REGRESS_METHOD_NAME),
            "regress_x2_to_y3": _signature(v1, {consts.REGRESS_INPUTS: x2}, {consts.REGRESS_OUTPUTS: y3},
                                           consts.REGRESS_METHOD_NAME),
            "classify_x_to_y": _signature(v1, {consts.CLASSIFY_INPUTS: serialized},
                                          {consts.CLASSIFY_OUTPUT_SCORES: y}, consts.CLASSIFY_METHOD_NAME),
        }
        sess.run(v1.global_variables_initializer())
        return _save(v1, sess, target, signatures, as_text)


def build_estimator(out_dir: str | Path, version: int = ESTIMATOR_VERSION) -> Path:
    """A binary linear classifier over float feature `x`, exported as an estimator's serving_input_receiver_fn does."""
    v1 = _v1()
    consts = v1.saved_model.signature_constants
    target = Path(out_dir) / str(version)
    graph = v1.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        examples = v1.placeholder(v1.string, name="input_example_tensor", shape=[None])
        features = v1.parse_example(examples, {"x": v1.FixedLenFeature([1], dtype=v1.float32)})
        w = v1.Variable([[ESTIMATOR_WEIGHT]], name="linear/weights")
        bias = v1.Variable([ESTIMATOR_BIAS], name="linear/bias")
        logits = v1.identity(v1.matmul(features["x"], w) + bias, name="logits")  # [-1, 1]
        positive = v1.sigmoid(logits)
        probabilities = v1.concat([1.0 - positive, positive], axis=1, name="probabilities")
        class_ids = v1.expand_dims(v1.argmax(probabilities, axis=1), -1, name="class_ids")
        batch = v1.shape(examples)[0]
        classes = v1.tile(v1.constant([[b"0", b"1"]]), v1.stack([batch, 1]), name="classes")
        signatures = {
            consts.DEFAULT_SERVING_SIGNATURE_DEF_KEY: _signature(
                v1, {consts.CLASSIFY_INPUTS: examples},
                {consts.CLASSIFY_OUTPUT_CLASSES: classes, consts.CLASSIFY_OUTPUT_SCORES: probabilities},
                consts.CLASSIFY_METHOD_NAME),
            "regression": _signature(v1, {consts.REGRESS_INPUTS: examples}, {consts.REGRESS_OUTPUTS: positive},
                                     consts.REGRESS_METHOD_NAME),
            "predict": _signature(v1, {"examples": examples},
                                  {"logits": logits, "probabilities": probabilities, "class_ids": class_ids},
                                  consts.PREDICT_METHOD_NAME),
        }
        signatures["classification"] = signatures[consts.DEFAULT_SERVING_SIGNATURE_DEF_KEY]
        sess.run(v1.global_variables_initializer())
        return _save(v1, sess, target, signatures)


def build_bert(out_dir: str | Path, version: int = BERT_VERSION, vocab: int = 1000, width: int = 16) -> Path:
    """A BERT-shaped classifier: three int32 [-1, 128] inputs, softmax probabilities [-1, 2] out."""
    v1 = _v1()
    consts = v1.saved_model.signature_constants
    target = Path(out_dir) / str(version)
    graph = v1.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        v1.set_random_seed(7)
        ids = v1.placeholder(v1.int32, [None, BERT_SEQ], name="input_ids")
        mask = v1.placeholder(v1.int32, [None, BERT_SEQ], name="input_mask")
        segments = v1.placeholder(v1.int32, [None, BERT_SEQ], name="segment_ids")
        words = v1.get_variable("bert/embeddings/word_embeddings", [vocab, width])
        types = v1.get_variable("bert/embeddings/token_type_embeddings", [2, width])
        hidden = v1.gather(words, ids % vocab) + v1.gather(types, segments % 2)  # [-1, 128, width]
        weights = v1.cast(mask, v1.float32)[:, :, None]
        pooled = v1.reduce_sum(hidden * weights, 1) / v1.maximum(v1.reduce_sum(weights, 1), 1.0)
        dense = v1.get_variable("output_weights", [width, 2])
        probabilities = v1.nn.softmax(v1.tanh(pooled) @ dense, name="probabilities")
        signatures = {consts.DEFAULT_SERVING_SIGNATURE_DEF_KEY: _signature(
            v1, {"input_ids": ids, "input_mask": mask, "segment_ids": segments},
            {"probabilities": probabilities}, consts.PREDICT_METHOD_NAME)}
        sess.run(v1.global_variables_initializer())
        return _save(v1, sess, target, signatures)


def build(out_dir: str | Path) -> Path:
    """All of the models under `out_dir` (one base path each); returns out_dir."""
    out = Path(out_dir)
    build_half_plus(out / "saved_model_half_plus_two_cpu", b=2.0)
    build_half_plus(out / "saved_model_half_plus_three", b=3.0)
    build_estimator(out / "estimator_linear")
    build_bert(out / "bert_tiny")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write the model base paths into")
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
