"""Tensor and signature descriptions shared by runtimes, the batcher and the protocol adapters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"

DEFAULT_SIGNATURE = "serving_default"
# TF estimators export their classify/regress signatures under these names; Tidal does too.
CLASSIFY_SIGNATURE = "classification"
REGRESS_SIGNATURE = "regression"

# V2 datatype -> numpy dtype. BYTES tensors are numpy object arrays (of str or bytes).
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in V2_TO_NUMPY.items()}


def v2_datatype(dtype: np.dtype) -> str:
    """The V2 name of a numpy dtype (strings of any width are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return NUMPY_TO_V2[dtype]
    except KeyError:
        raise ValueError(f"no V2 datatype for numpy dtype {dtype}") from None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    # False: the model declares no rank (shape is then ()); the request's tensor gives it, as in TF Serving.
    rank_known: bool = True
    # A sparse (COO) or composite input: listed, but requests are refused with a line naming it.
    sparse: bool = False

    @property
    def dtype(self) -> np.dtype:
        return V2_TO_NUMPY[self.datatype]

    @property
    def batched(self) -> bool:
        """True when the first dimension is variable, so requests can be stacked along it."""
        return self.rank_known and len(self.shape) > 0 and self.shape[0] == -1


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    method: str
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)
    # The one input takes serialized tf.Examples (a SavedModel's classify/regress signature), so the
    # adapters feed :classify/:regress examples to it as protos rather than as tensors per feature.
    serialized_examples: bool = False
    # False for TF1 graphs: TF Serving feeds them whatever shape the request has and lets the graph's
    # ops decide (half_plus_two's x is declared [-1, 1] and fed [3]), so only dtypes are checked.
    strict_shapes: bool = True

    @property
    def batchable(self) -> bool:
        """Every input has a variable first dimension (so every output is assumed to follow it)."""
        return bool(self.inputs) and all(spec.batched for spec in self.inputs.values())

    def refuse_sparse(self) -> None:
        """InvalidArgument naming the sparse inputs, when the signature has any."""
        from tidal.errors import InvalidArgument

        sparse = [name for name, spec in self.inputs.items() if spec.sparse]
        if sparse:
            raise InvalidArgument(
                f"signature '{self.name}' takes sparse input {', '.join(repr(n) for n in sparse)}; Tidal feeds "
                f"dense tensors only (export the signature with a dense input and sparsify inside the graph)")


def _dims(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def conform(signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check request tensors against a signature and convert their dtypes; InvalidArgument on a mismatch.

    Integers are accepted for float inputs and narrower/wider types of the same kind are
    converted; floats for integer inputs, numbers for strings and strings for numbers are not.
    """
    from tidal.errors import InvalidArgument

    signature.refuse_sparse()
    specs = signature.inputs
    if len(inputs) != len(specs) or any(name not in specs for name in inputs):
        unknown = sorted(n for n in inputs if n not in specs)
        missing = sorted(n for n in specs if n not in inputs)
        parts = []
        if unknown:
            parts.append("unknown input " + ", ".join(repr(n) for n in unknown))
        if missing:
            parts.append("missing input " + ", ".join(repr(n) for n in missing))
        raise InvalidArgument(
            f"{'; '.join(parts)} for signature '{signature.name}' (expected inputs: "
            f"{', '.join(repr(n) for n in specs)})")
    out: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        arr = inputs[name]
        if not isinstance(arr, np.ndarray):
            try:
                arr = np.asarray(arr)
            except (ValueError, TypeError):
                raise InvalidArgument(f"input '{name}' is not a rectangular tensor") from None
        want = spec.dtype
        if arr.dtype != want:
            kind = arr.dtype.kind
            if spec.datatype == "BYTES":
                if kind not in "USO":
                    raise InvalidArgument(
                        f"input '{name}' expects BYTES (strings), got {_kind_name(arr.dtype)} values")
                arr = arr.astype(object)
            elif kind in "biuf" and (np.can_cast(arr.dtype, want, "same_kind") or (kind == "b" and want.kind in "iu")):
                arr = arr.astype(want)
            else:
                raise InvalidArgument(
                    f"input '{name}' expects {spec.datatype}, got {_kind_name(arr.dtype)} values")
        shape = arr.shape
        if not (signature.strict_shapes and spec.rank_known):
            out[name] = arr
            continue
        if len(shape) != len(spec.shape):
            raise InvalidArgument(
                f"input '{name}' expects rank {len(spec.shape)} (shape {_dims(spec.shape)}), "
                f"got rank {len(shape)} (shape {_dims(shape)})")
        for got, expected in zip(shape, spec.shape):
            if expected >= 0 and got != expected:
                raise InvalidArgument(f"input '{name}' expects shape {_dims(spec.shape)}, got {_dims(shape)}")
        out[name] = arr
    return out


def _kind_name(dtype: np.dtype) -> str:
    if dtype.kind in "USO":
        return "string" if dtype.kind in "US" else "mixed/object"
    try:
        return v2_datatype(dtype)
    except ValueError:
        return str(dtype)


class InputChecker:
    """`conform` for one signature, with a fast path for requests that already match exactly."""

    __slots__ = ("signature", "_checks", "_count")

    def __init__(self, signature: Signature) -> None:
        self.signature = signature
        # rank -1: any rank (an unknown rank, or a TF1 graph whose shapes are only advice)
        self._checks = tuple(
            (name, spec.dtype, len(spec.shape), tuple((i, d) for i, d in enumerate(spec.shape) if d >= 0))
            if signature.strict_shapes and spec.rank_known else (name, spec.dtype, -1, ())
            for name, spec in signature.inputs.items())
        self._count = len(self._checks)
        if any(spec.sparse for spec in signature.inputs.values()):
            self._count = -1  # always the slow path, which refuses

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(inputs) != self._count:
            return conform(self.signature, inputs)
        ndarray = np.ndarray
        for name, dtype, rank, fixed in self._checks:
            arr = inputs.get(name)
            if type(arr) is not ndarray or arr.dtype != dtype or (rank >= 0 and arr.ndim != rank):
                return conform(self.signature, inputs)
            if fixed:
                shape = arr.shape
                for i, d in fixed:
                    if shape[i] != d:
                        return conform(self.signature, inputs)
        return inputs
