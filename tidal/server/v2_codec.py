"""The Open Inference Protocol's request and response bodies: JSON tensors, Triton's binary tensors, encodings.

Decoding is pure (bytes and a signature in, tensors out), so a large body can be decoded
in the decoding child (`decode_large`, see tidal.server.large).
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from tidal.errors import InvalidArgument
from tidal.http.server import Response
from tidal.server import dataplane, tensors
from tidal.server.tensors import MAX_RANK, DType, dumps, json_text, v2_dtype

HEADER_LENGTH = "inference-header-content-length"
OCTET_STREAM = b"application/octet-stream"


# -- request decoding -------------------------------------------------------------

def split_body(body: bytes, headers: dict[str, str], max_body: int) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail of an infer request (the tail is empty without the extension)."""
    encoding = headers.get("content-encoding")
    if encoding:
        body = decompress(body, encoding.strip().lower(), max_body)
    n = headers.get(HEADER_LENGTH)
    if n is None:
        return body, b""
    try:
        size = int(n)
    except ValueError:
        raise InvalidArgument(f"Inference-Header-Content-Length must be an integer, got '{n[:40]}'") from None
    if not 0 <= size <= len(body):
        raise InvalidArgument(f"Inference-Header-Content-Length {size} is outside the body's {len(body)} bytes")
    return body[:size], body[size:]


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("identity", ""):
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise InvalidArgument(f"unsupported Content-Encoding '{encoding}' (gzip and deflate are)")
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidArgument(f"request body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise InvalidArgument(f"decompressed request body larger than the limit of {limit} bytes")
    return out


def _binary_tensor(raw: memoryview, dt: DType, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if dt.kind != "bytes":
        want = count * dt.np.itemsize
        if len(raw) != want:
            raise InvalidArgument(f"input '{name}': binary data of {len(raw)} bytes does not match shape "
                                  f"{list(shape)} of {dt.v2} ({want} bytes)")
        arr = np.frombuffer(raw, dtype=dt.np.newbyteorder("<") if dt.np.itemsize > 1 else dt.np)
        if dt.kind == "bool" and arr.size and arr.view(np.uint8).max() > 1:
            raise InvalidArgument(f"input '{name}': BOOL elements must be bytes 0 or 1")
        return arr.astype(dt.np, copy=False).reshape(shape)
    items = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise InvalidArgument(f"input '{name}': truncated BYTES element length at byte {pos}")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > end:
            raise InvalidArgument(f"input '{name}': BYTES element of {n} bytes runs past the tensor's data")
        items.append(bytes(raw[pos:pos + n]))
        pos += n
    if len(items) != count:
        raise InvalidArgument(f"input '{name}': got {len(items)} BYTES elements, shape {list(shape)} needs {count}")
    arr = np.empty(count, dtype=object)
    arr[:] = items
    return arr.reshape(shape)


def _shape(value, name: str) -> tuple[int, ...]:
    if type(value) is not list or not all(type(d) is int and d >= 0 for d in value):
        raise InvalidArgument(f"input '{name}': 'shape' must be a list of non-negative integers, "
                              f"got {json_text(value)}")
    if len(value) > MAX_RANK:
        raise InvalidArgument(f"input '{name}': 'shape' has {len(value)} dimensions; a tensor has at most "
                              f"{MAX_RANK}")
    return tuple(value)


def decode_infer(header: dict, binary: bytes, body_for_scan: bytes, sig=None, model: str = "") -> dict[str, np.ndarray]:
    """The request's input tensors, from JSON `data` or the binary tail.

    With the signature, a tensor declared with another datatype than its input is refused.
    Element counts are Python integers, so no shape can overflow into agreeing with the data.
    """
    inputs = header.get("inputs")
    if type(inputs) is not list or not inputs:
        raise InvalidArgument("infer request needs 'inputs': a non-empty list of tensors")
    out: dict[str, np.ndarray] = {}
    view = memoryview(binary)
    pos = 0
    for i, item in enumerate(inputs):
        if type(item) is not dict:
            raise InvalidArgument(f"inputs[{i}] must be an object with name, shape, datatype and data")
        name = item.get("name")
        if type(name) is not str or not name:
            raise InvalidArgument(f"inputs[{i}] needs a 'name' string")
        if name in out:
            raise InvalidArgument(f"input '{name}' is given more than once")
        dtname = item.get("datatype")
        if type(dtname) is not str:
            raise InvalidArgument(f"input '{name}' needs a 'datatype' string")
        dt = v2_dtype(dtname)
        if sig is not None:
            dataplane.check_datatype(sig, name, dtname, model)
        shape = _shape(item.get("shape"), name)
        params = item.get("parameters")
        size = params.get("binary_data_size") if type(params) is dict else None
        if size is not None:
            if type(size) is not int or size < 0:
                raise InvalidArgument(f"input '{name}': binary_data_size must be a non-negative integer")
            if pos + size > len(view):
                raise InvalidArgument(f"input '{name}': binary_data_size {size} runs past the "
                                      f"{len(view)} bytes of binary data")
            out[name] = _binary_tensor(view[pos:pos + size], dt, shape, name)
            pos += size
            continue
        if "data" not in item:
            raise InvalidArgument(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
        try:
            arr = tensors.json_to_tensor(item["data"], dt, body_for_scan, integral_floats=True)
        except InvalidArgument as exc:
            raise InvalidArgument(f"input '{name}': {exc.message}") from None
        count = math.prod(shape)
        if arr.size != count:
            raise InvalidArgument(f"input '{name}': shape {list(shape)} needs {count} elements, "
                                  f"data has {arr.size}")
        out[name] = arr.reshape(shape)
    if pos != len(view):
        raise InvalidArgument(f"{len(view) - pos} bytes of binary data after the last binary input")
    return out


def requested_outputs(header: dict, sig, model: str) -> tuple[list[str], dict[str, bool]]:
    """Which outputs to return and which of them as binary data."""
    params = header.get("parameters")
    all_binary = bool(params.get("binary_data_output")) if type(params) is dict else False
    wanted = header.get("outputs")
    if wanted is None:
        names = list(sig.outputs)
        return names, {n: all_binary for n in names}
    if type(wanted) is not list:
        raise InvalidArgument("'outputs' must be a list of {\"name\": ...} objects")
    names, binary = [], {}
    for i, item in enumerate(wanted):
        if type(item) is not dict or type(item.get("name")) is not str:
            raise InvalidArgument(f"outputs[{i}] needs a 'name' string")
        name = item["name"]
        if name not in sig.outputs:
            raise InvalidArgument(f"unexpected inference output '{name}' for model '{model}'")
        p = item.get("parameters")
        flag = p.get("binary_data") if type(p) is dict else None
        names.append(name)
        binary[name] = all_binary if flag is None else bool(flag)
    return names, binary


# -- response encoding ----------------------------------------------------------

def _binary_bytes(arr: np.ndarray, dt: DType) -> bytes:
    if dt.kind == "bytes":
        parts = []
        for v in arr.reshape(-1).tolist():
            raw = v if type(v) is bytes else str(v).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    if dt.kind == "bool":
        return arr.astype(np.uint8).tobytes()
    if dt.np.itemsize > 1:
        return np.ascontiguousarray(arr, dtype=dt.np.newbyteorder("<")).tobytes()
    return np.ascontiguousarray(arr).tobytes()


def encode_infer(model: str, version: str, request_id, outputs: dict[str, np.ndarray],
                 names: list[str], binary: dict[str, bool]) -> Response:
    resp = _encode_infer(model, version, request_id, outputs, names, binary, False)
    head_len = int(resp.headers[0][1]) if resp.headers else len(resp.body)
    if b"null" in resp.body[:head_len]:  # NaN or Infinity in a JSON tensor: write them properly
        resp = _encode_infer(model, version, request_id, outputs, names, binary, True)
    return resp


def _encode_infer(model: str, version: str, request_id, outputs: dict[str, np.ndarray],
                  names: list[str], binary: dict[str, bool], checked: bool) -> Response:
    out_list = []
    tail: list[bytes] = []
    for name in names:
        arr = outputs.get(name)
        if arr is None:
            raise InvalidArgument(f"model '{model}' did not produce output '{name}'")
        dt = tensors.dtype_of_array(arr)
        entry = {"name": name, "datatype": dt.v2, "shape": list(arr.shape)}
        if binary.get(name):
            raw = _binary_bytes(arr, dt)
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = tensors.jsonable(arr.reshape(-1), finite_checked=checked)
        out_list.append(entry)
    doc = {"model_name": model, "model_version": version, "outputs": out_list}
    if request_id is not None:
        doc["id"] = request_id
    head = dumps(doc)
    if not tail:
        return Response(200, head)
    return Response(200, head + b"".join(tail), content_type=OCTET_STREAM,
                    headers=[("Inference-Header-Content-Length", str(len(head)))])


def json_size(body: bytes, headers: dict[str, str]) -> int:
    n = headers.get(HEADER_LENGTH)
    return int(n) if n is not None and n.isdigit() and int(n) <= len(body) else len(body)


def child_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: headers[k] for k in ("content-encoding", HEADER_LENGTH) if k in headers}


def decode_large(body: bytes, headers: dict[str, str], max_body: int, budget: int, sig, model: str):
    """An infer request's tensors, decoded in the decoding child (tidal.server.large)."""
    from tidal.server.large import LargeBodies

    head, binary = split_body(body, headers, max_body)
    LargeBodies(memory_budget=budget).admit(head)
    header = parse_header(head)
    names, binary_out = requested_outputs(header, sig, model)
    return decode_infer(header, binary, head, sig, model), header.get("id"), names, binary_out


def parse_header(head: bytes) -> dict:
    header = tensors.parse_json(head)
    if type(header) is not dict:
        raise InvalidArgument(f"infer request must be a JSON object, got {tensors.json_type(header)}")
    return header
