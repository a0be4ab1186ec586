"""The Open Inference Protocol (KServe V2) REST API, with Triton's binary tensor extension, as a thin adapter.

Real clients must work unchanged: tritonclient sends tensors as raw bytes after
a JSON header (`Inference-Header-Content-Length`), often with no Content-Type;
others send integer tensors as integral floats or add fields like "id".
"""

from __future__ import annotations

import math
import re
import struct
import time
import zlib
from urllib.parse import unquote

import numpy as np

from tidal import __version__
from tidal.errors import InvalidArgument, NotFound
from tidal.http.server import Request, Response, error_response
from tidal.server import dataplane, tensors
from tidal.server.dataplane import DataPlane, Method
from tidal.server.metrics import ServerMetrics
from tidal.server.tensors import MAX_RANK, DType, dumps, json_text, v2_dtype


EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration", "model_repository"]
HEADER_LENGTH = "inference-header-content-length"
_INLINE_INFLATE = 1 << 16  # compressed bodies up to this size are inflated right on the loop
OCTET_STREAM = b"application/octet-stream"

_MODEL_RE = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(infer|ready|config|stats))?")
_TRITON_TYPES = {"BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
                 "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
                 "INT64": "TYPE_INT64", "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64",
                 "BYTES": "TYPE_STRING"}


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or len(text) > 18:
        raise InvalidArgument(f"model version must be a non-negative integer, got '{text}'")
    return int(text)


def _default_signature(servable):
    return dataplane.signature(servable.signatures, None, Method.PREDICT)


# -- request decoding -------------------------------------------------------------

def split_body(body: bytes, headers: dict[str, str], max_body: int) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail of an infer request (the tail is empty without the extension)."""
    encoding = headers.get("content-encoding")
    if encoding:
        body = _decompress(body, encoding.strip().lower(), max_body)
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


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
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


def _tensor_meta(spec) -> dict:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


# -- the adapter -------------------------------------------------------------------

class V2API:
    """Answers /v2/... requests over the data plane; records per-request metrics."""

    def __init__(self, manager, metrics: ServerMetrics, *, server_name: str = "tidal",
                 max_body: int = 64 << 20, plane: DataPlane | None = None) -> None:
        self.plane = plane if plane is not None else DataPlane(manager)
        self.manager = self.plane.manager
        self.max_body = max_body
        self.metrics = metrics
        self.server_name = server_name
        self._routes: dict[str, tuple] = {}

    def _route(self, path: str) -> tuple:
        found = self._routes.get(path)
        if found is None:
            m = _MODEL_RE.fullmatch(path)
            if m is None:
                found = (None, None, None)
            else:
                found = (unquote(m.group(1)), m.group(2), m.group(3) or "metadata")
            if len(self._routes) >= 4096:
                self._routes.clear()
            self._routes[path] = found
        return found

    def handle(self, req: Request):
        path, method = req.path, req.method
        if method == "GET":
            if path == "/v2/health/live":
                return Response(200, b'{"live":true}')
            if path == "/v2/health/ready":
                ready = bool(self.manager.ready)
                return Response(200 if ready else 503, b'{"ready":true}' if ready else b'{"ready":false}')
            if path in ("/v2", "/v2/"):
                return Response(200, dumps({"name": self.server_name, "version": __version__,
                                            "extensions": EXTENSIONS}))
            if path == "/v2/models/stats":
                return self._guard("stats", lambda: self._stats(None, None))
        if method == "POST" and path == "/v2/repository/index":
            return self._guard("index", self._index)
        name, version_text, action = self._route(path)
        if name is None:
            return error_response(404, f"Not found: {method} {path}")
        if action == "infer":
            if method != "POST":
                return error_response(405, f"{path} takes POST")
            return self._infer(req, name, version_text)
        if method != "GET":
            return error_response(405, f"{path} takes GET")
        if action == "metadata":
            return self._guard("metadata", lambda: self._metadata(name, version_text))
        if action == "ready":
            return self._guard("ready", lambda: self._ready(name, version_text))
        if action == "config":
            return self._guard("config", lambda: self._config(name, version_text))
        return self._guard("stats", lambda: self._stats(name, version_text))

    def _guard(self, api: str, fn) -> Response:
        t0 = time.perf_counter()
        try:
            resp = fn()
        except Exception as exc:
            f = dataplane.report(exc, "V2 " + api, "")
            resp = error_response(f.http_status, f.message)
        self.metrics.observe_request("", "", "v2_" + api, resp.status, time.perf_counter() - t0)
        return resp

    def _metadata(self, name: str, version_text: str | None) -> Response:
        servable = self.plane.servable(name, _version(version_text))
        sig = _default_signature(servable)
        versions = [str(s.version) for s in self.manager.status(name)
                    if getattr(getattr(s, "state", ""), "value", getattr(s, "state", "")) == "AVAILABLE"]
        doc = {"name": servable.name, "versions": versions or [str(servable.version)],
               "platform": servable.platform,
               "inputs": [_tensor_meta(s) for s in sig.inputs.values()],
               "outputs": [_tensor_meta(s) for s in sig.outputs.values()]}
        return Response(200, dumps(doc))

    def _ready(self, name: str, version_text: str | None) -> Response:
        try:
            self.plane.servable(name, _version(version_text))
        except NotFound as exc:
            if name in set(self.manager.model_names()):
                return Response(400, dumps({"name": name, "ready": False, "error": exc.message}))
            raise
        return Response(200, dumps({"name": name, "ready": True}))

    def _config(self, name: str, version_text: str | None) -> Response:
        """Triton's model configuration, as far as it means something here."""
        servable = self.plane.servable(name, _version(version_text))
        sig = _default_signature(servable)

        def tensor(spec) -> dict:
            return {"name": spec.name, "data_type": _TRITON_TYPES[spec.datatype], "dims": list(spec.shape)}

        backend = servable.platform.split("_")[0] if servable.platform else ""
        doc = {"name": servable.name, "platform": servable.platform, "backend": backend,
               "max_batch_size": 0,  # dims below include the batch dimension (-1 where variable)
               "input": [tensor(s) for s in sig.inputs.values()],
               "output": [tensor(s) for s in sig.outputs.values()]}
        return Response(200, dumps(doc))

    def _stats(self, name: str | None, version_text: str | None) -> Response:
        """Triton's statistics extension from the request metrics."""
        if name is None:
            targets = []
            for model in self.manager.model_names():
                for s in self.manager.status(model):
                    targets.append((model, str(s.version)))
        else:
            servable = self.plane.servable(name, _version(version_text))
            targets = [(servable.name, str(servable.version))]
        model_stats = []
        for model, version in targets:
            st = self.metrics.stats(model, version)

            def d(count: int, seconds: float) -> dict:
                return {"count": count, "ns": int(seconds * 1e9)}

            model_stats.append({
                "name": model, "version": version,
                "inference_count": st.batched_rows or st.success_count,
                "execution_count": st.batches or st.success_count,
                "inference_stats": {"success": d(st.success_count, st.success_seconds),
                                    "fail": d(st.fail_count, st.fail_seconds),
                                    "queue": d(st.batches, st.queue_seconds)},
                "batch_stats": [],
            })
        return Response(200, dumps({"model_stats": model_stats}))

    def _index(self) -> Response:
        rows = []
        for model in self.manager.model_names():
            for s in self.manager.status(model):
                state = getattr(s, "state", "UNKNOWN")
                state = getattr(state, "value", state)
                row = {"name": model, "version": str(s.version),
                       "state": "READY" if state == "AVAILABLE" else "UNAVAILABLE"}
                if state != "AVAILABLE":
                    row["reason"] = getattr(s, "error_message", "") or str(state)
                rows.append(row)
        return Response(200, dumps(rows))

    async def _infer(self, req: Request, name: str, version_text: str | None) -> Response:
        t0 = time.perf_counter()
        plane = self.plane
        large = plane.large
        body, headers = req.body, req.headers
        big = False
        model = version = ""
        status = 499
        try:
            try:
                encoding = headers.get("content-encoding")
                if encoding:  # what decides is the size inside
                    if len(body) > _INLINE_INFLATE:
                        body = await large.run(_decompress, body, encoding.strip().lower(), self.max_body)
                    else:
                        body = _decompress(body, encoding.strip().lower(), self.max_body)
                    headers = {k: v for k, v in headers.items() if k != "content-encoding"}
                # A large JSON part is parsed and decoded in the decoding child, so the server never holds its
                # objects; a large binary tail alone is raw tensor bytes, decoded here (in a thread).
                big = large.is_large(len(body))
                if big and large.is_large(_json_size(body, headers)):
                    servable = plane.servable(name, _version(version_text))
                    target = dataplane.Target(servable, _default_signature(servable))
                    model, version = target.model, str(target.version)
                    inputs, request_id, names, binary_out = await large.decode(
                        decode_large, body, _headers(headers), self.max_body, large.memory_budget,
                        target.signature, model)
                else:
                    head, binary = split_body(body, headers, self.max_body)
                    header = _parse(head)
                    target = plane.resolve(name, _version(version_text), None, None, Method.PREDICT)
                    model, version = target.model, str(target.version)
                    names, binary_out = requested_outputs(header, target.signature, name)
                    if big:
                        inputs = await large.run(decode_infer, header, binary, head, target.signature, model)
                    else:
                        inputs = decode_infer(header, binary, head, target.signature, model)
                    request_id = header.get("id")
                outputs = await plane.predict(target, inputs)
                del inputs
                if big or large.is_large(sum(a.nbytes for a in outputs.values())):
                    big = True
                    resp = await large.run(encode_infer, model, version, request_id, outputs, names, binary_out)
                else:
                    resp = encode_infer(model, version, request_id, outputs, names, binary_out)
            except Exception as exc:
                f = dataplane.report(exc, "V2 infer", name)
                resp = error_response(f.http_status, f.message)
            status = resp.status
            return resp
        finally:
            self.metrics.observe_request(model, version, "infer", status, time.perf_counter() - t0)
            if big:
                large.release()


def _json_size(body: bytes, headers: dict[str, str]) -> int:
    n = headers.get(HEADER_LENGTH)
    return int(n) if n is not None and n.isdigit() and int(n) <= len(body) else len(body)


def _headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: headers[k] for k in ("content-encoding", HEADER_LENGTH) if k in headers}


def decode_large(body: bytes, headers: dict[str, str], max_body: int, budget: int, sig, model: str):
    """An infer request's tensors, decoded in the decoding child (tidal.server.large)."""
    from tidal.server.large import LargeBodies

    head, binary = split_body(body, headers, max_body)
    LargeBodies(memory_budget=budget).admit(head)
    header = _parse(head)
    names, binary_out = requested_outputs(header, sig, model)
    return decode_infer(header, binary, head, sig, model), header.get("id"), names, binary_out


def _parse(head: bytes) -> dict:
    header = tensors.parse_json(head)
    if type(header) is not dict:
        raise InvalidArgument(f"infer request must be a JSON object, got {tensors.json_type(header)}")
    return header
