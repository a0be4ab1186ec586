"""The Open Inference Protocol over gRPC (inference.GRPCInferenceService) as a thin adapter over the data plane.

Served on the same port and by the same server as TF Serving's services
(`grpc_server.GrpcServer`): each RPC's work runs on the serving loop, so a model is resolved,
batched and its errors mapped exactly as for /v2 over REST. Tensors come as typed `contents` or as
`raw_input_contents`; the answer uses the form the request used (raw when any output
has no typed field, FP16), which is what tritonclient and KServe's client expect.
"""

from __future__ import annotations

import math

import grpc
import numpy as np

from tidal import __version__
from tidal.errors import Code, InvalidArgument
from tidal.server import dataplane
from tidal.server.dataplane import DataPlane, Fault, Method
from tidal.server.grpc_api import OnLoop, Rpc, RpcFault, Undecodable, service_handler
from tidal.server.metrics import ServerMetrics
from tidal.server.protos import open_inference_grpc_pb2 as pb
from tidal.server.tensors import MAX_RANK, DType, dtype_of_array, v2_dtype
from tidal.server.v2 import EXTENSIONS, metadata_doc, model_version, ready_doc
from tidal.server.v2_codec import _binary_bytes, _binary_tensor

# datatype -> the InferTensorContents field that holds it (FP16 and BF16 have none: raw contents only)
_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
          "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
          "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
          "FP64": "fp64_contents", "BYTES": "bytes_contents"}
_FIELDS = sorted(set(_FIELD.values()))


# -- tensors --------------------------------------------------------------------------

def _shape(tensor, name: str) -> tuple[int, ...]:
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"input '{name}': shape {list(shape)} has a negative dimension")
    if len(shape) > MAX_RANK:
        raise InvalidArgument(f"input '{name}': shape has {len(shape)} dimensions; a tensor has at most {MAX_RANK}")
    return shape


def _typed(contents, dt: DType, shape: tuple[int, ...], name: str) -> np.ndarray:
    field = _FIELD.get(dt.v2)
    if field is None:
        raise InvalidArgument(f"input '{name}': {dt.v2} has no typed contents field; send it in raw_input_contents")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        for other in _FIELDS:
            if other != field and len(getattr(contents, other)):
                raise InvalidArgument(f"input '{name}' of {dt.v2} has its values in {other}; {dt.v2} values go "
                                      f"in {field}")
        raise InvalidArgument(f"input '{name}': shape {list(shape)} needs {count} elements, {field} has "
                              f"{len(values)}")
    if dt.kind == "bytes":
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    if dt.kind in ("int", "uint") and dt.np.itemsize < 4 and count:
        wide = np.asarray(values, dtype=np.int64)
        info = np.iinfo(dt.np)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidArgument(f"input '{name}': a value is outside the range of {dt.v2}")
        return wide.astype(dt.np).reshape(shape)
    return np.asarray(values, dtype=dt.np).reshape(shape)


def decode_inputs(request, sig, model: str) -> dict[str, np.ndarray]:
    """A ModelInferRequest's input tensors, from typed contents or raw_input_contents, checked against `sig`."""
    if not request.inputs:
        raise InvalidArgument("infer request needs inputs: a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
                              "give one per input, in the order of inputs")
    out: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise InvalidArgument(f"inputs[{i}] needs a name")
        if name in out:
            raise InvalidArgument(f"input '{name}' is given more than once")
        dt = v2_dtype(tensor.datatype)
        dataplane.check_datatype(sig, name, tensor.datatype, model)
        shape = _shape(tensor, name)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(f"input '{name}' has contents while raw_input_contents is used; give each "
                                      "input's data one way")
            out[name] = _binary_tensor(memoryview(raw[i]), dt, shape, name)
        else:
            out[name] = _typed(tensor.contents, dt, shape, name)
    return out


def requested_outputs(request, sig, model: str) -> list[str]:
    if not request.outputs:
        return list(sig.outputs)
    names = []
    for i, out in enumerate(request.outputs):
        if not out.name:
            raise InvalidArgument(f"outputs[{i}] needs a name")
        if out.name not in sig.outputs:
            raise InvalidArgument(f"unexpected inference output '{out.name}' for model '{model}'")
        names.append(out.name)
    return names


def encode_outputs(response, outputs: dict[str, np.ndarray], names: list[str], raw: bool, model: str) -> None:
    """Fill a ModelInferResponse's outputs, as raw_output_contents or typed contents."""
    found = []
    for name in names:
        arr = outputs.get(name)
        if arr is None:
            raise InvalidArgument(f"model '{model}' did not produce output '{name}'")
        dt = dtype_of_array(arr)
        found.append((name, arr, dt))
        raw = raw or dt.v2 not in _FIELD
    for name, arr, dt in found:
        t = response.outputs.add()
        t.name = name
        t.datatype = dt.v2
        t.shape.extend(arr.shape)
        if raw:
            response.raw_output_contents.append(_binary_bytes(arr, dt))
            continue
        values = getattr(t.contents, _FIELD[dt.v2])
        flat = arr.reshape(-1)
        if dt.kind == "bytes":
            values.extend(v if type(v) is bytes else str(v).encode("utf-8") for v in flat.tolist())
        else:
            values.extend(flat.tolist())


# -- the service ----------------------------------------------------------------------

class V2GrpcService:
    """inference.GRPCInferenceService over the data plane; `service()` plugs it into GrpcServer."""

    def __init__(self, plane: DataPlane, metrics: ServerMetrics, loop_getter, *,
                 server_name: str = "tidal") -> None:
        self.plane = plane
        self.manager = plane.manager
        self.metrics = metrics
        self.server_name = server_name
        # The serving loop is known once the gRPC server starts: `loop_getter` gives it then.
        self._runner = OnLoop(metrics, loop_getter, "gRPC V2", "grpc_v2_",
                              lambda r: getattr(r, "model_name", None) or getattr(r, "name", ""),
                              lambda r: getattr(r, "model_version", ""))

    # -- RPCs on the loop -----------------------------------------------------------

    async def infer(self, request):
        plane = self.plane
        name = request.model_name
        target = plane.resolve(name, model_version(name, request.model_version), None, None,
                               Method.PREDICT)
        sig = target.signature
        large = plane.large
        big = large.is_large(request.ByteSize())
        inputs = (await large.run(decode_inputs, request, sig, target.model) if big
                  else decode_inputs(request, sig, target.model))
        names = requested_outputs(request, sig, target.model)
        outputs = await plane.predict(target, inputs)
        del inputs
        response = pb.ModelInferResponse(model_name=target.model, model_version=str(target.version), id=request.id)
        raw = bool(request.raw_input_contents)
        if big or large.is_large(sum(a.nbytes for a in outputs.values())):
            await large.run(encode_outputs, response, outputs, names, raw, target.model)
        else:
            encode_outputs(response, outputs, names, raw, target.model)
        return response

    def model_ready(self, request):
        doc = ready_doc(self.plane, request.name, model_version(request.name, request.version))
        return pb.ModelReadyResponse(ready=doc["ready"])

    def model_metadata(self, request):
        doc = metadata_doc(self.plane, request.name, model_version(request.name, request.version))
        response = pb.ModelMetadataResponse(name=doc["name"], versions=doc["versions"], platform=doc["platform"])
        for target, specs in ((response.inputs, doc["inputs"]), (response.outputs, doc["outputs"])):
            for spec in specs:
                target.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        return response

    # -- RPCs with no model state involved: answered where they arrive (grpcio's thread or the loop) --

    def server_live(self, request):
        return pb.ServerLiveResponse(live=True)

    def server_ready(self, request):
        return pb.ServerReadyResponse(ready=bool(self.manager.ready))

    def server_metadata(self, request):
        return pb.ServerMetadataResponse(name=self.server_name, version=__version__, extensions=EXTENSIONS)

    # -- plumbing -------------------------------------------------------------------

    def _on_loop(self, api: str, handler) -> Rpc:
        return self._runner.method(api, handler)

    @staticmethod
    def _direct(handler) -> Rpc:
        def call(request):
            if type(request) is Undecodable:
                raise RpcFault(Fault(Code.INVALID_ARGUMENT, 400, f"Failed to parse the request message: "
                                                                 f"{request.error}", False))
            return handler(request)

        def threaded(request, context):
            if type(request) is Undecodable:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Failed to parse the request message: "
                                                                f"{request.error}")
            return handler(request)
        return Rpc(call, threaded)

    def service(self) -> tuple[object, dict[str, Rpc]]:
        return pb.DESCRIPTOR.services_by_name["GRPCInferenceService"], {
            "ServerLive": self._direct(self.server_live),
            "ServerReady": self._direct(self.server_ready),
            "ServerMetadata": self._direct(self.server_metadata),
            "ModelReady": self._on_loop("ready", self.model_ready),
            "ModelMetadata": self._on_loop("metadata", self.model_metadata),
            "ModelInfer": self._on_loop("infer", self.infer),
        }

    def handler(self) -> grpc.GenericRpcHandler:
        """The service as a grpcio handler."""
        return service_handler(*self.service())
