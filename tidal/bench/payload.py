"""What `tidal bench` sends: the target URL resolved to a path, and a body from a file or built from model metadata."""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import numpy as np
import orjson

from tidal.errors import UserError
from tidal.http.client import build_request

Protocol = Literal["tfserving", "v2"]


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    protocol: Protocol | None  # None: a plain URL, sent as given
    model: str | None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"


def parse_target(url: str, model: str | None, protocol: Protocol | None, version: str | None = None) -> Target:
    """Resolve URL (+ --model) to the inference path: a full `:predict`/`/infer` URL is used as is;
    a base endpoint (what `tidal serve get` prints) gets the protocol's path for `model`."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise UserError(f"unsupported URL scheme {parts.scheme!r} in {url!r}: only http:// is supported")
    if not parts.hostname:
        raise UserError(f"no host in URL {url!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise UserError(f"bad port in URL {url!r}") from None
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    tail = path.rsplit("/", 1)[-1]
    if ":" in tail and tail.rsplit(":", 1)[1] in ("predict", "classify", "regress"):
        name = path.split("/v1/models/", 1)[1].split("/", 1)[0].split(":", 1)[0] if "/v1/models/" in path else model
        return Target(parts.hostname, port, path + query, "tfserving", name)
    if path.endswith("/infer"):
        name = path.split("/v2/models/", 1)[1].split("/", 1)[0] if "/v2/models/" in path else model
        return Target(parts.hostname, port, path + query, "v2", name)
    if model is None:
        return Target(parts.hostname, port, path + query, None, None)
    proto: Protocol = protocol or "tfserving"
    base = path.rstrip("/")
    m = quote(model, safe="")
    if proto == "tfserving":
        ver = f"/versions/{version}" if version else ""
        return Target(parts.hostname, port, f"{base}/v1/models/{m}{ver}:predict{query}", proto, model)
    ver = f"/versions/{version}" if version else ""
    return Target(parts.hostname, port, f"{base}/v2/models/{m}{ver}/infer{query}", proto, model)


def metadata_path(target: Target) -> str:
    """Where the model describes its inputs: TF Serving's `/metadata` or V2's model metadata."""
    if target.model is None or target.protocol is None:
        raise UserError("a sample body needs a model: pass --model NAME or a :predict / /infer URL, or --body FILE")
    head = target.path.split("?", 1)[0]
    if target.protocol == "tfserving":
        return head.rsplit(":", 1)[0] + "/metadata"
    return head[: -len("/infer")]


@dataclass(frozen=True)
class InputSpec:
    name: str
    datatype: str  # a V2 datatype name
    shape: tuple[int, ...]  # -1 for a variable dimension


# TF Serving's DataType enum names -> V2 datatype names.
_TF_DTYPES = {
    "DT_FLOAT": "FP32", "DT_DOUBLE": "FP64", "DT_HALF": "FP16", "DT_BFLOAT16": "FP32",
    "DT_INT8": "INT8", "DT_INT16": "INT16", "DT_INT32": "INT32", "DT_INT64": "INT64",
    "DT_UINT8": "UINT8", "DT_UINT16": "UINT16", "DT_UINT32": "UINT32", "DT_UINT64": "UINT64",
    "DT_BOOL": "BOOL", "DT_STRING": "BYTES",
}
_NUMPY = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "INT8": np.int8, "INT16": np.int16,
          "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64, "BOOL": np.bool_}


def inputs_from_metadata(doc: Any, protocol: Protocol, signature: str = "serving_default") -> list[InputSpec]:
    """The inputs a model declares, from TF Serving's metadata or V2's model metadata."""
    try:
        if protocol == "v2":
            return [InputSpec(i["name"], str(i["datatype"]).upper(), tuple(int(d) for d in i["shape"]))
                    for i in doc["inputs"]]
        defs = doc["metadata"]["signature_def"]
        # TF Serving nests the map once more ({"signature_def": {"signature_def": {...}}}); accept both.
        if "signature_def" in defs and isinstance(defs["signature_def"], dict):
            defs = defs["signature_def"]
        if signature not in defs:
            raise UserError(f"the model has no signature {signature!r} (it has: {', '.join(sorted(defs)) or 'none'})")
        specs = []
        for alias, info in defs[signature]["inputs"].items():
            dtype = str(info.get("dtype") or info.get("datatype"))
            if "tensor_shape" in info:
                ts = info["tensor_shape"]
                shape = (-1,) if ts.get("unknown_rank") else tuple(int(d.get("size", -1)) for d in ts.get("dim", []))
            else:
                shape = tuple(int(d) for d in info.get("shape", ()))
            specs.append(InputSpec(alias, _TF_DTYPES.get(dtype, dtype.upper()), shape))
        return specs
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"cannot read the model's inputs from its metadata ({type(exc).__name__}: {exc})") from None


def sample_tensor(spec: InputSpec, batch: int, rng: np.random.Generator) -> np.ndarray | list[bytes]:
    """A deterministic sample: a variable first dimension is the batch, other variable ones are 1."""
    shape = _shape_for(spec, batch)
    if spec.datatype == "BYTES":
        return [b"sample"] * int(np.prod(shape, dtype=np.int64))
    dtype = _NUMPY.get(spec.datatype)
    if dtype is None:
        raise UserError(f"input {spec.name!r} has datatype {spec.datatype!r}, which a sample cannot be built for")
    if dtype is np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.random(size=shape).astype(dtype)


def sample_body(inputs: list[InputSpec], protocol: Protocol, batch: int = 1, signature: str | None = None,
                seed: int = 0) -> bytes:
    """A request body that satisfies `inputs`: TF Serving's columnar `inputs`, or a V2 infer request."""
    if not inputs:
        raise UserError("the model declares no inputs; pass a body with --body FILE")
    rng = np.random.default_rng(seed)
    tensors = {}
    for spec in inputs:
        value = sample_tensor(spec, batch, rng)
        if isinstance(value, list):
            value = np.array(value, dtype=object).reshape(_shape_for(spec, batch))
        tensors[spec.name] = (spec.datatype, value)
    return tensors_body(tensors, protocol, signature)


def tensors_body(tensors: dict[str, tuple[str, np.ndarray]], protocol: Protocol, signature: str | None = None) -> bytes:
    """Encode named tensors (V2 datatype, array; BYTES as an object array of bytes or str) as a request."""
    if protocol == "v2":
        out = []
        for name, (datatype, value) in tensors.items():
            data = [v.decode() if isinstance(v, bytes) else v for v in value.reshape(-1).tolist()]
            out.append({"name": name, "shape": list(value.shape), "datatype": datatype, "data": data})
        return orjson.dumps({"inputs": out})
    columns: dict[str, Any] = {}
    for name, (datatype, value) in tensors.items():
        if datatype == "BYTES":
            b64 = [{"b64": base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode()}
                   for v in value.reshape(-1).tolist()]
            columns[name] = np.array(b64, dtype=object).reshape(value.shape).tolist()
        else:
            columns[name] = value.tolist()
    body: dict[str, Any] = {"inputs": columns}
    if signature and signature != "serving_default":
        body["signature_name"] = signature
    return orjson.dumps(body)


def _shape_for(spec: InputSpec, batch: int) -> list[int]:
    return [batch if i == 0 and d < 0 else (1 if d < 0 else d) for i, d in enumerate(spec.shape)] or [1]


def read_body(path: str) -> bytes:
    """A request body from a file ('-' for stdin); JSON bodies are checked so a typo fails before the run."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read body {path}: {exc.strerror or exc}") from None
    if data[:1] in (b"{", b"["):
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UserError(f"body {path} is not valid JSON: {exc}") from None
    return data


def encode(target: Target, method: str, body: bytes, headers: list[tuple[str, str]] = ()) -> bytes:
    """The request, encoded once and written as is for every send."""
    extra = list(headers)
    if body and not any(k.lower() == "content-type" for k, _ in extra):
        extra.append(("Content-Type", "application/json"))
    return build_request(method, f"{target.host}:{target.port}", target.path, body, extra)
