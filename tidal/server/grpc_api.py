"""TF Serving's gRPC API (PredictionService, ModelService): decode messages, call the data plane, encode messages.

Messages and services are the ones tensorflow-serving-api ships, so TF Serving's own
clients work unchanged. Each RPC runs on the event loop the REST server uses,
through the same Servables, batchers and metrics. Messages and status codes follow
tensorflow/serving's prediction_service_impl.cc, predict_util.cc, classifier.cc,
regressor.cc, multi_inference.cc, get_model_metadata_impl.cc and get_model_status_impl.cc.
ModelService's HandleReloadConfigRequest replaces the served models with the request's
model_config_list (as a changed --model_config_file does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Callable, NamedTuple

import grpc
import numpy as np
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from tidal.errors import Code, InvalidArgument, TidalError
from tidal.server import dataplane, tensor_proto
from tidal.server.dataplane import DataPlane, Fault, Method
from tidal.server.metrics import ServerMetrics


# VersionState value -> ModelVersionStatus.State number
_STATE = {"UNKNOWN": 0, "START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}
GRPC_CODE = {code: getattr(grpc.StatusCode, code.value) for code in Code}


class GrpcBindError(OSError):
    """The gRPC port could not be bound."""


class Undecodable:
    """A request whose bytes are not its message: answered INVALID_ARGUMENT by the handler, not logged by grpcio."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _parser(cls):
    def parse(data: bytes):
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Undecodable(str(exc))
    return parse


class Rpc(NamedTuple):
    """One method's implementation, as each server engine calls it."""

    call: Callable  # request -> response or a coroutine of it, on the serving loop; raises RpcFault
    threaded: Callable  # (request, context) -> response, on a grpcio server thread


class Route(NamedTuple):
    """What the on-loop server needs for one method path: bytes -> request, the call, response -> bytes."""

    parse: Callable
    call: Callable
    serialize: Callable


def _methods(service, implementations: dict):
    for method in service.methods:
        impl = implementations.get(method.name)
        if impl is not None:
            yield (method.name, impl, message_factory.GetMessageClass(method.input_type),
                   message_factory.GetMessageClass(method.output_type))


def service_handler(service, implementations: dict[str, Rpc]) -> grpc.GenericRpcHandler:
    """grpcio handlers for the methods of a service descriptor that have an implementation; the rest: UNIMPLEMENTED."""
    handlers = {name: grpc.unary_unary_rpc_method_handler(impl.threaded, request_deserializer=_parser(request_cls),
                                                          response_serializer=response_cls.SerializeToString)
                for name, impl, request_cls, response_cls in _methods(service, implementations)}
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def service_routes(service, implementations: dict[str, Rpc]) -> dict[bytes, Route]:
    """The on-loop server's routes for the same methods, keyed by the HTTP/2 :path a client sends."""
    return {f"/{service.full_name}/{name}".encode(): Route(_parser(request_cls), impl.call,
                                                           response_cls.SerializeToString)
            for name, impl, request_cls, response_cls in _methods(service, implementations)}


def _sorted_set(names) -> str:
    return "{" + ", ".join(sorted(names)) + "}"


class RpcFault(Exception):
    """An RPC's outcome as a Fault, carried from the loop to the grpcio thread that answers."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.message)
        self.fault = fault


class OnLoop:
    """Every gRPC service's RPCs run the same way: on the serving loop (called there by the on-loop server, or
    handed over from a grpcio thread), cancelled when the client goes, their errors mapped once
    (`dataplane.report`) and their metrics recorded either way.
    `model_of(request)` and `version_of(response)` are what differs between TF Serving's messages and V2's."""

    def __init__(self, metrics: ServerMetrics, loop: Callable[[], asyncio.AbstractEventLoop], label: str,
                 metric_prefix: str, model_of: Callable[[object], str],
                 version_of: Callable[[object], str]) -> None:
        self.metrics = metrics
        self.loop = loop
        self.label = label
        self.metric_prefix = metric_prefix
        self.model_of = model_of
        self.version_of = version_of

    async def call(self, api: str, request, handler):
        """One RPC's work, on the loop: the response, or an RpcFault (metrics recorded either way)."""
        t0 = time.perf_counter()
        model = version = ""
        status = 200
        try:
            if type(request) is Undecodable:
                raise InvalidArgument(f"Failed to parse the request message: {request.error}")
            model = self.model_of(request)
            result = handler(request)
            if asyncio.iscoroutine(result):
                result = await result
            version = self.version_of(result)
            return result
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception as exc:
            f = dataplane.report(exc, f"{self.label} {api}", model)
            status = f.http_status
            raise RpcFault(f) from None
        finally:
            self.metrics.observe_request(model, version, self.metric_prefix + api, status, time.perf_counter() - t0)

    def method(self, api: str, handler) -> Rpc:
        call = self.call
        return Rpc(lambda request: call(api, request, handler), self.rpc(api, handler))

    def rpc(self, api: str, handler):
        def rpc(request, context):  # on a grpcio server thread
            future = asyncio.run_coroutine_threadsafe(self.call(api, request, handler), self.loop())
            context.add_callback(future.cancel)  # the client went away: stop the work (no-op once done)
            try:
                return future.result()
            except RpcFault as exc:
                context.abort(GRPC_CODE.get(exc.fault.code, grpc.StatusCode.UNKNOWN), exc.fault.message)
            except concurrent.futures.CancelledError:
                context.abort(grpc.StatusCode.CANCELLED, "Cancelled")
        return rpc


def tfs_model(request) -> str:
    spec = getattr(request, "model_spec", None)
    if spec is None and getattr(request, "tasks", None):  # MultiInference: one model for all tasks
        spec = request.tasks[0].model_spec
    return spec.name if spec is not None else ""


def tfs_version(response) -> str:
    spec = getattr(response, "model_spec", None)
    if spec is None and getattr(response, "results", None):
        spec = response.results[0].model_spec
    return str(spec.version.value) if spec is not None and spec.HasField("version") else ""


class Adapter:
    """The gRPC half of each RPC: request message in, data plane call, response message out."""

    def __init__(self, manager, pb, plane: DataPlane | None = None) -> None:
        self.plane = plane if plane is not None else DataPlane(manager)
        self.manager = self.plane.manager
        self.pb = pb

    # -- shared -------------------------------------------------------------------------

    @staticmethod
    def _spec(request) -> tuple[str, int | None, str | None]:
        if not request.HasField("model_spec"):
            raise InvalidArgument("Missing ModelSpec")
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        version = spec.version.value if choice == "version" else None
        label = spec.version_label if choice == "version_label" else None
        return spec.name, version, label

    def resolve(self, request):
        return self.plane.servable(*self._spec(request))

    def target(self, request, method: Method) -> dataplane.Target:
        name, version, label = self._spec(request)
        return self.plane.resolve(name, version, label, request.model_spec.signature_name, method)

    def _model_spec(self, response, servable, signature_name: str) -> None:
        spec = response.model_spec
        spec.name = servable.name
        spec.version.value = servable.version
        spec.signature_name = signature_name

    # -- Predict ------------------------------------------------------------------------

    async def predict(self, request):
        target = self.target(request, Method.PREDICT)
        servable, sig = target.servable, target.signature
        for alias in request.inputs:
            if alias not in sig.inputs:
                raise InvalidArgument(f"input tensor alias not found in signature: {alias}. Inputs expected to be "
                                      f"in the set {_sorted_set(sig.inputs)}.")
        large = self.plane.large
        # A large message's tensors are converted in a worker thread, so the loop keeps serving meanwhile.
        big = large.is_large(request.ByteSize())
        inputs = await large.run(_to_numpy, request.inputs) if big else _to_numpy(request.inputs)
        missing = [n for n in sig.inputs if n not in inputs]
        if missing:
            raise InvalidArgument(f"Request inputs do not match required inputs for model `{servable.name}`. "
                                  f"Send extra: {{}}. Missing but required: {_sorted_set(missing)}.")
        wanted = list(request.output_filter)
        seen = set()
        for alias in wanted:
            if alias not in sig.outputs:
                raise InvalidArgument(f"output tensor alias not found in signature: {alias} Outputs expected to "
                                      f"be in the set {_sorted_set(sig.outputs)}.")
            if alias in seen:
                raise InvalidArgument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        outputs = await self.plane.predict(target, inputs)
        response = self.pb.predict_pb2.PredictResponse()
        self._model_spec(response, servable, sig.name)
        outputs = {alias: arr for alias, arr in outputs.items() if not seen or alias in seen}
        if big or large.is_large(sum(a.nbytes for a in outputs.values())):
            await large.run(_from_numpy, outputs, response.outputs)
        else:
            _from_numpy(outputs, response.outputs)
        return response

    # -- Classify / Regress -------------------------------------------------------------

    def _examples(self, request_input) -> tuple[bytes, list]:
        kind = request_input.WhichOneof("kind")
        if kind == "example_list":
            context, examples = None, request_input.example_list.examples
        elif kind == "example_list_with_context":
            context = request_input.example_list_with_context.context
            examples = request_input.example_list_with_context.examples
        else:
            raise InvalidArgument("Input is empty.")
        if not examples:
            raise InvalidArgument("Input is empty.")
        return context, examples

    def _inputs(self, sig, request_input) -> tuple[dict[str, np.ndarray], int]:
        context, examples = self._examples(request_input)
        if sig.serialized_examples:
            # TF Serving's input_util: context bytes then example bytes parse as one merged Example.
            prefix = context.SerializeToString() if context is not None else b""
            arr = np.empty(len(examples), dtype=object)
            arr[:] = [prefix + ex.SerializeToString() for ex in examples]
            return {next(iter(sig.inputs)): arr}, len(examples)
        return features_to_tensors(sig, context, examples), len(examples)

    async def _run_examples(self, target: dataplane.Target, request_input, method: Method, result) -> None:
        """Run a classify/regress signature on the request's examples; fill a Classification/RegressionResult."""
        inputs, n = self._inputs(target.signature, request_input)
        if method is Method.REGRESS:
            for v in (await self.plane.regress(target, inputs, n)).tolist():
                result.regressions.add().value = v
            return
        found = await self.plane.classify(target, inputs, n)
        labels = found.labels
        scores = found.scores.tolist() if found.scores is not None else None
        for i in range(n):
            row = result.classifications.add()
            for j in range(found.width):
                cls = row.classes.add()
                if labels is not None:
                    cls.label = labels[i][j]
                if scores is not None:
                    cls.score = scores[i][j]

    async def classify(self, request):
        return await self._examples_rpc(request, Method.CLASSIFY,
                                        self.pb.classification_pb2.ClassificationResponse())

    async def regress(self, request):
        return await self._examples_rpc(request, Method.REGRESS, self.pb.regression_pb2.RegressionResponse())

    async def _examples_rpc(self, request, method: Method, response):
        """Classify and Regress: tf.Examples in, one signature of `method` run, its result and model spec out."""
        target = self.target(request, method)
        await self._run_examples(target, request.input, method, response.result)
        self._model_spec(response, target.servable, target.signature.name)
        return response

    async def multi_inference(self, request):
        """Several classify/regress signatures of one model over the same examples (multi_inference.cc)."""
        if not request.tasks:
            raise InvalidArgument("Tasks is empty")
        names, signatures = set(), set()
        for task in request.tasks:
            names.add(task.model_spec.name)
            if len(names) > 1:
                raise InvalidArgument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            if task.model_spec.signature_name in signatures:
                raise InvalidArgument(f"Duplicate evaluation of signature: {task.model_spec.signature_name}")
            signatures.add(task.model_spec.signature_name)
            if task.method_name not in (Method.CLASSIFY.value, Method.REGRESS.value):
                raise TidalError(f"Unsupported signature method_name: {task.method_name}", Code.UNIMPLEMENTED)
        servable = self.resolve(request.tasks[0])
        response = self.pb.inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            method = Method(task.method_name)
            sig = dataplane.signature(servable.signatures, task.model_spec.signature_name, method)
            target = dataplane.Target(servable, sig)
            out = response.results.add()
            result = out.classification_result if method is Method.CLASSIFY else out.regression_result
            await self._run_examples(target, request.input, method, result)
            self._model_spec(out, servable, target.signature.name)
        return response

    # -- metadata and status ------------------------------------------------------------

    def metadata(self, request):
        if not request.HasField("model_spec"):
            raise InvalidArgument("Missing ModelSpec")
        if not request.metadata_field:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise InvalidArgument(f"Metadata field {field} is not supported")
        servable = self.resolve(request)
        pb = self.pb
        sig_map = pb.get_model_metadata_pb2.SignatureDefMap()
        for name, sig in servable.signatures.items():
            sig_def = sig_map.signature_def[name]
            sig_def.method_name = sig.method
            for target, specs in ((sig_def.inputs, sig.inputs), (sig_def.outputs, sig.outputs)):
                for key, spec in specs.items():
                    info = target[key]
                    info.name = spec.name
                    info.dtype = tensor_proto.DT_ENUM[spec.datatype]
                    info.tensor_shape.unknown_rank = not getattr(spec, "rank_known", True)
                    for d in spec.shape:
                        info.tensor_shape.dim.add().size = d
        response = pb.get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(sig_map)
        return response

    async def reload_config(self, request):
        """HandleReloadConfigRequest: serve exactly the request's model_config_list (model_service_impl.cc)."""
        from google.protobuf import text_format

        from tidal.errors import UserError
        from tidal.models.config import parse_model_config_list

        kind = request.config.WhichOneof("config")
        if kind != "model_config_list":
            raise InvalidArgument("ServerCore config must be a model_config_list" if kind else
                                  "ReloadConfigRequest has no config")
        try:
            configs = parse_model_config_list(text_format.MessageToString(request.config),
                                              source="ReloadConfigRequest")
        except UserError as exc:
            raise InvalidArgument(str(exc)) from None
        await self.manager.reconfigure(configs)
        response = self.pb.model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response

    def status(self, request):
        statuses = self.manager.status(*self._spec(request))
        pb = self.pb
        response = pb.get_model_status_pb2.GetModelStatusResponse()
        codes = pb.error_codes_pb2.Code
        for st in statuses:
            out = response.model_version_status.add()
            out.version = st.version
            state = getattr(st.state, "value", st.state)
            out.state = _STATE.get(state, 0)
            code = st.error_code or "OK"
            out.status.error_code = codes.Value(code) if code in codes.keys() else codes.Value("UNKNOWN")
            out.status.error_message = st.error_message or ""
        return response


def _to_numpy(protos) -> dict[str, np.ndarray]:
    return {alias: tensor_proto.to_numpy(proto, alias) for alias, proto in protos.items()}


def _from_numpy(outputs: dict[str, np.ndarray], protos) -> None:
    for alias, arr in outputs.items():
        tensor_proto.from_numpy(arr, protos[alias])


def features_to_tensors(sig, context, examples) -> dict[str, np.ndarray]:
    """tf.Example features -> one tensor per signature input (for runtimes whose classify/regress take features)."""
    out = {}
    for name, spec in sig.inputs.items():
        column = []
        for i, ex in enumerate(examples):
            feature = ex.features.feature[name] if name in ex.features.feature else None
            if feature is None and context is not None and name in context.features.feature:
                feature = context.features.feature[name]
            if feature is None:
                raise InvalidArgument(f"Example {i} is missing feature: {name} (the signature's inputs are "
                                      f"{', '.join(sorted(sig.inputs))})")
            kind = feature.WhichOneof("kind")
            if kind is None:
                raise InvalidArgument(f"Feature: {name} of example {i} has no values")
            column.append(list(getattr(feature, kind).value))
        if len({len(c) for c in column}) != 1:
            raise InvalidArgument(f"Feature: {name} has a different number of values in different examples")
        try:
            if spec.datatype == "BYTES":
                arr = np.empty((len(column), len(column[0])), dtype=object)
                arr[:] = column
            else:
                arr = np.array(column, dtype=spec.dtype)
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgument(f"Feature: {name} cannot be converted to {spec.datatype}") from None
        if arr.ndim == len(spec.shape) + 1 and arr.shape[-1] == 1:
            arr = arr.reshape(arr.shape[:-1])
        out[name] = arr
    return out
