"""The user's actions on the control plane, with their rules written once; the HTTP API and the console adapt it.

Each action takes typed input, checks it (validation, not-found hints, the autoscaler's ownership of a
service's replica count), writes the store, records one event and wakes the reconcile loop once.
"""

from __future__ import annotations

import asyncio
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidal.capacity.catalog import placed_pool
from tidal.capacity.policies import POLICIES, pool_params
from tidal.errors import FailedPrecondition, InvalidArgument, NotFound
from tidal.spec import Admission, NodePoolSpec, ServiceSpec, VolumeSpec

M = TypeVar("M", bound=BaseModel)


class ControlCore(Protocol):
    """The members of the reconciler the actions use (and nothing else of it)."""

    store: Any
    catalog: Any
    clock: Any
    home: Any
    lock: asyncio.Lock

    def event(self, kind: str, obj: str, message: str) -> None: ...

    def preempt(self, pool_name: str, node: str | None, count: int, notice_seconds: float | None) -> list[str]: ...

    def resolve_target(self, name: str) -> str: ...

    def resolve_model_path(self, spec: ServiceSpec) -> tuple[str, dict[str, str]]: ...

    def attach_trace(self, pool_spec: NodePoolSpec) -> None: ...


# -- typed inputs the adapters decode into (the specs themselves come from tidal.spec)
class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScaleRequest(_Input):
    replicas: int = Field(ge=0, le=1000)  # ServiceSpec.replicas' bounds


class HpaRequest(_Input):
    document: dict[str, Any]


class PreemptRequest(_Input):
    node: str | None = None
    count: int = Field(default=1, ge=1, le=1000)
    notice: float | None = Field(default=None, ge=0, le=86400)  # None: the pool's own notice


class VolumeRequest(_Input):
    name: str
    url: str
    endpoint: str = ""
    options: str = ""
    secret: str = ""  # refused by VolumeSpec's admission: the control plane names secrets itself
    credentials: dict[str, str] | None = None


# -- results the adapters encode
@dataclass(frozen=True)
class Done:
    name: str
    message: str  # one line for people
    notes: tuple[str, ...] = ()  # "note: ..." lines
    warnings: tuple[str, ...] = ()  # "warning: ..." lines


@dataclass(frozen=True)
class HpaBound:
    service: str
    hpa: str
    note: str


@dataclass(frozen=True)
class Preempted:
    nodes: list[str] = field(default_factory=list)
    notice_seconds: float = 0.0


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
    msg = first.get("msg", "invalid").removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def decode(model: type[M], data: Any, admission: Admission | None = None) -> M:
    """`data` as `model`, or InvalidArgument with the first problem in one line."""
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"expected a JSON object for {model.__name__}, got {type(data).__name__}")
    try:
        if admission is not None and hasattr(model, "admit"):
            return model.admit(data, admission)
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgument(validation_message(exc)) from None


class Operations:
    """Create, update, delete and scale services; autoscalers; node pools and preemption; volumes."""

    def __init__(self, core: ControlCore, wake: Callable[[], None], admission: Admission | None = None) -> None:
        self.core = core
        self.store = core.store
        self.wake = wake
        self.admission = admission or Admission()

    @classmethod
    def build(cls, core: ControlCore, wake: Callable[[], None], env: Mapping[str, str]) -> "Operations":
        """With the operator's allowances read from `env` (the control plane's environment)."""
        return cls(core, wake, Admission.from_env(env))

    def _done(self, kind: str, obj: str, message: str) -> None:
        self.core.event(kind, obj, message)
        self.wake()

    # -- services
    def create_service(self, body: Mapping[str, Any]) -> Done:
        spec = decode(ServiceSpec, body, self.admission)
        for m in spec.data:
            self.store.get_volume(m.volume)  # NotFound with a hint when the volume is missing
        base = self.core.resolve_model_path(spec)[0] if spec.model_path else None
        self.store.create_service(spec, self.core.clock.now())
        self._done("ServiceCreated", f"service/{spec.name}",
                   f"{spec.type} release {spec.release} (workload {spec.workload}), {spec.replicas} replica(s)")
        notes, warnings = _model_notes(spec, base)
        return Done(spec.name, f"service {spec.name} created", notes, warnings)

    def update_service(self, name: str, changes: Mapping[str, Any]) -> Done:
        if not isinstance(changes, Mapping):
            raise InvalidArgument("expected a JSON object of the fields to change")
        row = self.store.get_service(name)
        if changes.get("name", name) != name:
            raise InvalidArgument(f"a service cannot be renamed ({name} -> {changes['name']})")
        if "replicas" in changes:
            self._owned_by_autoscaler(name)
        self._not_rolling(name, changes)
        spec = decode(ServiceSpec, {**row.spec.model_dump(), **changes, "name": name}, self.admission)
        self.store.update_service(spec, spec.replicas if "replicas" in changes else None)
        what = ", ".join(sorted(k for k in changes if k != "name")) or "nothing"
        self._done("ServiceUpdated", f"service/{name}", f"updated: {what}")
        return Done(name, f"service {name} updated: {what}")

    def scale_service(self, name: str, request: ScaleRequest | Mapping[str, Any], by: str = "") -> Done:
        req = request if isinstance(request, ScaleRequest) else decode(ScaleRequest, request)
        row = self.store.get_service(name)
        self._owned_by_autoscaler(name)
        self.store.update_service(row.spec.model_copy(update={"replicas": req.replicas}), req.replicas)
        self._done("ServiceScaled", f"service/{name}",
                   f"replicas set to {req.replicas}{f' from {by}' if by else ''} (was {row.desired})")
        return Done(name, f"{name}: desired replicas {row.desired} -> {req.replicas}")

    def _not_rolling(self, name: str, changes: Mapping[str, Any]) -> None:
        """During a rollout the stable release stays what it is: a change goes to a canary or waits."""
        from tidal.control.releases import load
        r = load(self.store.get_rollout_record(name), name)
        changed = sorted(k for k in changes if k not in ("name", "replicas"))
        if r is not None and r.active and changed:
            raise FailedPrecondition(f"service {name} has a rollout in progress ({r.progress()}): promote it or "
                                     f"roll it back before changing {', '.join(changed)}")

    def _owned_by_autoscaler(self, name: str) -> None:
        """One rule for every way of setting a count: an autoscaler owns its service's replicas, and a manual
        count is refused (not ignored, not overwritten a moment later) with what to do instead."""
        found = self.store.get_autoscaler(name)
        if found is None:
            return
        doc = found[0] if isinstance(found[0], dict) else {}
        spec = doc.get("spec") or {}
        bounds = f" ({spec.get('minReplicas', 1)} to {spec.get('maxReplicas')} replicas)" if spec else ""
        raise FailedPrecondition(f"an autoscaler sets {name}'s replicas{bounds}: change its min/max "
                                 f"(`tidal autoscale {name} --min N --max M`) or remove it "
                                 f"(`tidal autoscale {name} --delete`)")

    def delete_service(self, name: str) -> Done:
        self.store.delete_service(name)
        self._done("ServiceDeleted", f"service/{name}", "deleted; its replicas drain and stop")
        return Done(name, f"service {name} deleted")

    # -- autoscalers
    def set_autoscaler(self, name: str, request: HpaRequest | Mapping[str, Any]) -> Done:
        from tidal.autoscaling.hpafile import parse_hpa
        req = request if isinstance(request, HpaRequest) else decode(HpaRequest, request)
        self.store.get_service(name)
        spec = parse_hpa(req.document)
        self.store.put_autoscaler(name, req.document, self.core.clock.now())
        self._done("AutoscalerSet", f"service/{name}",
                   f"HPA {spec.name or name}: {spec.min_replicas} to {spec.max_replicas} replicas")
        return Done(name, f"{name}: {spec.min_replicas} to {spec.max_replicas} replicas")

    def apply_hpa(self, request: HpaRequest | Mapping[str, Any]) -> HpaBound:
        from tidal.autoscaling.hpafile import parse_hpa
        req = request if isinstance(request, HpaRequest) else decode(HpaRequest, request)
        spec = parse_hpa(req.document)
        target = spec.scale_target_ref.name
        name = self.core.resolve_target(target)
        svc = self.store.get_service(name).spec
        self.store.put_autoscaler(name, req.document, self.core.clock.now())
        note = "" if target in (svc.name, svc.release, svc.workload) else \
            f" scaleTargetRef {target} names another version of it: bound to its running workload {svc.workload}"
        self._done("AutoscalerSet", f"service/{name}",
                   f"HPA {spec.name}: {spec.min_replicas} to {spec.max_replicas} replicas{note}")
        return HpaBound(name, spec.name, note.strip())

    def delete_autoscaler(self, name: str) -> Done:
        self.store.get_service(name)
        if self.store.get_autoscaler(name) is None:
            raise NotFound(f"service {name!r} has no autoscaler")
        self.store.delete_autoscaler(name)
        self._done("AutoscalerDeleted", f"service/{name}",
                   f"autoscaler removed; replicas stay at {self.store.get_service(name).desired} until set")
        return Done(name, f"autoscaler of {name} removed")

    # -- node pools
    def create_pool(self, body: Mapping[str, Any]) -> Done:
        spec = decode(NodePoolSpec, body, self.admission)
        if spec.policy not in POLICIES:
            raise InvalidArgument(f"unknown capacity policy {spec.policy!r} (known: {', '.join(POLICIES)})")
        try:
            pool_params(spec.policy, spec.model_dump(), spec.policy_params)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        spec = placed_pool(spec, self.core.catalog)  # one provider and region, its types and zones checked there
        if spec.spot_trace:
            from tidal.sim.traces import load_spot_traces
            load_spot_traces(spec.spot_trace)  # a bad trace fails the create, not the loop
        self.store.create_pool(spec, self.core.clock.now())
        self.core.attach_trace(spec)
        self._done("NodePoolCreated", f"nodepool/{spec.name}",
                   f"labels {spec.labels}, policy {spec.policy}, "
                   f"{'spot' if spec.spot else 'on-demand'}, {spec.min_nodes}-{spec.max_nodes} nodes")
        return Done(spec.name, f"node pool {spec.name} created")

    def delete_pool(self, name: str) -> Done:
        self.store.get_pool(name)
        busy = [n.name for n in self.store.nodes(name)]
        if busy:
            raise FailedPrecondition(f"node pool {name!r} still has nodes ({', '.join(busy)}); "
                                     f"delete the services placed on it and wait for it to scale in")
        self.store.delete_pool(name)
        self._done("NodePoolDeleted", f"nodepool/{name}", "deleted")
        return Done(name, f"node pool {name} deleted")

    async def preempt(self, pool: str, request: PreemptRequest | Mapping[str, Any]) -> Preempted:
        req = request if isinstance(request, PreemptRequest) else decode(PreemptRequest, request)
        spec = self.store.get_pool(pool)
        async with self.core.lock:
            nodes = self.core.preempt(pool, req.node, req.count, req.notice)
        self.wake()  # the reconciler records each node's PreemptionNotice itself
        return Preempted(nodes, spec.notice_seconds if req.notice is None else req.notice)

    async def preempt_node(self, node: str, notice: float | None = None) -> Preempted:
        """A preemption of one node, named without its pool (the console's way)."""
        row = self.store.get_node(node)
        return await self.preempt(row.pool, PreemptRequest(node=node, notice=notice))

    # -- volumes
    def create_volume(self, body: Mapping[str, Any]) -> VolumeSpec:
        req = decode(VolumeRequest, body)
        spec = decode(VolumeSpec, req.model_dump(exclude={"credentials"}), self.admission)
        if spec.url.startswith("file://") and not Path(spec.url[len("file://"):]).is_dir():
            raise InvalidArgument(f"volume {spec.name}: no folder {spec.url[len('file://'):]} on the control "
                                  f"plane's machine (create it first, or fix --url)")
        if req.credentials:
            secret = f"volume-{spec.name}"
            self.core.home.put_secret(secret, req.credentials)
            spec = spec.model_copy(update={"secret": secret})
        try:
            old = self.store.get_volume(spec.name)
        except NotFound:
            old = None
        self.store.put_volume(spec, self.core.clock.now())
        if old is not None and old.secret and old.secret != spec.secret:
            self.core.home.delete_secret(old.secret)
        self._done("VolumeCreated", f"volume/{spec.name}",
                   f"{spec.url}{' (credentials in the secret store)' if spec.secret else ''}")
        return spec

    def delete_volume(self, name: str) -> Done:
        users = [s.spec.name for s in self.store.list_services() if any(m.volume == name for m in s.spec.data)]
        if users:
            raise FailedPrecondition(f"volume {name!r} is used by service(s) {', '.join(users)}")
        vol = self.store.get_volume(name)
        self.store.delete_volume(name)
        if vol.secret:
            self.core.home.delete_secret(vol.secret)
        self._done("VolumeDeleted", f"volume/{name}", "deleted")
        return Done(name, f"volume {name} deleted")


def _model_notes(spec: ServiceSpec, base: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(notes, warnings) about the model a new service serves: a local path that is not there, and
    `serve tensorflow` on an ONNX model (or without TensorFlow): which runtime the replicas will use."""
    if base is None:
        return (), ()
    local = "://" not in base
    if local and not Path(base).exists():
        return (), (f"warning: the model path {base} does not exist on this machine: "
                    f"replicas cannot load {spec.model_name} until it does",)
    if spec.type != "tensorflow":
        return (), ()
    has_tf = importlib.util.find_spec("tensorflow") is not None
    if not local or not Path(base).is_dir():
        return (() if has_tf else ("note: TensorFlow is not installed here; the replicas serve the model with "
                                   "the runtime its files need (ONNX Runtime for model.onnx)",)), ()
    onnx = any(Path(base).glob("*/*.onnx"))
    saved = any(Path(base).glob("*/saved_model.pb"))
    if onnx and not saved:
        return (f"note: {base} holds ONNX models: served with ONNX Runtime"
                + ("" if has_tf else " (TensorFlow is not installed here)"),), ()
    if saved and not has_tf:
        return (), (f"warning: TensorFlow is not installed here and {base} holds SavedModels: "
                    f"replicas cannot load them",)
    return (), ()
