"""ONNX Runtime: signatures from the model's own metadata, and classify/regress views of classifier and regressor outputs."""

from __future__ import annotations

import logging
import os
import re

import numpy as np
import onnxruntime as ort

from tidal.errors import FailedPrecondition, Internal, InvalidArgument
from tidal.models.config import RuntimeOptions, usable_cores
from tidal.models.signatures import (
    CLASSIFY, CLASSIFY_SIGNATURE, DEFAULT_SIGNATURE, PREDICT, REGRESS, REGRESS_SIGNATURE, Signature, TensorSpec,
)

log = logging.getLogger(__name__)

PLATFORM = "onnxruntime_onnx"

_ONNX_TO_V2 = {
    "float": "FP32", "double": "FP64", "float16": "FP16",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "bool": "BOOL", "string": "BYTES",
}
_TENSOR = re.compile(r"tensor\((\w+)\)")
# skl2onnx's ZipMap output: one {class: probability} dict per row.
_ZIPMAP = re.compile(r"seq\(map\((int64|string),\s*tensor\((float|double)\)\)\)")

# After a run with this many bytes of inputs, onnxruntime's CPU arena (which otherwise keeps its
# peak for good) gives back what the run took: a large request leaves the process near its baseline.
_SHRINK_AFTER_BYTES = 16 << 20
_CLASSIFIER_OPS = ("LinearClassifier", "TreeEnsembleClassifier", "SVMClassifier", "ZipMap")


def _dim(d) -> int:
    return d if isinstance(d, int) and d >= 0 else -1


def _find_model_file(path: str) -> str:
    names = sorted(f for f in os.listdir(path) if f.lower().endswith(".onnx"))
    if "model.onnx" in names:
        return os.path.join(path, "model.onnx")
    if len(names) == 1:
        return os.path.join(path, names[0])
    raise FailedPrecondition(
        f"several .onnx files in the version directory ({', '.join(names)}); name the one to serve model.onnx")


def _graph_class_labels(model_file: str) -> list | None:
    """Class labels written in a classifier node's attributes (needs the onnx package)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(model_file, load_external_data=False)
    except Exception:
        return None
    for node in model.graph.node:
        if node.op_type not in _CLASSIFIER_OPS:
            continue
        for attr in node.attribute:
            if attr.name in ("classlabels_strings",):
                return [s.decode("utf-8", "replace") for s in attr.strings]
            if attr.name in ("classlabels_ints", "classlabels_int64s") and attr.ints:
                return list(attr.ints)
    return None


class OnnxRuntime:
    """An onnxruntime InferenceSession with explicit thread settings."""

    platform = PLATFORM

    def __init__(self, model_file: str, options: RuntimeOptions) -> None:
        so = ort.SessionOptions()
        # onnxruntime's own default counts the machine's cores, not the ones this process may use
        # (taskset, cgroups), and oversubscribes a pinned server.
        so.intra_op_num_threads = options.intra_op_threads or usable_cores()
        so.inter_op_num_threads = options.inter_op_threads
        so.log_severity_level = 3  # onnxruntime's warnings go to stderr unasked otherwise
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self._session = ort.InferenceSession(model_file, so, providers=providers)
        except Exception as e:
            raise FailedPrecondition(f"onnxruntime cannot load {os.path.basename(model_file)}: {_clean(e)}") from None
        self._inputs: dict[str, TensorSpec] = {}
        for arg in self._session.get_inputs():
            m = _TENSOR.fullmatch(arg.type)
            if not m or m.group(1) not in _ONNX_TO_V2:
                raise FailedPrecondition(f"input '{arg.name}' has type {arg.type}, which Tidal cannot feed")
            self._inputs[arg.name] = TensorSpec(arg.name, _ONNX_TO_V2[m.group(1)], tuple(_dim(d) for d in arg.shape))
        self._string_inputs = tuple(n for n, spec in self._inputs.items() if spec.datatype == "BYTES")
        self._outputs: dict[str, TensorSpec] = {}
        self._zipmaps: set[str] = set()
        for arg in self._session.get_outputs():
            m = _TENSOR.fullmatch(arg.type)
            if m and m.group(1) in _ONNX_TO_V2:
                self._outputs[arg.name] = TensorSpec(arg.name, _ONNX_TO_V2[m.group(1)], tuple(_dim(d) for d in arg.shape))
            elif _ZIPMAP.fullmatch(arg.type):
                self._zipmaps.add(arg.name)
                self._outputs[arg.name] = TensorSpec(arg.name, "FP32", (-1, -1))
            else:
                log.warning("output %r of type %s is not served", arg.name, arg.type)
        if not self._outputs:
            raise FailedPrecondition("the model has no output Tidal can serve")
        self._output_names = list(self._outputs)
        self._labels: list | None = None
        self.signatures: dict[str, Signature] = {
            DEFAULT_SIGNATURE: Signature(DEFAULT_SIGNATURE, PREDICT, dict(self._inputs), dict(self._outputs)),
        }
        self._classify = self._find_classifier(model_file)
        self._regress = self._find_regressor()

    # -- classify / regress views ---------------------------------------------------------

    def _find_classifier(self, model_file: str) -> tuple[str, str] | None:
        label = next((n for n, s in self._outputs.items()
                      if "label" in n.lower() and s.datatype in ("INT64", "INT32", "BYTES") and len(s.shape) in (1, 2)
                      and (len(s.shape) == 1 or s.shape[1] == 1)), None)
        probs = next((n for n, s in self._outputs.items()
                      if n != label and ("prob" in n.lower() or "score" in n.lower())
                      and s.datatype in ("FP32", "FP64") and len(s.shape) == 2), None)
        if label is None or probs is None:
            return None
        self._labels = _graph_class_labels(model_file)
        if probs in self._zipmaps and self._labels:
            self._outputs[probs] = TensorSpec(probs, "FP32", (-1, len(self._labels)))
            default = self.signatures[DEFAULT_SIGNATURE]
            self.signatures[DEFAULT_SIGNATURE] = Signature(default.name, default.method, default.inputs,
                                                           dict(self._outputs))
        width = len(self._labels) if self._labels else (self._outputs[probs].shape[1] if probs not in self._zipmaps else -1)
        self.signatures[CLASSIFY_SIGNATURE] = Signature(
            CLASSIFY_SIGNATURE, CLASSIFY, dict(self._inputs),
            {"classes": TensorSpec("classes", "BYTES", (-1, width)), "scores": TensorSpec("scores", "FP32", (-1, width))})
        return label, probs

    def _find_regressor(self) -> str | None:
        if len(self._outputs) != 1:
            return None
        name, spec = next(iter(self._outputs.items()))
        if name in self._zipmaps or spec.datatype not in ("FP32", "FP64", "FP16"):
            return None
        if not (len(spec.shape) == 1 or (len(spec.shape) == 2 and spec.shape[1] == 1)) or spec.shape[0] != -1:
            return None
        self.signatures[REGRESS_SIGNATURE] = Signature(
            REGRESS_SIGNATURE, REGRESS, dict(self._inputs), {"outputs": TensorSpec("outputs", "FP32", (-1,))})
        return name

    # -- running ----------------------------------------------------------------------------

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = inputs
        for name in self._string_inputs:
            arr = inputs[name]
            if arr.size and any(isinstance(v, bytes) for v in arr.flat):
                # onnxruntime's string tensors hold text
                if feed is inputs:
                    feed = dict(inputs)
                feed[name] = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                                       for v in arr.flat], dtype=object).reshape(arr.shape)
        return feed

    def _run(self, names: list[str], feed: dict[str, np.ndarray]) -> list:
        try:
            if sum(a.nbytes for a in feed.values()) > _SHRINK_AFTER_BYTES:
                return self._session.run(names, feed, self._shrink)
            return self._session.run(names, feed)
        except Exception as e:
            kind = type(e).__name__
            if kind in ("InvalidArgument", "InvalidGraph", "NotImplemented") or isinstance(e, (ValueError, TypeError)):
                raise InvalidArgument(f"the model rejected the input: {_clean(e)}") from None
            raise Internal(f"model run failed: {_clean(e)}") from None

    def _dense(self, name: str, value) -> np.ndarray:
        if name not in self._zipmaps:
            return value
        return self._zipmap_to_dense(value)[1]

    def _zipmap_to_dense(self, rows: list[dict]) -> tuple[list, np.ndarray]:
        keys = self._labels
        if rows and not (keys and all(k in rows[0] for k in keys)):
            keys = list(rows[0].keys())
        keys = keys or []
        scores = np.array([[row[k] for k in keys] for row in rows], dtype=np.float32).reshape(len(rows), len(keys))
        return keys, scores

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = self._feed(inputs)
        if signature_name == DEFAULT_SIGNATURE:
            values = self._run(self._output_names, feed)
            if not self._zipmaps:
                return dict(zip(self._output_names, values))
            return {n: self._dense(n, v) for n, v in zip(self._output_names, values)}
        if signature_name == CLASSIFY_SIGNATURE and self._classify is not None:
            label, probs = self._classify
            _, prob_value = self._run([label, probs], feed)
            if probs in self._zipmaps:
                keys, scores = self._zipmap_to_dense(prob_value)
            else:
                scores = np.asarray(prob_value, dtype=np.float32)
                keys = self._labels if self._labels and len(self._labels) == scores.shape[1] else list(range(scores.shape[1]))
            classes = np.empty(scores.shape, dtype=object)
            classes[:] = [str(k) for k in keys] if scores.shape[1] else []
            return {"classes": classes, "scores": scores}
        if signature_name == REGRESS_SIGNATURE and self._regress is not None:
            (value,) = self._run([self._regress], feed)
            return {"outputs": np.asarray(value, dtype=np.float32).reshape(-1)}
        raise InvalidArgument(f"unknown signature '{signature_name}'")

    def close(self) -> None:
        self._session = None


def _clean(e: BaseException) -> str:
    # "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : msg" -> "msg"
    text = str(e).strip()
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    return text if len(text) <= 500 else text[:500] + "..."


def load(path: str, options: RuntimeOptions) -> OnnxRuntime:
    return OnnxRuntime(_find_model_file(path), options)
