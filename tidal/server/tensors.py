"""Tensor codecs shared by the REST adapters: datatype tables and JSON <-> numpy with TF Serving's rules.

The decoders have two paths that must agree: a fast one that lets numpy infer a
rectangular array from the parsed JSON and checks it with vectorised tests, and
an exact one that walks the value like TF Serving's json_tensor.cc and produces
its error messages. The fast path hands over to the exact one whenever it is
unsure (ragged lists, mixed types, strings, values out of range), so the
messages are always the exact path's.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass

import numpy as np
import orjson

from tidal.errors import InvalidArgument


@dataclass(frozen=True)
class DType:
    v2: str           # Open Inference Protocol name (TensorSpec.datatype)
    tf: str           # TF DataType enum name, as in metadata (DT_FLOAT)
    tf_short: str     # TF DataTypeString, as in error messages (float)
    np: np.dtype      # what the runtime receives
    kind: str         # "float", "int", "uint", "bool", "bytes"


_TABLE = [
    DType("BOOL", "DT_BOOL", "bool", np.dtype(np.bool_), "bool"),
    DType("UINT8", "DT_UINT8", "uint8", np.dtype(np.uint8), "uint"),
    DType("UINT16", "DT_UINT16", "uint16", np.dtype(np.uint16), "uint"),
    DType("UINT32", "DT_UINT32", "uint32", np.dtype(np.uint32), "uint"),
    DType("UINT64", "DT_UINT64", "uint64", np.dtype(np.uint64), "uint"),
    DType("INT8", "DT_INT8", "int8", np.dtype(np.int8), "int"),
    DType("INT16", "DT_INT16", "int16", np.dtype(np.int16), "int"),
    DType("INT32", "DT_INT32", "int32", np.dtype(np.int32), "int"),
    DType("INT64", "DT_INT64", "int64", np.dtype(np.int64), "int"),
    DType("FP16", "DT_HALF", "half", np.dtype(np.float16), "float"),
    DType("FP32", "DT_FLOAT", "float", np.dtype(np.float32), "float"),
    DType("FP64", "DT_DOUBLE", "double", np.dtype(np.float64), "float"),
    DType("BYTES", "DT_STRING", "string", np.dtype(object), "bytes"),
]
BY_V2: dict[str, DType] = {d.v2: d for d in _TABLE}
_BY_NP: dict[np.dtype, DType] = {d.np: d for d in _TABLE if d.kind != "bytes"}


def dtype_of_array(arr: np.ndarray) -> DType:
    """The datatype a runtime's output array is reported as."""
    found = _BY_NP.get(arr.dtype.newbyteorder("=") if arr.dtype.byteorder == ">" else arr.dtype)
    if found is not None:
        return found
    if arr.dtype.kind in "OSU":
        return BY_V2["BYTES"]
    raise InvalidArgument(f"output tensor of unsupported type {arr.dtype}")


def v2_dtype(name: str) -> DType:
    found = BY_V2.get(name)
    if found is None:
        raise InvalidArgument(f"unknown datatype {name!r}; expected one of {', '.join(BY_V2)}")
    return found


# -- JSON parsing -------------------------------------------------------------

_JSON_CONSTANTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def parse_json(body: bytes):
    """Parse a request body; NaN and (-)Infinity are accepted as TF Serving does."""
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson is strict JSON; the stdlib parser also takes NaN/Infinity. Only
        # worth a second parse when those tokens are there at all.
        if b"NaN" in body or b"Infinity" in body:
            try:
                return json.loads(body, parse_constant=_JSON_CONSTANTS.__getitem__)
            except (ValueError, RecursionError, UnicodeDecodeError):
                pass
        raise InvalidArgument(f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None


# -- messages in TF Serving's words ------------------------------------------

def json_text(val) -> str:
    """A JSON value as text, for error messages (bounded, never the whole body)."""
    if isinstance(val, float) and not math.isfinite(val):
        text = "NaN" if math.isnan(val) else ("Infinity" if val > 0 else "-Infinity")
    else:
        try:
            text = orjson.dumps(val, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        except TypeError:
            try:
                text = json.dumps(val, default=str)
            except RecursionError:  # nested deeper than either encoder goes: say so, not a 500
                text = f"<a {json_type(val).lower()} nested too deeply to show>"
    return text if len(text) <= 200 else text[:200] + "..."


def json_type(val) -> str:
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def _type_error(val, dt: DType) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {json_text(val)} Type: {json_type(val)} is not of expected type: {dt.tf_short}")


def is_b64(val) -> bool:
    return type(val) is dict and len(val) == 1 and type(val.get("b64")) is str


def decode_b64(val) -> bytes:
    if not is_b64(val):
        raise InvalidArgument(f"JSON Value: {json_text(val)} not formatted correctly for base64 data")
    try:
        return base64.b64decode(val["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("Unable to base64 decode") from None


# -- the exact path ----------------------------------------------------------

_INT_RANGE = {d.v2: (int(np.iinfo(d.np).min), int(np.iinfo(d.np).max)) for d in _TABLE if d.kind in ("int", "uint")}
# Largest integer each float type holds exactly (TF's IsLosslessDecimal).
_FLOAT_EXACT_INT = {"FP16": (1 << 11) - 1, "FP32": (1 << 24) - 1, "FP64": (1 << 53) - 1}
_FLOAT_MAX = {"FP16": float(np.finfo(np.float16).max), "FP32": float(np.finfo(np.float32).max),
              "FP64": float(np.finfo(np.float64).max)}
_LOSSY_NAME = {"FP16": "half", "FP32": "float", "FP64": "double"}


def _scalar(val, dt: DType, integral_floats: bool):
    """One leaf value converted to the Python value numpy will store (TF's AddValueToTensor)."""
    kind = dt.kind
    t = type(val)
    if kind == "float":
        if t is bool or (t is not int and t is not float):
            raise _type_error(val, dt)
        if t is int:
            if abs(val) > _FLOAT_EXACT_INT[dt.v2]:
                raise InvalidArgument(
                    f"Cannot convert JSON value: {val} to {_LOSSY_NAME[dt.v2]} without loss of precision.")
        elif math.isfinite(val) and abs(val) > _FLOAT_MAX[dt.v2]:
            raise InvalidArgument(
                f"Cannot convert JSON value: {json_text(val)} to {_LOSSY_NAME[dt.v2]} without loss of precision.")
        return val
    if kind in ("int", "uint"):
        if t is float and integral_floats and math.isfinite(val) and val == int(val):
            val, t = int(val), int
        if t is not int:
            raise _type_error(val, dt)
        lo, hi = _INT_RANGE[dt.v2]
        if not lo <= val <= hi:
            raise _type_error(val, dt)
        return val
    if kind == "bool":
        if t is not bool:
            raise _type_error(val, dt)
        return val
    # bytes
    if t is str:
        return val
    if t is dict:
        return decode_b64(val)
    raise _type_error(val, dt)


def dense_shape(val) -> list[int]:
    """The shape a JSON value claims, read along its first elements (TF's GetDenseTensorShape)."""
    shape = []
    while type(val) is list:
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def exact_tensor(val, dt: DType, *, integral_floats: bool = False) -> np.ndarray:
    """Convert one JSON value to a tensor, walking it element by element with TF Serving's checks."""
    shape = dense_shape(val)
    rank = len(shape)
    flat: list = []

    def fill(v, level: int) -> None:
        if type(v) is not list:
            if level != rank:
                raise InvalidArgument(
                    f"JSON Value: {json_text(v)} found at incorrect level: {level + 1} in the JSON DOM. "
                    f"Expected at level: {rank}")
            flat.append(_scalar(v, dt, integral_floats))
            return
        if level >= rank:
            raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(v) != shape[level]:
            raise InvalidArgument(
                f"Encountered list at unexpected size: {len(v)} at level: {level} expected size: {shape[level]}")
        for item in v:
            fill(item, level + 1)

    fill(val, 0)
    if dt.kind == "bytes":
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    return np.array(flat, dtype=dt.np).reshape(shape)


# -- the fast path -------------------------------------------------------------

# A number in the request whose integer part has at least this many digits, or an exponent,
# might be too big for the float type to hold exactly; without one, the magnitude check
# (a numpy reduction, microseconds on a tiny tensor) is skipped.
_MAYBE_BIG = {"FP16": re.compile(rb"(?<![.\d])\d{4}|[eE][+-]?\d"),
              "FP32": re.compile(rb"(?<![.\d])\d{8}|[eE][+-]?\d"),
              "FP64": re.compile(rb"(?<![.\d])\d{16}|[eE][+-]?\d")}


def fast_tensor(val, dt: DType, body: bytes | None, integral_floats: bool) -> np.ndarray | None:
    """numpy's own inference plus vectorised checks; None when the exact path must decide.

    `body` is the raw request the value came from (None: unknown), scanned for what
    numpy's inference hides: boolean literals, and numbers big enough to need a check.
    """
    if dt.kind == "bytes":
        return None
    try:
        arr = np.array(val)
    except (ValueError, TypeError, OverflowError):
        return None
    k = arr.dtype.kind
    if arr.size == 0:
        return arr.astype(dt.np) if k in "fiub" else None
    if k in "fiu" and (body is None or b"true" in body or b"false" in body):
        return None  # numpy folds booleans into numbers; TF rejects them
    kind = dt.kind
    if kind == "float":
        if k in "iu":
            if arr.min() < -_FLOAT_EXACT_INT[dt.v2] or arr.max() > _FLOAT_EXACT_INT[dt.v2]:
                return None
        elif k != "f":
            return None
        elif (body is None or _MAYBE_BIG[dt.v2].search(body)) and np.abs(arr).max() > _FLOAT_EXACT_INT[dt.v2]:
            return None  # ints among floats are read as floats; only the exact path can tell them apart
        # Every magnitude is now below the exact-integer limit, so the cast cannot overflow.
        return arr.astype(dt.np)
    if kind in ("int", "uint"):
        if k == "f":
            if not integral_floats or not np.isfinite(arr).all() or (arr != np.floor(arr)).any():
                return None
        elif k not in "iu":
            return None
        lo, hi = _INT_RANGE[dt.v2]
        if arr.min() < lo or arr.max() > hi:
            return None
        return arr.astype(dt.np)
    if kind == "bool":
        return arr if k == "b" else None
    return None


def json_to_tensor(val, dt: DType, body: bytes | None = None, *, integral_floats: bool = False) -> np.ndarray:
    """One JSON value (scalar or nested lists) as a tensor of `dt`; `body`: the raw request it came from."""
    out = fast_tensor(val, dt, body, integral_floats)
    if out is not None:
        return out
    return exact_tensor(val, dt, integral_floats=integral_floats)


# -- encoding ------------------------------------------------------------------

DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY


def _nonfinite_fragment(arr: np.ndarray) -> orjson.Fragment:
    """A float tensor holding NaN or Infinity, written with TF Serving's tokens.

    orjson writes non-finite numbers as null, so such tensors go through the
    stdlib encoder. Formatting through numpy's str keeps float32's shortest
    form (0.2, not 0.20000000298023224).
    """
    as64 = arr.astype(str).astype(np.float64) if arr.dtype != np.float64 else arr
    return orjson.Fragment(json.dumps(as64.tolist(), allow_nan=True, separators=(",", ":")))


def _bytes_text(v) -> str:
    if type(v) is bytes:
        return v.decode("utf-8", "replace")
    return v if type(v) is str else str(v)


def _b64_text(v) -> dict:
    raw = v if type(v) is bytes else str(v).encode("utf-8")
    return {"b64": base64.b64encode(raw).decode("ascii")}


def jsonable(arr: np.ndarray, as_b64: bool = False, finite_checked: bool = False):
    """Something orjson writes as this tensor's nested lists (numpy arrays pass through untouched).

    With `finite_checked=False` float tensors are handed to orjson as they are,
    which writes NaN and Infinity as null; callers look for b"null" in the
    result (it cannot appear otherwise in a numeric tensor) and only then
    encode again with the check, keeping the common case free of it.
    """
    k = arr.dtype.kind
    if k == "f":
        if finite_checked and arr.size and not np.isfinite(arr).all():
            return _nonfinite_fragment(arr)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    if k in "iub":
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    conv = _b64_text if as_b64 else _bytes_text
    if arr.ndim == 0:
        return conv(arr.item())
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8).tolist()
    flat = [conv(v) for v in arr.reshape(-1).tolist()]
    return _nest(flat, arr.shape)


def _nest(flat: list, shape: tuple) -> list:
    for dim in reversed(shape[1:]):
        flat = [flat[i:i + dim] for i in range(0, len(flat), dim)]
    return flat


def dumps(obj) -> bytes:
    return orjson.dumps(obj, option=DUMPS_OPTS)
