"""TensorProto <-> numpy, with TensorFlow's rules (tensor_content or typed values; a short value list is padded with its last value)."""

from __future__ import annotations

import numpy as np

from tidal.errors import InvalidArgument
from tidal.models.signatures import v2_datatype

# Largest element count a request may ask for beyond the values it carries: TensorFlow pads a
# short value list with its last value, so a few bytes could otherwise claim gigabytes.
MAX_FILL_ELEMENTS = 1 << 24
MAX_RANK = 32  # as for JSON tensors (tidal.server.tensors.MAX_RANK)
MAX_DIM = 1 << 31  # no dimension of a real request is larger; numpy cannot even shape some beyond it

# (TF DataType enum value, V2 name, numpy dtype, typed value field)
_TABLE = [
    (1, "FP32", np.dtype(np.float32), "float_val"),
    (2, "FP64", np.dtype(np.float64), "double_val"),
    (3, "INT32", np.dtype(np.int32), "int_val"),
    (4, "UINT8", np.dtype(np.uint8), "int_val"),
    (5, "INT16", np.dtype(np.int16), "int_val"),
    (6, "INT8", np.dtype(np.int8), "int_val"),
    (7, "BYTES", np.dtype(object), "string_val"),
    (9, "INT64", np.dtype(np.int64), "int64_val"),
    (10, "BOOL", np.dtype(np.bool_), "bool_val"),
    (17, "UINT16", np.dtype(np.uint16), "int_val"),
    (19, "FP16", np.dtype(np.float16), "half_val"),
    (22, "UINT32", np.dtype(np.uint32), "uint32_val"),
    (23, "UINT64", np.dtype(np.uint64), "uint64_val"),
]
_BY_ENUM = {t[0]: t for t in _TABLE}
BY_V2 = {t[1]: t for t in _TABLE}
DT_ENUM = {t[1]: t[0] for t in _TABLE}  # V2 name -> TF DataType enum value


# A value list this long is converted a slice at a time: each conversion holds the GIL, and a large
# message is converted in a worker thread while the event loop waits for its turn.
_SLICE = 1 << 18


def _array(values, dtype) -> np.ndarray:
    n = len(values)
    if n <= 64:
        # A few values: numpy's generic sequence discovery on a repeated field costs several times this.
        return np.fromiter(values, dtype, n)
    if n <= _SLICE:
        return np.array(values, dtype=dtype)
    out = np.empty(len(values), dtype=dtype)
    for i in range(0, len(values), _SLICE):
        out[i:i + _SLICE] = values[i:i + _SLICE]
    return out


def _extend(field, flat: np.ndarray) -> None:
    for i in range(0, flat.size, _SLICE):
        field.extend(flat[i:i + _SLICE].tolist())


def _dtype_name(enum: int) -> str:
    try:
        from tidal.server import tfs_protos

        return tfs_protos.load().types_pb2.DataType.Name(enum)
    except (ImportError, ValueError):
        return str(enum)


def to_numpy(proto, name: str = "") -> np.ndarray:
    """A request's TensorProto as a numpy array; InvalidArgument when it is malformed."""
    entry = _BY_ENUM.get(proto.dtype)
    label = f"input tensor '{name}'" if name else "tensor"
    if entry is None:
        raise InvalidArgument(f"{label} has unsupported dtype {_dtype_name(proto.dtype)}")
    _, v2, dtype, field = entry
    if proto.tensor_shape.unknown_rank:
        raise InvalidArgument(f"{label} has an unknown rank; give its shape")
    if len(proto.tensor_shape.dim) > MAX_RANK:
        raise InvalidArgument(f"{label} has {len(proto.tensor_shape.dim)} dimensions; a tensor has at most "
                              f"{MAX_RANK}")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"{label} has a negative dimension in shape {list(shape)}")
    n = 1
    for d in shape:
        n *= d
    if any(d > MAX_DIM for d in shape):
        raise InvalidArgument(f"{label} has shape {list(shape)}, larger than any tensor Tidal accepts")
    if proto.tensor_content and v2 != "BYTES":
        content = proto.tensor_content
        if len(content) != n * dtype.itemsize:
            raise InvalidArgument(f"{label}: tensor_content holds {len(content)} bytes, shape {list(shape)} of "
                                  f"{v2} needs {n * dtype.itemsize}")
        return np.frombuffer(content, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
    values = getattr(proto, field)
    count = len(values)
    if count > n:
        raise InvalidArgument(f"{label} has {count} values, more than its shape {list(shape)} holds ({n})")
    if v2 == "BYTES":
        flat = np.empty(count, dtype=object)
        flat[:] = list(values)
    elif v2 == "FP16":
        flat = _array(values, np.uint16).view(np.float16)
    elif field == "int_val" and dtype.itemsize < 4:
        # int_val holds int32s; TensorFlow would wrap a wider value into the narrow type silently.
        wide = _array(values, np.int64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidArgument(f"{label} has values out of range for {v2}")
        flat = wide.astype(dtype)
    else:
        try:
            flat = _array(values, dtype)
        except OverflowError:
            raise InvalidArgument(f"{label} has values out of range for {v2}") from None
    if count == n:
        return flat.reshape(shape)
    if n > MAX_FILL_ELEMENTS:
        raise InvalidArgument(f"{label} has {count} values for shape {list(shape)} ({n} elements); "
                              "padding that many is refused")
    if count == 0:
        out = np.empty(n, dtype=object) if v2 == "BYTES" else np.zeros(n, dtype=dtype)
        if v2 == "BYTES":
            out[:] = b""
    else:
        out = np.empty(n, dtype=dtype)
        out[:count] = flat
        out[count:] = flat[-1]
    return out.reshape(shape)


def from_numpy(arr: np.ndarray, proto) -> None:
    """Fill a TensorProto with an output array, in typed value fields as TF Serving answers."""
    arr = np.asarray(arr)
    v2 = v2_datatype(arr.dtype)
    enum, _, dtype, field = BY_V2[v2]
    proto.dtype = enum
    dims = proto.tensor_shape.dim
    for d in arr.shape:
        dims.add().size = d
    flat = arr.reshape(-1)
    if v2 == "BYTES":
        proto.string_val.extend([v if type(v) is bytes else str(v).encode("utf-8") for v in flat.tolist()])
    elif v2 == "FP16":
        _extend(proto.half_val, flat.view(np.uint16))
    else:
        _extend(getattr(proto, field), flat.astype(dtype, copy=False))
