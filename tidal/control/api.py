"""The control plane's HTTP API: a thin adapter (token check, decode, call an operation or read, encode)."""

from __future__ import annotations

import hmac
import logging
import os
import re
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, unquote

import orjson
from pydantic import ValidationError

from tidal.control.operations import Operations, validation_message
from tidal.control.reconciler import Reconciler
from tidal.control.rollouts import Rollouts, view as rollout_view
from tidal.control.views import node_view, service_view
from tidal.errors import InvalidArgument, NotFound, TidalError, UserError
from tidal.http.server import Request, Response, error_response
from tidal.states import ReplicaState

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
WRITES = ("POST", "PATCH", "PUT")

__all__ = ["Api", "PREFIX", "validation_message"]


class Api:
    """Routes (all under /api/v1, all need `Authorization: Bearer <token>`)."""

    def __init__(self, reconciler: Reconciler, token: str, gateway_url: str, wake: Callable[[], None],
                 console: Callable | None = None, *, operations: Operations | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.r = reconciler
        self.store = reconciler.store
        self.token = token.encode()
        self.gateway_url = gateway_url
        self.console = console
        self._wake = wake
        # The operator's allowances come from the control plane's environment unless the caller passes them.
        self.ops = operations or Operations.build(reconciler, wake, os.environ if env is None else env)
        self.rollouts = Rollouts(reconciler, wake, self.ops.admission)
        self.routes: list[tuple[str, re.Pattern, Callable]] = []
        for method, pattern, fn in [
            ("GET", r"/healthz", self.healthz),
            ("GET", r"/services", self.list_services),
            ("POST", r"/services", self.create_service),
            ("GET", r"/services/(?P<name>[^/]+)", self.get_service),
            ("PATCH", r"/services/(?P<name>[^/]+)", self.update_service),
            ("DELETE", r"/services/(?P<name>[^/]+)", self.delete_service),
            ("PUT", r"/services/(?P<name>[^/]+)/autoscaler", self.put_autoscaler),
            ("POST", r"/services/(?P<name>[^/]+)/rollout", self.start_rollout),
            ("PUT", r"/services/(?P<name>[^/]+)/traffic", self.set_traffic),
            ("POST", r"/services/(?P<name>[^/]+)/promote", self.promote),
            ("POST", r"/services/(?P<name>[^/]+)/rollback", self.rollback),
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
            ("POST", r"/wake", self.wake),
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
            if req.method in WRITES and not isinstance(body, dict):
                return error_response(400, f"the request body must be a JSON object, not {_json_kind(body)}")
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
            allow = ", ".join(sorted(set(allowed)))
            resp = error_response(405, f"{req.method} is not allowed on {path} (allowed: {allow})")
            resp.headers = [("Allow", allow)]
            return resp
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
        # Failures of the last 10 minutes come along, so `serve get` can say why replicas do not come up.
        failed = self.store.replicas(name, states=(ReplicaState.FAILED,), stopped_since=self.r.clock.now() - 600)
        out = service_view(row, self.store.replicas(name) + failed, self.gateway_url,
                           self.store.get_autoscaler(name), self._nodes())
        return self._with_rollout(out)

    def _with_rollout(self, out: dict) -> dict:
        """A service's rollout (its last one), with the gateway's counts of each release while it is in progress."""
        name = out["name"]
        r = self.rollouts.current(name)
        counts = self.r.release_counts(r, self.r.clock.now()) if r is not None and r.active else None
        out["rollout"] = rollout_view(r, self.store.replicas(name), counts, out.get("desired"))
        return out

    def _nodes(self) -> dict:
        return {n.name: n for n in self.store.nodes()}

    def list_services(self, **_: Any) -> list:
        reps, nodes = self.store.replicas(), self._nodes()
        return [self._with_rollout(service_view(s, reps, self.gateway_url, self.store.get_autoscaler(s.spec.name),
                                                nodes))
                for s in self.store.list_services()]

    def create_service(self, body: dict, **_: Any):
        done = self.ops.create_service(body)
        out = self._service(done.name)
        if done.notes:
            out["runtime_note"] = done.notes[0]
        out["warnings"] = list(done.warnings)
        return 201, out

    def get_service(self, name: str, **_: Any) -> dict:
        return self._service(name)

    def update_service(self, name: str, body: dict, **_: Any) -> dict:
        self.ops.update_service(name, body)
        return self._service(name)

    async def start_rollout(self, name: str, body: dict, **_: Any) -> dict:
        done = await self.rollouts.start(name, body)
        return dict(self._service(name), message=done.message)

    async def set_traffic(self, name: str, body: dict, **_: Any) -> dict:
        done = await self.rollouts.traffic(name, body)
        return dict(self._service(name), message=done.message)

    async def promote(self, name: str, **_: Any) -> dict:
        done = await self.rollouts.promote(name)
        return dict(self._service(name), message=done.message)

    async def rollback(self, name: str, **_: Any) -> dict:
        done = await self.rollouts.rollback(name)
        return dict(self._service(name), message=done.message)

    def delete_service(self, name: str, **_: Any) -> dict:
        self.ops.delete_service(name)
        return {"deleted": name}

    def put_autoscaler(self, name: str, body: dict, **_: Any) -> dict:
        self.ops.set_autoscaler(name, body)
        return self._service(name)

    def apply_hpa(self, body: dict, **_: Any) -> dict:
        bound = self.ops.apply_hpa(body)
        return {"service": bound.service, "hpa": bound.hpa, "note": bound.note}

    def delete_autoscaler(self, name: str, **_: Any) -> dict:
        self.ops.delete_autoscaler(name)
        return {"deleted": name}

    def _pool(self, name: str) -> dict:
        spec = self.store.get_pool(name)
        nodes = self.store.nodes(name)
        cost = self.r.cost(name)
        prices = {}
        for n in nodes:
            t = self.r.catalog.lookup(n.instance_type, n.zone)
            prices[n.name] = t.price(n.zone, n.billing) if t else None
        return {"name": spec.name, "labels": spec.labels,
                "nodes": [node_view(n, prices[n.name]) for n in nodes],
                "spec": spec.model_dump(), "plan": self.r.pool_plan(name), "cost": cost.as_dict()}

    def list_pools(self, **_: Any) -> list:
        return [self._pool(p.name) for p in self.store.list_pools()]

    def create_pool(self, body: dict, **_: Any):
        return 201, self._pool(self.ops.create_pool(body).name)

    def get_pool(self, name: str, **_: Any) -> dict:
        return self._pool(name)

    def delete_pool(self, name: str, **_: Any) -> dict:
        self.ops.delete_pool(name)
        return {"deleted": name}

    async def preempt(self, name: str, body: dict, **_: Any) -> dict:
        return {"preempted": (await self.ops.preempt(name, body)).nodes}

    def list_volumes(self, **_: Any) -> list:
        return [v.model_dump() for v in self.store.list_volumes()]

    def create_volume(self, body: dict, **_: Any):
        return 201, self.ops.create_volume(body).model_dump()

    def delete_volume(self, name: str, **_: Any) -> dict:
        self.ops.delete_volume(name)
        return {"deleted": name}

    def events(self, query: dict, **_: Any) -> list:
        try:
            since = int(query.get("since", 0))
            limit = min(10000, int(query.get("limit", 200)))
        except ValueError:
            raise InvalidArgument("since and limit must be integers") from None
        return [dict(e.to_dict(), id=e.id) for e in self.store.events(since, limit, query.get("object"))]

    def wake(self, **_: Any) -> dict:
        """The gateway holds requests for a service with no ready replica: run a pass now (it reads the queue)."""
        self._wake()
        return {"ok": True}

    def top(self, **_: Any) -> dict:
        services = []
        for s in self.list_services():
            try:
                st = self.r.gateway.stats(s["name"])
                traffic = {"qps": st.qps, "p50": st.p50, "p99": st.p99, "requests": st.requests,
                           "errors": st.errors, "in_flight": st.in_flight, "queued": st.queued}
            except NotFound:
                traffic = None
            last = (s.get("autoscaler") or {}).get("last")
            services.append({"name": s["name"], "desired": s["desired"], "available": s["available"],
                             "traffic": traffic, "autoscaler": last,
                             "scaled_to_zero": s["desired"] == 0 and (last or {}).get("reason") == "ScaledToZero"})
        nodes = []
        for n in self.store.nodes():
            t = self.r.catalog.lookup(n.instance_type, n.zone)
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
            reps = self.store.replicas(name, states=tuple(ReplicaState))[-5:]
        out = []
        for r in reps:
            lines = self.r.backend.logs(r.id, tail).splitlines()
            out.append({"replica": r.id, "state": r.state, "lines": lines})
        return {"logs": out}


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


async def _maybe_await(x):
    if hasattr(x, "__await__"):
        return await x
    return x

