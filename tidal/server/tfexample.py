"""TF Serving's JSON `examples` (and `context`) as serialized tf.Example protos, for SavedModel classify/regress signatures.

The rules and messages follow tensorflow/serving's util/json_tensor.cc
(MakeExampleFromJsonObject, AddValueToFeature). A context is merged into each example
the way TF Serving's input_util.cc does it: the serialized context followed by the
serialized example, which protobuf parses as one message with the example's features
winning.
"""

from __future__ import annotations

import math

import numpy as np

from tidal.errors import InvalidArgument
from tidal.models.signatures import CLASSIFY
from tidal.server import tensors
from tidal.server.tensors import is_b64, json_text, json_type

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_KIND_NAME = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _example_pb2():
    # Only SavedModel signatures take serialized examples, so TensorFlow's protos are loaded by then.
    from tensorflow.core.example import example_pb2

    return example_pb2


def _kind_error(name: str, kind: str | None) -> InvalidArgument:
    return InvalidArgument(f"Unexpected element type in feature: {name} expecting type: {_KIND_NAME[kind]}")


def _add_value(val, name: str, feature, kind: str | None) -> str:
    """Append one JSON value to a Feature; returns the feature's kind (AddValueToFeature)."""
    t = type(val)
    if t is bool:
        want, value = "int64_list", int(val)
    elif t is int:
        if val > _INT64_MAX and val < (1 << 64):
            raise InvalidArgument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        if not _INT64_MIN <= val <= _INT64_MAX:
            raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: Number")
        want, value = "int64_list", val
    elif t is float:
        if math.isfinite(val) and abs(val) > _FLOAT32_MAX:
            raise InvalidArgument(f"Cannot convert JSON value: {json_text(val)} to float without loss of precision.")
        want, value = "float_list", val
    elif t is str:
        want, value = "bytes_list", val.encode("utf-8")
    elif t is dict and is_b64(val):
        want, value = "bytes_list", tensors.decode_b64(val)
    else:
        raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: {json_type(val)}")
    if kind is not None and kind != want:
        raise _kind_error(name, kind)
    getattr(feature, want).value.append(value)
    return want


def example_from_json(obj, example) -> None:
    """Fill a tf.train.Example from one JSON object of features (MakeExampleFromJsonObject)."""
    if type(obj) is not dict:
        raise InvalidArgument(f"Example must be JSON object but got JSON {json_type(obj)}")
    features = example.features.feature
    for name, content in obj.items():
        feature = features[name]
        kind = None
        for val in (content if type(content) is list else (content,)):
            kind = _add_value(val, name, feature, kind)


def serialized_examples(doc: dict, method: str) -> list[bytes]:
    """The request's examples, each with the context merged in, serialized."""
    pb2 = _example_pb2()
    prefix = b""
    if "context" in doc:
        context = pb2.Example()
        example_from_json(doc["context"], context)
        prefix = context.SerializeToString()
    if "examples" not in doc:
        verb = "classify" if method == CLASSIFY else "regress"
        raise InvalidArgument(f"JSON Value: {json_text(doc)} When method is {verb}, key 'examples' is "
                              "expected and was not found")
    examples = doc["examples"]
    if type(examples) is not list:
        raise InvalidArgument(f"JSON Value: {json_text(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidArgument(f"JSON Value: {json_text(doc)} 'examples' value is an empty array")
    out = []
    for obj in examples:
        example = pb2.Example()
        example_from_json(obj, example)
        out.append(prefix + example.SerializeToString())
    return out


def example_tensor(serialized: list[bytes]) -> np.ndarray:
    """A [batch] string tensor of serialized examples, as a signature's one input takes it."""
    arr = np.empty(len(serialized), dtype=object)
    arr[:] = serialized
    return arr


def serialized_inputs(doc: dict, sig, method: str) -> dict[str, np.ndarray]:
    """`examples` and `context` of a :classify/:regress request as the signature's one input."""
    (name,) = sig.inputs
    return {name: example_tensor(serialized_examples(doc, method))}
