"""TensorFlow SavedModel runtime: every signature of the `serve` meta graph, run through its concrete function.

Imported only when a version directory holds a SavedModel (see the registry), because
`import tensorflow` takes seconds and hundreds of megabytes.
"""

from __future__ import annotations

import logging
import os
import re
import threading

import numpy as np

# TensorFlow's C++ runtime logs a warning for every op that rejects an input: a stream of bad
# requests would flood the server log with what the client already got as an error. Must be set
# before TensorFlow loads; an explicit setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2  # noqa: E402

from tidal.errors import FailedPrecondition, Internal, InvalidArgument  # noqa: E402
from tidal.models.config import RuntimeOptions, usable_cores  # noqa: E402
from tidal.models.signatures import CLASSIFY, PREDICT, REGRESS, Signature, TensorSpec  # noqa: E402

log = logging.getLogger(__name__)

PLATFORM = "tensorflow"
SERVE_TAG = "serve"  # the meta graph TF Serving loads
# Written by tf.saved_model.save to run initializers; not something a client calls.
_INIT_OP_SIGNATURE = "__saved_model_init_op"

_TF_TO_V2 = {
    types_pb2.DT_FLOAT: "FP32", types_pb2.DT_DOUBLE: "FP64", types_pb2.DT_HALF: "FP16",
    types_pb2.DT_INT8: "INT8", types_pb2.DT_INT16: "INT16", types_pb2.DT_INT32: "INT32", types_pb2.DT_INT64: "INT64",
    types_pb2.DT_UINT8: "UINT8", types_pb2.DT_UINT16: "UINT16", types_pb2.DT_UINT32: "UINT32",
    types_pb2.DT_UINT64: "UINT64", types_pb2.DT_BOOL: "BOOL", types_pb2.DT_STRING: "BYTES",
}

# TensorFlow's thread pools belong to the process and are fixed once its runtime starts.
_threads_lock = threading.Lock()
_threads: tuple[int, int] | None = None


def configure_threads(options: RuntimeOptions) -> tuple[int, int]:
    """Set TensorFlow's intra/inter-op pools (once per process); return the (intra, inter) in force.

    Like the ONNX runtime, 0 means the cores this process may use: TensorFlow's own default
    counts the machine's cores and oversubscribes a pinned server.
    """
    global _threads
    want = (options.intra_op_threads or usable_cores(), options.inter_op_threads or usable_cores())
    with _threads_lock:
        if _threads is None:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(want[0])
                tf.config.threading.set_inter_op_parallelism_threads(want[1])
                _threads = want
            except RuntimeError:  # something in this process already started TensorFlow's runtime
                _threads = (tf.config.threading.get_intra_op_parallelism_threads(),
                            tf.config.threading.get_inter_op_parallelism_threads())
                log.warning("TensorFlow already started with intra/inter-op threads %s; %s not applied",
                            _threads, want)
        elif _threads != want:
            log.warning("TensorFlow's thread pools are per process and already set to intra/inter-op %s; "
                        "this model asked for %s", _threads, want)
        return _threads


def read_meta_graph(path: str, tags: tuple[str, ...] = (SERVE_TAG,)) -> meta_graph_pb2.MetaGraphDef:
    """The meta graph carrying all of `tags` from saved_model.pb (or .pbtxt) in a version directory."""
    if isinstance(tags, str):
        tags = (tags,)
    model = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    try:
        if os.path.exists(pb):
            with open(pb, "rb") as f:
                model.ParseFromString(f.read())
        else:
            with open(os.path.join(path, "saved_model.pbtxt"), encoding="utf-8") as f:
                text_format.Parse(f.read(), model)
    except OSError as e:
        raise FailedPrecondition(f"cannot read the SavedModel: {e.strerror or e}") from None
    except Exception as e:  # protobuf's DecodeError / ParseError
        raise FailedPrecondition(f"saved_model.pb is not a valid SavedModel: {_clean(e)}") from None
    for meta_graph in model.meta_graphs:
        if set(tags) <= set(meta_graph.meta_info_def.tags):
            return meta_graph
    found = [list(m.meta_info_def.tags) for m in model.meta_graphs]
    raise FailedPrecondition(f"the SavedModel has no meta graph tagged '{','.join(tags)}' (its tags: {found}); "
                             f"choose one with --saved_model_tags")


class _Unsupported(Exception):
    """A signature Tidal cannot serve; the others still are."""


def _tensor_spec(key: str, info, output: bool = False) -> TensorSpec:
    sparse = info.WhichOneof("encoding") != "name"
    if sparse and output:
        raise _Unsupported(f"output '{key}' is a sparse or composite tensor")
    dtype = info.dtype
    if sparse and not dtype and info.WhichOneof("encoding") == "composite_tensor":
        dtype = types_pb2.DT_STRING  # a composite has no one dtype; requests are refused anyway
    datatype = _TF_TO_V2.get(dtype)
    if datatype is None:
        raise _Unsupported(f"'{key}' has type {types_pb2.DataType.Name(dtype)}")
    if info.tensor_shape.unknown_rank:
        return TensorSpec(key, datatype, (), rank_known=False, sparse=sparse)
    return TensorSpec(key, datatype, tuple(d.size if d.size >= 0 else -1 for d in info.tensor_shape.dim),
                      sparse=sparse)


def signature_from_def(name: str, sig_def, tf1: bool = False) -> Signature:
    """A Tidal Signature for a SignatureDef; _Unsupported when it cannot be served.

    `tf1`: the SavedModel is a TF1 graph (no object graph), whose declared shapes TF Serving does not enforce.
    """
    inputs = {k: _tensor_spec(k, v) for k, v in sorted(sig_def.inputs.items())}
    outputs = {k: _tensor_spec(k, v, output=True) for k, v in sorted(sig_def.outputs.items())}
    if not outputs:
        raise _Unsupported("it has no outputs")
    method = sig_def.method_name or PREDICT
    examples = False
    if method in (CLASSIFY, REGRESS):
        # TF Serving feeds a classify/regress signature one string tensor of serialized tf.Examples. One whose
        # input is another tensor (TF Serving's own regress_x2_to_y3) is still served: Predict runs it, as in
        # TF Serving; Classify/Regress then read its input by name from the examples' features.
        only = next(iter(inputs.values())) if len(inputs) == 1 else None
        examples = only is not None and only.datatype == "BYTES" and not only.sparse
    elif method != PREDICT:
        log.info("signature %r has method %r; served as predict", name, method)
        method = PREDICT
    return Signature(name, method, inputs, outputs, serialized_examples=examples, strict_shapes=not tf1)


class TensorFlowRuntime:
    """A loaded SavedModel; `run` calls a signature's concrete function with numpy inputs."""

    platform = PLATFORM

    def __init__(self, path: str, tags: tuple[str, ...] = (SERVE_TAG,)) -> None:
        meta_graph = read_meta_graph(path, tags)
        try:
            self._model = tf.saved_model.load(path, tags=list(meta_graph.meta_info_def.tags))
        except Exception as e:
            raise FailedPrecondition(f"TensorFlow cannot load the SavedModel: {_clean(e)}") from None
        self.signatures: dict[str, Signature] = {}
        self._functions = {}
        tf1 = not meta_graph.object_graph_def.nodes  # written by TF1's SavedModelBuilder or an estimator
        for name, sig_def in sorted(meta_graph.signature_def.items()):
            if name == _INIT_OP_SIGNATURE:
                continue
            fn = self._model.signatures.get(name)
            try:
                sig = signature_from_def(name, sig_def, tf1=tf1)
                if fn is None and not any(spec.sparse for spec in sig.inputs.values()):
                    raise _Unsupported("TensorFlow did not restore a function for it")
            except _Unsupported as e:
                log.warning("signature %r is not served: %s", name, e)
                continue
            self.signatures[name] = sig
            self._functions[name] = fn
        self._tf1 = frozenset(self.signatures) if tf1 else frozenset()
        if not self.signatures:
            raise FailedPrecondition(
                f"the SavedModel has no signature Tidal can serve (signatures: {sorted(meta_graph.signature_def)})")

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fn = self._functions.get(signature_name)
        if fn is None:
            sig = self.signatures.get(signature_name)
            if sig is not None:
                sig.refuse_sparse()
            raise InvalidArgument(f"unknown signature '{signature_name}'")
        try:
            if signature_name in self._tf1:
                # As tensors, a TF1 graph's pruned function takes any shape its ops accept (TF Serving's
                # behaviour); numpy arrays would be bound to the declared shape and refused.
                inputs = {k: tf.convert_to_tensor(v) for k, v in inputs.items()}
            outputs = fn(**inputs)
        except tf.errors.InvalidArgumentError as e:
            raise InvalidArgument(f"the model rejected the input: {_clean(e)}") from None
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"the model rejected the input: {_clean(e)}") from None
        except tf.errors.OpError as e:
            raise Internal(f"model run failed: {_clean(e)}") from None
        return {name: value.numpy() for name, value in outputs.items()}

    def close(self) -> None:
        self._functions = {}
        self._model = None


# A graph's error also carries the Python stack that built the failing op ('File "..."' lines): the
# builder's and the server's files, nothing the client needs.
_NOISE = re.compile(r"^(Graph execution error:|Detected at node|<stack traces unavailable>|\s*\[\[|\s*$|"
                    r"\s*File \"|\s*Node: )")


def _clean(e: BaseException) -> str:
    """The message of a TensorFlow error without its graph-location boilerplate."""
    text = getattr(e, "message", None) or str(e)
    lines = [line.strip() for line in text.splitlines() if not _NOISE.match(line)]
    text = " ".join(lines) or text.strip()
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    return text if len(text) <= 500 else text[:500] + "..."


def load(path: str, options: RuntimeOptions) -> TensorFlowRuntime:
    configure_threads(options)
    return TensorFlowRuntime(path, tuple(options.saved_model_tags))
