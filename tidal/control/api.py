"""The control plane's HTTP API: a thin adapter (token check, decode, call the store or reconciler, encode)."""

from __future__ import annotations

import hmac
import importlib.util
import logging
import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

import orjson
from pydantic import ValidationError

from tidal.capacity.policies import POLICIES, pool_params
from tidal.control.reconciler import Reconciler
from tidal.control.views import node_view, service_view
from tidal.errors import InvalidArgument, NotFound, TidalError, UserError
from tidal.http.server import Request, Response, error_response
from tidal.spec import NodePoolSpec, ServiceSpec, VolumeSpec

log = logging.getLogger(__name__)

PREFIX = "/api/v1"


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
    msg = first.get("msg", "invalid").removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


class Api:
    """Routes (all under /api/v1, all need `Authorization: Bearer <token>`)."""

    def __init__(self, reconciler: Reconciler, token: str, gateway_url: str, wake: Callable[[], None],
                 console: Callable | None = None) -> None:
        self.r = reconciler
        self.store = reconciler.store
        self.token = token.encode()
        self.gateway_url = gateway_url
        self.wake = wake
        self.console = console
        self.routes: list[tuple[str, re.Pattern, Callable]] = []
        for method, pattern, fn in [
            ("GET", r"/healthz", self.healthz),
            ("GET", r"/services", self.list_services),
            ("POST", r"/services", self.create_service),
            ("GET", r"/services/(?P<name>[^/]+)", self.get_service),
            ("PATCH", r"/services/(?P<name>[^/]+)", self.update_service),
            ("DELETE", r"/services/(?P<name>[^/]+)", self.delete_service),
            ("PUT", r"/services/(?P<name>[^/]+)/autoscaler", self.put_autoscaler),
            ("DELETE", r"/services/(?P<name>[^/]+)/autoscaler", self.delete_autoscaler),
            ("POST", r"/autoscalers", self.apply_hpa),
            ("GET", r"/nodepools", self.list_pools),
            ("POST", r"/nodepools", self.create_pool),
            ("GET", r"/nodepools/(?P<name>[^/]+)", self.get_pool),
            ("DELETE", r"/nodepools/(?P<name>[^/]+)", self.delete_pool),
            ("POST", r"/nodepools/(?P<name>[^/]+)/preempt", self.preempt),
            ("GET", r"/volumes", self.list_volumes),
            ("POST", r"/volumes", self.create_volume),
            ("DELETE", r"/volumes/(?P<name>[^/]+)", self.delete_volume),
            ("GET", r"/events", self.events),
            ("GET", r"/top", self.top),
            ("GET", r"/logs/(?P<name>[^/]+)", self.logs),
        ]:
            self.routes.append((method, re.compile(f"^{PREFIX}{pattern}$"), fn))

    # -- dispatch
    async def handle(self, req: Request) -> Response:
        if self.console is not None and not req.path.startswith(PREFIX + "/"):
            return await _maybe_await(self.console(req))
        if not self._authorized(req):
            return error_response(401, "missing or wrong API token (send 'Authorization: Bearer <token>'; "
                                       "the token is in $TIDAL_HOME/token)")
        path = unquote(req.path)
        allowed = []
        for method, pattern, fn in self.routes:
            m = pattern.match(path)
            if m is None:
                continue
            if method != req.method:
                allowed.append(method)
                continue
            try:
                body = orjson.loads(req.body) if req.body else {}
            except orjson.JSONDecodeError as exc:
                return error_response(400, f"request body is not valid JSON: {exc}")
            query = {k: v[-1] for k, v in parse_qs(req.query).items()}
            try:
                result = await _maybe_await(fn(body=body, query=query, **m.groupdict()))
            except ValidationError as exc:
                return error_response(400, validation_message(exc))
            except TidalError as exc:
                return error_response(exc.http_status, exc.message)
            except UserError as exc:
                return error_response(400, str(exc))
            except Exception as exc:  # a bug must not take the control plane down
                log.exception("API %s %s failed", req.method, path)
                return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
            status, data = result if isinstance(result, tuple) else (200, result)
            return Response(status, orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
        if allowed:
            return error_response(405, f"{req.method} is not allowed on {path} (allowed: {', '.join(allowed)})")
        return error_response(404, f"no API route {path}")

    def _authorized(self, req: Request) -> bool:
        auth = req.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)

    # -- handlers
    def healthz(self, **_: Any) -> dict:
        return {"ok": True, "gateway": self.gateway_url}

    def _service(self, name: str) -> dict:
        row = self.store.get_service(name)
        return service_view(row, self.store.replicas(name), self.gateway_url, self.store.get_autoscaler(name),
                            self._nodes())

    def _nodes(self) -> dict:
        return {n.name: n for n in self.store.nodes()}

    def list_services(self, **_: Any) -> list:
        reps, nodes = self.store.replicas(), self._nodes()
        return [service_view(s, reps, self.gateway_url, self.store.get_autoscaler(s.spec.name), nodes)
                for s in self.store.list_services()]

    def create_service(self, body: dict, **_: Any):
        spec = ServiceSpec.model_validate(body)
        for m in spec.data:
            self.store.get_volume(m.volume)  # NotFound with a hint if the volume is missing
        if spec.model_path:
            self.r.resolve_model_path(spec)
        self.store.create_service(spec, self.r.clock.now())
        self.r.event("ServiceCreated", f"service/{spec.name}",
                     f"{spec.type} release {spec.release} (workload {spec.workload}), {spec.replicas} replica(s)")
        self.wake()
        out = self._service(spec.name)
        note = self._runtime_note(spec)
        if note:
            out["runtime_note"] = note
        return 201, out

    def _runtime_note(self, spec: ServiceSpec) -> str | None:
        """`serve tensorflow` on an ONNX model (or without TensorFlow): say which runtime the replicas will use."""
        if spec.type != "tensorflow" or not spec.model_path:
            return None
        has_tf = importlib.util.find_spec("tensorflow") is not None
        base, _ = self.r.resolve_model_path(spec)
        if "://" in base or not Path(base).is_dir():
            return None if has_tf else ("note: TensorFlow is not installed here; the replicas serve the model with "
                                        "the runtime its files need (ONNX Runtime for model.onnx)")
        onnx = any(Path(base).glob("*/*.onnx"))
        saved = any(Path(base).glob("*/saved_model.pb"))
        if onnx and not saved:
            return (f"note: {base} holds ONNX models: served with ONNX Runtime"
                    + ("" if has_tf else " (TensorFlow is not installed here)"))
        if saved and not has_tf:
            return f"warning: TensorFlow is not installed here and {base} holds SavedModels: replicas cannot load them"
        return None

    def get_service(self, name: str, **_: Any) -> dict:
        return self._service(name)

    def update_service(self, name: str, body: dict, **_: Any) -> dict:
        row = self.store.get_service(name)
        data = row.spec.model_dump()
        data.update(body)
        data["name"] = name
        spec = ServiceSpec.model_validate(data)
        desired = spec.replicas if "replicas" in body and self.store.get_autoscaler(name) is None else None
        self.store.update_service(spec, desired)
        self.r.event("ServiceUpdated", f"service/{name}", f"updated: {', '.join(sorted(body)) or 'nothing'}")
        self.wake()
        return self._service(name)

    def delete_service(self, name: str, **_: Any) -> dict:
        self.store.delete_service(name)
        self.r.event("ServiceDeleted", f"service/{name}", "deleted; its replicas drain and stop")
        self.wake()
        return {"deleted": name}

    def put_autoscaler(self, name: str, body: dict, **_: Any) -> dict:
        from tidal.autoscaling.spec import parse_hpa
        self.store.get_service(name)
        document = body.get("document")
        spec = parse_hpa(document)
        self.store.put_autoscaler(name, document, self.r.clock.now())
        self.r.event("AutoscalerSet", f"service/{name}",
                     f"HPA {spec.name or name}: {spec.min_replicas} to {spec.max_replicas} replicas")
        self.wake()
        return self._service(name)

    def apply_hpa(self, body: dict, **_: Any) -> dict:
        from tidal.autoscaling.spec import parse_hpa
        document = body.get("document")
        spec = parse_hpa(document)
        target = spec.scale_target_ref.name
        name = self.r.resolve_target(target)
        svc = self.store.get_service(name).spec
        self.store.put_autoscaler(name, document, self.r.clock.now())
        note = "" if target in (svc.name, svc.release, svc.workload) else \
            f" scaleTargetRef {target} names another version of it: bound to its running workload {svc.workload}"
        self.r.event("AutoscalerSet", f"service/{name}",
                     f"HPA {spec.name}: {spec.min_replicas} to {spec.max_replicas} replicas{note}")
        self.wake()
        return {"service": name, "hpa": spec.name, "note": note.strip()}

    def delete_autoscaler(self, name: str, **_: Any) -> dict:
        self.store.delete_autoscaler(name)
        return {"deleted": name}

    def _pool(self, name: str) -> dict:
        spec = self.store.get_pool(name)
        nodes = self.store.nodes(name)
        cost = self.r.cost(name)
        prices = {}
        for n in nodes:
            t = self.r.catalog.types.get(n.instance_type)
            prices[n.name] = t.price(n.zone, n.billing) if t else None
        return {"name": spec.name, "labels": spec.labels,
                "nodes": [node_view(n, prices[n.name]) for n in nodes],
                "spec": spec.model_dump(), "plan": self.r.pool_plan(name), "cost": cost.as_dict()}

    def list_pools(self, **_: Any) -> list:
        return [self._pool(p.name) for p in self.store.list_pools()]

    def create_pool(self, body: dict, **_: Any):
        spec = NodePoolSpec.model_validate(body)
        if spec.policy not in POLICIES:
            raise InvalidArgument(f"unknown capacity policy {spec.policy!r} (known: {', '.join(POLICIES)})")
        try:
            pool_params(spec.policy, spec.model_dump(), spec.policy_params)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        self.r.catalog.validate_pool(spec.instance_types, spec.zones)
        if not any(True for _ in self.r.catalog.offerings(spec.instance_types, spec.zones, "on-demand")):
            raise InvalidArgument("the pool's instance types and zones leave no offering to launch")
        if spec.spot_trace:
            from tidal.sim.traces import load_spot_traces
            load_spot_traces(spec.spot_trace)  # a bad trace fails the create, not the loop
        self.store.create_pool(spec, self.r.clock.now())
        self.r.attach_trace(spec)
        self.r.event("NodePoolCreated", f"nodepool/{spec.name}",
                     f"labels {spec.labels}, policy {spec.policy}, "
                     f"{'spot' if spec.spot else 'on-demand'}, {spec.min_nodes}-{spec.max_nodes} nodes")
        self.wake()
        return 201, self._pool(spec.name)

    def get_pool(self, name: str, **_: Any) -> dict:
        return self._pool(name)

    def delete_pool(self, name: str, **_: Any) -> dict:
        busy = [n.name for n in self.store.nodes(name)]
        if busy:
            raise InvalidArgument(f"node pool {name!r} still has nodes ({', '.join(busy)}); "
                                  f"delete the services placed on it and wait for it to scale in")
        self.store.delete_pool(name)
        return {"deleted": name}

    async def preempt(self, name: str, body: dict, **_: Any) -> dict:
        notice = body.get("notice")
        count = body.get("count", 1)
        if notice is not None and (not isinstance(notice, (int, float)) or notice < 0):
            raise InvalidArgument("notice must be a number of seconds >= 0")
        if not isinstance(count, int):
            raise InvalidArgument("count must be an integer")
        async with self.r.lock:
            nodes = self.r.preempt(name, body.get("node"), count, notice)
        self.wake()
        return {"preempted": nodes}

    def list_volumes(self, **_: Any) -> list:
        return [v.model_dump() for v in self.store.list_volumes()]

    def create_volume(self, body: dict, **_: Any):
        creds = body.pop("credentials", None) or {}
        spec = VolumeSpec.model_validate(body)
        if creds:
            if not isinstance(creds, dict) or not all(isinstance(v, str) for v in creds.values()):
                raise InvalidArgument("credentials must be an object of strings")
            secret = f"volume-{spec.name}"
            self.r.home.put_secret(secret, creds)
            spec = spec.model_copy(update={"secret": secret})
        try:
            old = self.store.get_volume(spec.name)
        except NotFound:
            old = None
        self.store.put_volume(spec, self.r.clock.now())
        if old is not None and old.secret and old.secret != spec.secret:
            self.r.home.delete_secret(old.secret)
        self.r.event("VolumeCreated", f"volume/{spec.name}",
                     f"{spec.url}{' (credentials in the secret store)' if spec.secret else ''}")
        return 201, spec.model_dump()

    def delete_volume(self, name: str, **_: Any) -> dict:
        users = [s.spec.name for s in self.store.list_services() if any(m.volume == name for m in s.spec.data)]
        if users:
            raise InvalidArgument(f"volume {name!r} is used by service(s) {', '.join(users)}")
        vol = self.store.get_volume(name)
        self.store.delete_volume(name)
        if vol.secret:
            self.r.home.delete_secret(vol.secret)
        return {"deleted": name}

    def events(self, query: dict, **_: Any) -> list:
        try:
            since = int(query.get("since", 0))
            limit = min(10000, int(query.get("limit", 200)))
        except ValueError:
            raise InvalidArgument("since and limit must be integers") from None
        return [dict(e.to_dict(), id=e.id) for e in self.store.events(since, limit, query.get("object"))]

    def top(self, **_: Any) -> dict:
        services = []
        for s in self.list_services():
            try:
                st = self.r.gateway.stats(s["name"])
                traffic = {"qps": st.qps, "p50": st.p50, "p99": st.p99, "requests": st.requests,
                           "errors": st.errors, "in_flight": st.in_flight}
            except NotFound:
                traffic = None
            services.append({"name": s["name"], "desired": s["desired"], "available": s["available"],
                             "traffic": traffic, "autoscaler": (s.get("autoscaler") or {}).get("last")})
        nodes = []
        for n in self.store.nodes():
            t = self.r.catalog.types.get(n.instance_type)
            nodes.append(node_view(n, t.price(n.zone, n.billing) if t else None))
        describe = getattr(self.r.gateway, "describe", None)  # the gateway process: pid, up since, restarts
        return {"time": self.r.clock.now(), "services": services, "nodes": nodes, "cost": self.r.cost().as_dict(),
                "gateway": describe() if describe else None}

    def logs(self, name: str, query: dict, **_: Any) -> dict:
        try:
            tail = max(1, min(100000, int(query.get("tail", 100))))
        except ValueError:
            raise InvalidArgument("tail must be an integer") from None
        try:
            reps = [self.store.get_replica(name)]
        except NotFound:
            self.store.get_service(name)
            reps = self.store.replicas(name, states=("pending", "starting", "ready", "notified", "draining",
                                                     "stopped", "failed"))[-5:]
        out = []
        for r in reps:
            path = self.r.backend.log_path(r.id)
            try:
                with open(path, "rb") as f:
                    lines = f.read().decode(errors="replace").splitlines()[-tail:]
            except FileNotFoundError:
                lines = []
            out.append({"replica": r.id, "state": r.state, "lines": lines})
        return {"logs": out}


async def _maybe_await(x):
    if hasattr(x, "__await__"):
        return await x
    return x

