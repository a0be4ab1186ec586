"""TF Serving's REST API (/v1/models/...): decode JSON, call the data plane (tidal.server.dataplane), encode JSON.

Routes, messages and status codes follow tensorflow/serving's
http_rest_api_handler.cc, http_rest_api_util.cc and util/json_tensor.cc; where
its docs and its code disagree, the code wins.
"""

from __future__ import annotations

import re
import time
from urllib.parse import unquote

import numpy as np

from tidal.errors import InvalidArgument, TidalError
from tidal.http.server import Request, Response, error_response
from tidal.server import dataplane, tensors, tfexample
from tidal.server.dataplane import DataPlane, Method
from tidal.server.metrics import ServerMetrics
from tidal.server.tensors import dumps, is_b64, json_text, json_to_tensor

_METHOD = {"predict": Method.PREDICT, "classify": Method.CLASSIFY, "regress": Method.REGRESS}
_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I)
_INT64_MAX = (1 << 63) - 1


class Route:
    """A parsed /v1 path: what to do and for which model spec."""

    __slots__ = ("action", "name", "version", "label")

    def __init__(self, action: str, name: str, version: int | None, label: str | None) -> None:
        self.action = action  # predict | classify | regress | status | metadata
        self.name = name
        self.version = version
        self.label = label


def parse_route(method: str, path: str) -> Route:
    """Match a /v1 path like TF Serving (case-insensitive); InvalidArgument when it does not."""
    if method == "POST":
        m = _PREDICT_RE.fullmatch(path)
        action = m.group(4).lower() if m else ""
    elif method == "GET":
        m = _STATUS_RE.fullmatch(path)
        action = "metadata" if m and m.group(4) else "status"
    else:
        m = None
    if m is None:
        raise InvalidArgument(f"Malformed request: {method} {path}")
    name = unquote(m.group(1)) if m.group(1) else ""
    version = None
    if m.group(2):
        version = int(m.group(2))
        if version > _INT64_MAX:
            raise InvalidArgument(f"Failed to convert version: {m.group(2)} to numeric.")
    label = unquote(m.group(3)) if m.group(3) else None
    if not name:
        raise InvalidArgument("Missing model name in request.")
    return Route(action, name, version, label)


# -- predict: JSON -> tensors -> JSON ---------------------------------------------

def signature_name(doc: dict) -> str | None:
    name = doc.get("signature_name")
    if name is not None and type(name) is not str:
        raise InvalidArgument(
            f"JSON Value: {json_text(doc)} not formatted correctly. 'signature_name' key must be a string value.")
    return name


def decode_instances(instances, specs: dict, body: bytes) -> dict[str, np.ndarray]:
    """Row format: one element per example, a value (single input) or an object keyed by input name."""
    first = instances[0]
    first_is_object = type(first) is dict and not is_b64(first)
    if type(first) is not dict and len(specs) > 1:
        raise InvalidArgument("instances is a plain list, but expecting list of objects as multiple "
                              "input tensors required as per tensorinfo_map")
    if not first_is_object:
        name, spec = next(iter(specs.items()))
        fast = tensors.fast_tensor(instances, tensors.BY_V2[spec.datatype], body, False)
        if fast is not None and fast.ndim >= 1:
            return {name: fast}
        return {name: _exact_rows(instances, specs, False)[name]}
    names = set(specs)
    if all(type(e) is dict and e.keys() == names for e in instances):
        out = {}
        for name, spec in specs.items():
            col = [e[name] for e in instances]
            fast = tensors.fast_tensor(col, tensors.BY_V2[spec.datatype], body, False)
            if fast is None:
                return _exact_rows(instances, specs, True)
            out[name] = fast
        return out
    return _exact_rows(instances, specs, True)


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _exact_rows(instances: list, specs: dict, objects: bool) -> dict[str, np.ndarray]:
    """The row format element by element, with TF Serving's messages (FillTensorMapFromInstancesList)."""
    shapes: dict[str, tuple] = {}
    rows: dict[str, list[np.ndarray]] = {}
    names = sorted(specs)

    def add(item, name: str) -> np.ndarray:
        if name not in specs:
            raise InvalidArgument(f"JSON object: does not have named input: {name}")
        arr = tensors.exact_tensor(item, tensors.BY_V2[specs[name].datatype])
        if name not in shapes:
            shapes[name] = arr.shape
        elif arr.size != int(np.prod(shapes[name])):
            raise InvalidArgument(f"Expecting tensor size: {int(np.prod(shapes[name]))} but got: {arr.size}")
        elif arr.shape != shapes[name]:
            raise InvalidArgument(f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(arr.shape)}")
        return arr

    for i, elem in enumerate(instances):
        is_object = type(elem) is dict and not is_b64(elem)
        if objects:
            if not is_object:
                raise InvalidArgument(f"Expecting object but got list at item {i} of input list")
            for key, value in elem.items():
                try:
                    rows.setdefault(key, []).append(add(value, key))
                except InvalidArgument as exc:
                    raise InvalidArgument(f"Failed to process element: {i} key: {key} of 'instances' list. "
                                          f"Error: INVALID_ARGUMENT: {exc.message}") from None
            if set(elem) != set(names):
                raise InvalidArgument(f"Failed to process element: {i} of 'instances' list. JSON object: "
                                      f"{json_text(elem)} keys must be equal to: {','.join(names)}")
        else:
            if is_object:
                raise InvalidArgument(f"Expecting value/list but got object at item {i} of input list")
            name = next(iter(specs))
            try:
                rows.setdefault(name, []).append(add(elem, name))
            except InvalidArgument as exc:
                raise InvalidArgument(f"Failed to process element: {i} of 'instances' list. "
                                      f"Error: INVALID_ARGUMENT: {exc.message}") from None
    return {name: np.stack(parts) for name, parts in rows.items()}


def decode_inputs(value, specs: dict, body: bytes) -> dict[str, np.ndarray]:
    """Columnar format: one tensor, or an object from input name to tensor (FillTensorMapFromInputsMap)."""
    if type(value) is not dict or is_b64(value):
        if len(specs) > 1:
            raise InvalidArgument("inputs is a plain value/list, but expecting an object as multiple input "
                                  "tensors required as per tensorinfo_map")
        name, spec = next(iter(specs.items()))
        return {name: json_to_tensor(value, tensors.BY_V2[spec.datatype], body)}
    out = {}
    for name, spec in specs.items():
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = json_to_tensor(value[name], tensors.BY_V2[spec.datatype], body)
    return out


def decode_predict(doc: dict, sig, body: bytes) -> tuple[dict[str, np.ndarray], bool]:
    """The request's tensors and whether it used the row format (FillPredictRequestFromJson)."""
    specs = sig.inputs
    if not specs:
        raise InvalidArgument(f"Failed to get input map for signature: {sig.name or 'DEFAULT'}")
    has_instances = "instances" in doc
    if has_instances and "inputs" in doc:
        raise InvalidArgument(f"JSON Value: {json_text(doc)} Not formatted correctly expecting only one of "
                              "'inputs' or 'instances' keys to exist ")
    if has_instances:
        instances = doc["instances"]
        if type(instances) is not list:
            raise InvalidArgument(f"JSON Value: {json_text(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise InvalidArgument(f"JSON Value: {json_text(doc)} No values in 'instances' array")
        return decode_instances(instances, specs, body), True
    if "inputs" in doc:
        return decode_inputs(doc["inputs"], specs, body), False
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _is_bytes_output(name: str, arr: np.ndarray) -> bool:
    return arr.dtype.kind in "OSU" and name.endswith("_bytes")


def encode_predict(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    """Tensors as TF Serving writes them: `predictions` (row) or `outputs` (columnar)."""
    body = _encode_predict(outputs, row_format, False)
    if b"null" in body:  # a NaN or Infinity somewhere (or the word in a string): write them properly
        body = _encode_predict(outputs, row_format, True)
    return body


def _encode_predict(outputs: dict[str, np.ndarray], row_format: bool, checked: bool) -> bytes:
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    if not row_format:
        if len(outputs) == 1:
            name, arr = next(iter(outputs.items()))
            return dumps({"outputs": tensors.jsonable(arr, _is_bytes_output(name, arr), checked)})
        return dumps({"outputs": {name: tensors.jsonable(arr, _is_bytes_output(name, arr), checked)
                                  for name, arr in outputs.items()}})
    batch = -1
    for name, arr in outputs.items():
        if arr.ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and arr.shape[0] != batch:
            raise InvalidArgument(f"Tensor name: {name} has inconsistent batch size: {arr.shape[0]} "
                                  f"expecting: {batch}")
        batch = arr.shape[0]
    if len(outputs) == 1:
        name, arr = next(iter(outputs.items()))
        return dumps({"predictions": tensors.jsonable(arr, _is_bytes_output(name, arr), checked)})
    columns = {name: tensors.jsonable(arr, _is_bytes_output(name, arr), checked) for name, arr in outputs.items()}
    rows = [{name: col[i] for name, col in columns.items()} for i in range(batch)]
    return dumps({"predictions": rows})


# -- classify / regress: tf.Example-style features -> tensors ----------------------

def _feature_value(value, feature: str):
    """A feature as TF Serving reads it: a value or a flat list of values, always as a list."""
    items = value if type(value) is list else [value]
    for v in items:
        if v is None or type(v) is list or (type(v) is dict and not is_b64(v)):
            raise InvalidArgument(f"Feature: {feature} has element with unexpected JSON type: {tensors.json_type(v)}")
    return items


def decode_examples(doc: dict, sig, method: str) -> dict[str, np.ndarray]:
    """`context` + `examples` -> one tensor per signature input, stacked along the examples."""
    context = doc.get("context", {})
    if type(context) is not dict:
        raise InvalidArgument(f"Example must be JSON object but got JSON {tensors.json_type(context)}")
    if "examples" not in doc:
        verb = "classify" if method is Method.CLASSIFY else "regress"
        raise InvalidArgument(f"JSON Value: {json_text(doc)} When method is {verb}, key 'examples' is "
                              "expected and was not found")
    examples = doc["examples"]
    if type(examples) is not list:
        raise InvalidArgument(f"JSON Value: {json_text(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidArgument(f"JSON Value: {json_text(doc)} 'examples' value is an empty array")
    for ex in examples:
        if type(ex) is not dict:
            raise InvalidArgument(f"Example must be JSON object but got JSON {tensors.json_type(ex)}")
    out = {}
    for name, spec in sig.inputs.items():
        column = []
        for i, ex in enumerate(examples):
            if name in ex:
                column.append(_feature_value(ex[name], name))
            elif name in context:
                column.append(_feature_value(context[name], name))
            else:
                raise InvalidArgument(f"Example {i} is missing feature: {name} (the signature's inputs are "
                                      f"{', '.join(sorted(sig.inputs))})")
        dt = tensors.BY_V2[spec.datatype]
        try:
            arr = tensors.exact_tensor(column, dt, integral_floats=True)
        except InvalidArgument as exc:
            raise InvalidArgument(f"Feature: {name}: {exc.message}") from None
        # A one-element feature list fills a scalar slot of a [batch] input.
        if arr.ndim == len(spec.shape) + 1 and arr.shape[-1] == 1:
            arr = arr.reshape(arr.shape[:-1])
        out[name] = arr
    return out


def encode_classify(result: dataplane.Classifications) -> bytes:
    """`results`: per example a list of [label, score] (MakeJsonFromClassificationResult)."""
    n, k = result.rows, result.width
    labels = result.labels if result.labels is not None else [[""] * k for _ in range(n)]
    # float32 scores written as the doubles a gRPC client reads from the same result
    scores = result.scores.astype(np.float64).tolist() if result.scores is not None else [[0.0] * k] * n
    return dumps({"results": [[[label, score] for label, score in zip(lrow, srow)]
                              for lrow, srow in zip(labels, scores)]})


def encode_regress(values: np.ndarray) -> bytes:
    return dumps({"results": tensors.jsonable(values, finite_checked=True)})


# -- status and metadata ------------------------------------------------------------

def _dims_json(shape, rank_known: bool = True) -> dict:
    if not rank_known:
        return {"dim": [], "unknown_rank": True}
    return {"dim": [{"size": str(d), "name": ""} for d in shape], "unknown_rank": False}


def _tensor_info(spec) -> dict:
    return {"dtype": tensors.BY_V2[spec.datatype].tf, "tensor_shape": _dims_json(spec.shape, getattr(spec, "rank_known", True)),
            "name": spec.name}


def metadata_json(servable) -> dict:
    sigs = {}
    for name, sig in servable.signatures.items():
        sigs[name] = {
            "inputs": {n: _tensor_info(s) for n, s in sig.inputs.items()},
            "outputs": {n: _tensor_info(s) for n, s in sig.outputs.items()},
            "method_name": sig.method,
            "defaults": {},
        }
    return {
        "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
        "metadata": {"signature_def": {"signature_def": sigs}},
    }


def status_json(statuses) -> dict:
    out = []
    for st in statuses:
        state = getattr(st, "state", "UNKNOWN")
        out.append({
            "version": str(st.version),
            "state": getattr(state, "value", state),
            "status": {"error_code": getattr(st, "error_code", "") or "OK",
                       "error_message": getattr(st, "error_message", "") or ""},
        })
    return {"model_version_status": out}


# -- the adapter -------------------------------------------------------------------

def _decode(doc: dict, sig, method: Method, body: bytes) -> tuple[dict[str, np.ndarray], bool, int]:
    """The request's tensors, whether predict used the row format, and how many examples classify/regress got."""
    if method is Method.PREDICT:
        return *decode_predict(doc, sig, body), 0
    if sig.serialized_examples:  # a SavedModel's classify/regress signature
        inputs = tfexample.serialized_inputs(doc, sig, method.value)
    else:
        inputs = decode_examples(doc, sig, method)
    return inputs, False, len(doc["examples"])


def _parse(body: bytes) -> dict:
    doc = tensors.parse_json(body)
    if type(doc) is not dict:
        raise InvalidArgument(f"JSON Value: {json_text(doc)} Is not object")
    return doc


def decode_large(body: bytes, signatures: dict, method: Method) -> tuple[str, dict[str, np.ndarray], bool]:
    """A large predict body's signature name, tensors and format, decoded in the decoding child (tidal.server.large)."""
    doc = _parse(body)
    sig = dataplane.signature(signatures, signature_name(doc), method)
    inputs, row_format, _ = _decode(doc, sig, method, body)
    return sig.name, inputs, row_format


class TFServingAPI:
    """Answers /v1/... requests over the data plane; records per-request metrics."""

    def __init__(self, manager, metrics: ServerMetrics, plane: DataPlane | None = None) -> None:
        self.plane = plane if plane is not None else DataPlane(manager)
        self.manager = self.plane.manager
        self.metrics = metrics
        self._routes: dict[tuple[str, str], Route | TidalError] = {}

    def _route(self, method: str, path: str) -> Route:
        key = (method, path)
        found = self._routes.get(key)
        if found is None:
            try:
                found = parse_route(method, path)
            except TidalError as exc:
                found = exc
            if len(self._routes) >= 4096:  # bounded: paths are client-chosen
                self._routes.clear()
            self._routes[key] = found
        if type(found) is not Route:
            raise found.with_traceback(None)  # a cached error: without this its traceback grows per raise
        return found

    def handle(self, req: Request):
        t0 = time.perf_counter()
        try:
            route = self._route(req.method, req.path)
        except TidalError as exc:
            self.metrics.observe_request("", "", "tfs", exc.http_status, time.perf_counter() - t0)
            return error_response(exc.http_status, exc.message)
        if route.action in _METHOD:
            return self._infer(req, route, t0)
        return self._get(route, t0)

    def _get(self, route: Route, t0: float) -> Response:
        api = route.action
        model = version = ""
        try:
            if api == "metadata":
                servable = self.plane.servable(route.name, route.version, route.label)
                model, version = servable.name, str(servable.version)
                body = dumps(metadata_json(servable))
            else:
                statuses = self.manager.status(route.name, route.version, route.label)
                model = route.name
                body = dumps(status_json(statuses))
            resp = Response(200, body)
        except Exception as exc:
            f = dataplane.report(exc, api, route.name)
            resp = error_response(f.http_status, f.message)
        self.metrics.observe_request(model, version, api, resp.status, time.perf_counter() - t0)
        return resp

    async def _infer(self, req: Request, route: Route, t0: float) -> Response:
        action = route.action
        method = _METHOD[action]
        plane = self.plane
        large = plane.large
        body = req.body
        big = large.is_large(len(body))
        model = version = ""
        status = 499
        try:
            try:
                if big:
                    large.admit(body)
                if big and method is Method.PREDICT:
                    # Parsed and decoded in the decoding child: the server never holds the body's JSON objects.
                    servable = plane.servable(route.name, route.version, route.label)
                    model, version = servable.name, str(servable.version)
                    sig_name, inputs, row_format = await large.decode(decode_large, body, servable.signatures, method)
                    target = dataplane.Target(servable, servable.signatures[sig_name])
                else:
                    doc = await large.run(_parse, body) if big else _parse(body)
                    target = plane.resolve(route.name, route.version, route.label, signature_name(doc), method)
                    model, version = target.model, str(target.version)
                    if big:
                        inputs, row_format, n = await large.run(_decode, doc, target.signature, method, body)
                    else:
                        inputs, row_format, n = _decode(doc, target.signature, method, body)
                    del doc  # the parsed JSON can go while the model runs
                if method is Method.PREDICT:
                    outputs = await plane.predict(target, inputs)
                    if big or large.is_large(sum(a.nbytes for a in outputs.values())):
                        big = True
                        out = await large.run(encode_predict, outputs, row_format)
                    else:
                        out = encode_predict(outputs, row_format)
                else:
                    if method is Method.CLASSIFY:
                        out = encode_classify(await plane.classify(target, inputs, n))
                    else:
                        out = encode_regress(await plane.regress(target, inputs, n))
                resp = Response(200, out)
            except Exception as exc:
                f = dataplane.report(exc, action, route.name)
                resp = error_response(f.http_status, f.message)
            status = resp.status
            return resp
        finally:
            # Also runs when the client went away (CancelledError): counted as 499.
            self.metrics.observe_request(model, version, action, status, time.perf_counter() - t0)
            if big:
                large.release()
