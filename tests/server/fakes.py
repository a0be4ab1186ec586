"""A tiny in-memory model manager and servables for the protocol adapters' unit tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from tidal.errors import InvalidArgument, NotFound


@dataclass(frozen=True)
class Spec:
    name: str
    datatype: str
    shape: tuple

    @property
    def dtype(self):
        return np.dtype(_NP[self.datatype])


@dataclass(frozen=True)
class Sig:
    name: str
    method: str
    inputs: dict
    outputs: dict
    serialized_examples: bool = False


@dataclass
class Status:
    version: int
    state: str = "AVAILABLE"
    error_code: str = "OK"
    error_message: str = ""


_NP = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BYTES": object,
       "BOOL": np.bool_, "UINT8": np.uint8, "FP16": np.float16}


class FakeServable:
    def __init__(self, name, version, signatures, fn, platform="onnxruntime_onnx"):
        self.name = name
        self.version = version
        self.platform = platform
        self.signatures = signatures
        self.fn = fn
        self.calls = []
        self.delay = 0.0

    async def predict(self, signature_name, inputs):
        sig = self.signatures.get(signature_name)
        if sig is None:
            raise InvalidArgument(f"no signature {signature_name}")
        if set(inputs) != set(sig.inputs):
            raise InvalidArgument(f"inputs {sorted(inputs)} do not match {sorted(sig.inputs)}")
        for n, spec in sig.inputs.items():
            arr = inputs[n]
            if arr.dtype != np.dtype(_NP[spec.datatype]):
                raise InvalidArgument(f"input '{n}' expects {spec.datatype}, got {arr.dtype}")
            if len(arr.shape) != len(spec.shape) or any(e >= 0 and g != e for g, e in zip(arr.shape, spec.shape)):
                raise InvalidArgument(f"input '{n}' has shape {list(arr.shape)}, expects {list(spec.shape)}")
        self.calls.append((signature_name, inputs))
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.fn(signature_name, inputs)


def half_plus_two(version=123, name="half_plus_two"):
    sig = Sig("serving_default", "tensorflow/serving/predict",
              {"x": Spec("x", "FP32", (-1,))}, {"y": Spec("y", "FP32", (-1,))})
    return FakeServable(name, version, {"serving_default": sig},
                        lambda s, i: {"y": (i["x"] * np.float32(0.5) + np.float32(2)).astype(np.float32)})


def multi():
    """Two inputs and three outputs, one of them bytes (`_bytes` suffix) and one a string."""
    sig = Sig("serving_default", "tensorflow/serving/predict",
              {"a": Spec("a", "INT64", (-1, 2)), "b": Spec("b", "FP32", (-1,)),
               "s_bytes": Spec("s_bytes", "BYTES", (-1,))},
              {"sum": Spec("sum", "FP32", (-1,)), "echo_bytes": Spec("echo_bytes", "BYTES", (-1,)),
               "upper": Spec("upper", "BYTES", (-1,))})

    def fn(s, i):
        raw = [v if isinstance(v, bytes) else v.encode() for v in i["s_bytes"].tolist()]
        echo = np.empty(len(raw), dtype=object)
        echo[:] = raw
        upper = np.empty(len(raw), dtype=object)
        upper[:] = [r.decode("utf-8", "replace").upper() for r in raw]
        return {"sum": (i["a"].sum(axis=1) + i["b"]).astype(np.float32), "echo_bytes": echo, "upper": upper}
    return FakeServable("multi", 1, {"serving_default": sig}, fn)


def classifier():
    """Like examples/sentiment: text in; label and probabilities out; plus a classify signature."""
    predict = Sig("serving_default", "tensorflow/serving/predict",
                  {"text": Spec("text", "BYTES", (-1,))},
                  {"label": Spec("label", "BYTES", (-1,)), "probabilities": Spec("probabilities", "FP32", (-1, 2))})
    classify = Sig("classification", "tensorflow/serving/classify",
                   {"text": Spec("text", "BYTES", (-1,))},
                   {"classes": Spec("classes", "BYTES", (-1, 2)), "scores": Spec("scores", "FP32", (-1, 2))})
    regress = Sig("regression", "tensorflow/serving/regress",
                  {"text": Spec("text", "BYTES", (-1,))}, {"outputs": Spec("outputs", "FP32", (-1,))})

    def fn(s, i):
        texts = [t if isinstance(t, str) else t.decode() for t in i["text"].tolist()]
        pos = np.array([0.9 if "good" in t else 0.2 for t in texts], dtype=np.float32)
        probs = np.stack([1 - pos, pos], axis=1).astype(np.float32)
        if s == "classification":
            classes = np.empty((len(texts), 2), dtype=object)
            classes[:, 0], classes[:, 1] = "negative", "positive"
            return {"classes": classes, "scores": probs}
        if s == "regression":
            return {"outputs": pos}
        label = np.empty(len(texts), dtype=object)
        label[:] = ["positive" if p > 0.5 else "negative" for p in pos]
        return {"label": label, "probabilities": probs}
    return FakeServable("sentiment", 1, {"serving_default": predict, "classification": classify,
                                         "regression": regress}, fn)


class FakeManager:
    def __init__(self, servables, labels=None, loading=()):
        self.servables = {}
        for s in servables:
            self.servables.setdefault(s.name, {})[s.version] = s
        self.labels = labels or {}
        self.loading = dict(loading)  # name -> list[Status] of versions not available
        self.ready = True

    def model_names(self):
        return sorted(set(self.servables) | set(self.loading))

    def resolve(self, name, version=None, label=None):
        versions = self.servables.get(name, {})
        if label is not None:
            v = self.labels.get((name, label))
            if v is None:
                raise NotFound(f"Unrecognized servable version label: {label}")
            version = v
        if version is None:
            if not versions:
                raise NotFound(f"Servable not found for request: Latest({name})")
            return versions[max(versions)]
        if version not in versions:
            raise NotFound(f"Servable not found for request: Specific({name}, {version})")
        return versions[version]

    def status(self, name, version=None, label=None):
        if name not in self.servables and name not in self.loading:
            raise NotFound(f"Could not find any versions of model {name}")
        out = [Status(v) for v in sorted(self.servables.get(name, {}))] + list(self.loading.get(name, []))
        if label is not None:
            version = self.labels.get((name, label))
        if version is not None:
            out = [s for s in out if s.version == version]
            if not out:
                raise NotFound(f"Could not find version {version} of model {name}")
        return out
