"""The Open Inference Protocol (KServe V2) REST API, with Triton's binary tensors, as a thin adapter over the data plane.

Real clients must work unchanged: tritonclient sends tensors as raw bytes after
a JSON header (`Inference-Header-Content-Length`), often with no Content-Type;
others send integer tensors as integral floats or add fields like "id".
"""

from __future__ import annotations

import re
import time
from urllib.parse import unquote

from tidal import __version__
from tidal.errors import NotFound
from tidal.http.server import Request, Response, error_response
from tidal.server import dataplane
from tidal.server.dataplane import DataPlane, Method
from tidal.server.metrics import ServerMetrics
from tidal.server.tensors import dumps
from tidal.server.v2_codec import (
    child_headers, decode_infer, decode_large, decompress, encode_infer, json_size, parse_header, requested_outputs,
    split_body,
)

EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration", "model_repository"]
_INLINE_INFLATE = 1 << 16  # compressed bodies up to this size are inflated right on the loop

# Paths with one method; the method a request uses elsewhere gets 405 with `Allow`.
_FIXED = {"/v2": "GET", "/v2/": "GET", "/v2/health/live": "GET", "/v2/health/ready": "GET",
          "/v2/models/stats": "GET", "/v2/repository/index": "POST"}
_MODEL_RE = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(infer|ready|config|stats))?")
_TRITON_TYPES = {"BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
                 "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
                 "INT64": "TYPE_INT64", "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64",
                 "BYTES": "TYPE_STRING"}


def model_version(name: str, text: str | None) -> int | None:
    """A request's version text as a number (None: the default version); NotFound when no version has that name."""
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        # No version is named that, so it is not found, as for a well-formed version that is not loaded.
        raise NotFound(f"Servable not found for request: Specific({name}, {text[:40]})")
    return int(text)


def default_signature(servable):
    return dataplane.signature(servable.signatures, None, Method.PREDICT)


def metadata_doc(plane: DataPlane, name: str, version: int | None) -> dict:
    """A model's metadata (name, versions, platform, tensors), for REST and gRPC alike."""
    servable = plane.servable(name, version)
    sig = default_signature(servable)
    versions = [str(s.version) for s in plane.manager.status(name)
                if getattr(getattr(s, "state", ""), "value", getattr(s, "state", "")) == "AVAILABLE"]
    return {"name": servable.name, "versions": versions or [str(servable.version)],
            "platform": servable.platform,
            "inputs": [_tensor_meta(s) for s in sig.inputs.values()],
            "outputs": [_tensor_meta(s) for s in sig.outputs.values()]}


def ready_doc(plane: DataPlane, name: str, version: int | None) -> dict:
    """Whether a model (version) is ready; NotFound for a model the server does not have at all."""
    try:
        plane.servable(name, version)
    except NotFound as exc:
        if name in set(plane.manager.model_names()):
            return {"name": name, "ready": False, "error": exc.message}
        raise
    return {"name": name, "ready": True}


def not_allowed(method: str, path: str, allowed: str) -> Response:
    """405 for a method a known path does not take, with the `Allow` header HTTP asks for."""
    return Response(405, dumps({"error": f"{path} takes {allowed}, not {method}"}), headers=[("Allow", allowed)])


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
        fixed = _FIXED.get(path)
        if fixed is not None:
            if method != fixed:
                return not_allowed(method, path, fixed)
            if path == "/v2/health/live":
                return Response(200, b'{"live":true}')
            if path == "/v2/health/ready":
                ready = bool(self.manager.ready)
                return Response(200 if ready else 503, b'{"ready":true}' if ready else b'{"ready":false}')
            if path == "/v2/models/stats":
                return self._guard("stats", lambda: self._stats(None, None))
            if path == "/v2/repository/index":
                return self._guard("index", self._index)
            return Response(200, dumps({"name": self.server_name, "version": __version__,
                                        "extensions": EXTENSIONS}))
        name, version_text, action = self._route(path)
        if name is None:
            return error_response(404, f"Not found: {method} {path}")
        if action == "infer":
            if method != "POST":
                return not_allowed(method, path, "POST")
            return self._infer(req, name, version_text)
        if method != "GET":
            return not_allowed(method, path, "GET")
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
        return Response(200, dumps(metadata_doc(self.plane, name, model_version(name, version_text))))

    def _ready(self, name: str, version_text: str | None) -> Response:
        doc = ready_doc(self.plane, name, model_version(name, version_text))
        return Response(200 if doc["ready"] else 400, dumps(doc))

    def _config(self, name: str, version_text: str | None) -> Response:
        """Triton's model configuration, as far as it means something here."""
        servable = self.plane.servable(name, model_version(name, version_text))
        sig = default_signature(servable)

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
            servable = self.plane.servable(name, model_version(name, version_text))
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
                        body = await large.run(decompress, body, encoding.strip().lower(), self.max_body)
                    else:
                        body = decompress(body, encoding.strip().lower(), self.max_body)
                    headers = {k: v for k, v in headers.items() if k != "content-encoding"}
                # A large JSON part is parsed and decoded in the decoding child, so the server never holds its
                # objects; a large binary tail alone is raw tensor bytes, decoded here (in a thread).
                big = large.is_large(len(body))
                if big and large.is_large(json_size(body, headers)):
                    servable = plane.servable(name, model_version(name, version_text))
                    target = dataplane.Target(servable, default_signature(servable))
                    model, version = target.model, str(target.version)
                    inputs, request_id, names, binary_out = await large.decode(
                        decode_large, body, child_headers(headers), self.max_body, large.memory_budget,
                        target.signature, model)
                else:
                    head, binary = split_body(body, headers, self.max_body)
                    header = parse_header(head)
                    target = plane.resolve(name, model_version(name, version_text), None, None, Method.PREDICT)
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
