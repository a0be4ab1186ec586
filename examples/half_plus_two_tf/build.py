"""Builds TF Serving's half_plus_two test model as a TensorFlow SavedModel, with its predict, classify and regress signatures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_VERSION = 123  # TF Serving's saved_model_half_plus_two ships version 00000123
PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
# Signature -> method, as in TF Serving's testdata (saved_model_half_plus_two.py).
METHODS = {
    "serving_default": PREDICT,   # x -> y = 0.5x + 2
    "classify_x_to_y": CLASSIFY,  # serialized tf.Example with float feature x -> scores = 0.5x + 2
    "regress_x_to_y": REGRESS,    # serialized tf.Example with float feature x -> outputs = 0.5x + 2
    "regress_x_to_y2": REGRESS,   # serialized tf.Example with float feature x -> outputs = 0.5x + 3
}


def _module():
    import tensorflow as tf

    features = {"x": tf.io.FixedLenFeature([1], tf.float32)}

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            # Variables rather than constants, so loading exercises variable restore as TF Serving's model does.
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        def _parse(self, serialized):
            return tf.io.parse_example(serialized, features)["x"]  # [batch, 1]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify_x_to_y(self, inputs):
            return {"scores": self.a * self._parse(inputs) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_x_to_y(self, inputs):
            return {"outputs": self.a * self._parse(inputs) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_x_to_y2(self, inputs):
            return {"outputs": self.a * self._parse(inputs) + self.c}

    return HalfPlusTwo()


def set_methods(saved_model_pb: Path, methods: dict[str, str]) -> None:
    """Give signatures their TF Serving method names (tf.saved_model.save writes every one as predict)."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel()
    model.ParseFromString(saved_model_pb.read_bytes())
    for meta_graph in model.meta_graphs:
        for name, method in methods.items():
            if name not in meta_graph.signature_def:
                raise RuntimeError(f"signature {name!r} missing from the saved model")
            meta_graph.signature_def[name].method_name = method
    saved_model_pb.write_bytes(model.SerializeToString(deterministic=True))


def build(out_dir: str | Path, version: int = DEFAULT_VERSION) -> Path:
    """Write the SavedModel to `<out_dir>/<version>/` and return that directory."""
    import tensorflow as tf

    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    target = Path(out_dir) / str(version)
    module = _module()
    signatures = {
        "serving_default": module.predict,
        "classify_x_to_y": module.classify_x_to_y,
        "regress_x_to_y": module.regress_x_to_y,
        "regress_x_to_y2": module.regress_x_to_y2,
    }
    tf.saved_model.save(module, str(target), signatures=signatures)
    set_methods(target / "saved_model.pb", METHODS)
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
