"""The console's HTTP handler: the built page under /console/, its JSON API, and token-guarded actions.

The control plane mounts it: `console = ConsoleApp(provider, token=..., clock=...)`, then in
its own handler `resp = console.handle(request); if resp is not None: return resp`.
"""

from __future__ import annotations

import hmac
import inspect
import mimetypes
from importlib import resources
from typing import Any, Awaitable, Optional, Union
from urllib.parse import parse_qs, unquote

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidal.clock import Clock, RealClock
from tidal.console.model import NodePool, NodePools, Overview, ServiceDetail, ServiceSummary
from tidal.console.provider import ACTIONS, ConsoleProvider
from tidal.control.operations import ScaleRequest
from tidal.errors import TidalError
from tidal.http.server import Request, Response, error_response

PREFIX = "/console"
DEFAULT_WINDOW = 900.0
MAX_WINDOW = 7 * 24 * 3600.0


def _not_allowed(message: str, allow: str) -> Response:
    """405 with the `Allow` header HTTP asks for."""
    resp = error_response(405, message)
    resp.headers = [("Allow", allow)]
    return resp


class PreemptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    notice_seconds: Optional[float] = Field(None, ge=0)  # None: the node pool's own notice


# The console's request bodies; a scale is the operations' own input, so its bounds are the API's.
_BODIES = {"scale": ScaleRequest, "preempt": PreemptBody}


def service_json(s: ServiceSummary) -> dict[str, Any]:
    return {**s.model_dump(mode="json"), "savings": round(s.savings, 4)}


def overview_json(o: Overview, now: float) -> dict[str, Any]:
    cost = sum(s.cost_per_hour for s in o.services)
    od = sum(s.on_demand_cost_per_hour for s in o.services)
    return {"time": now, "services": [service_json(s) for s in o.services],
            "totals": {"services": len(o.services), "cost_per_hour": round(cost, 4),
                       "on_demand_cost_per_hour": round(od, 4),
                       "savings": round(max(0.0, 1 - cost / od), 4) if od > 0 else 0.0}}


def detail_json(d: ServiceDetail, now: float, window: float) -> dict[str, Any]:
    replicas = []
    for r in d.replicas:
        doc = r.model_dump(mode="json")
        doc["age_seconds"] = round(max(0.0, now - r.started_at), 1) if r.started_at is not None else None
        replicas.append(doc)
    start = now - window
    return {"time": now, "service": service_json(d.service), "replicas": replicas,
            "series": d.series.since(start).model_dump(mode="json"),
            "decisions": [x.model_dump(mode="json") for x in sorted(d.decisions, key=lambda x: -x.time)],
            "events": [e.model_dump(mode="json") for e in sorted(d.events, key=lambda e: -e.time)],
            "rollout": d.rollout.model_dump(mode="json") if d.rollout is not None else None}


def pool_json(p: NodePool) -> dict[str, Any]:
    by_zone: dict[str, dict[str, int]] = {}
    cpu_used = cpu_total = mem_used = mem_total = 0.0
    for n in p.nodes:
        counts = by_zone.setdefault(n.zone, {"spot": 0, "on-demand": 0})
        counts[n.billing] += 1
        if n.cpu:
            cpu_used, cpu_total = cpu_used + n.cpu.used, cpu_total + n.cpu.total
        if n.memory_mb:
            mem_used, mem_total = mem_used + n.memory_mb.used, mem_total + n.memory_mb.total
    return {**p.model_dump(mode="json"), "by_zone": dict(sorted(by_zone.items())),
            "billing": {b: sum(1 for n in p.nodes if n.billing == b) for b in ("spot", "on-demand")},
            "cost_per_hour": round(sum(n.price_per_hour for n in p.nodes), 4),
            "utilization": {"cpu": round(cpu_used / cpu_total, 4) if cpu_total else None,
                            "memory": round(mem_used / mem_total, 4) if mem_total else None}}


def nodepools_json(n: NodePools, now: float) -> dict[str, Any]:
    return {"time": now, "pools": [pool_json(p) for p in n.pools]}


def _json(doc: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(doc), headers=[("Cache-Control", "no-store")])


async def _value(x: Union[Any, Awaitable[Any]]) -> Any:
    return await x if inspect.isawaitable(x) else x


class ConsoleApp:
    """Serves the console from `provider`'s data. Read-only to anyone; actions need `token` (Bearer)."""

    def __init__(self, provider: ConsoleProvider, *, token: Optional[str] = None, clock: Clock | None = None,
                 prefix: str = PREFIX) -> None:
        self.provider = provider
        self.token = token
        self.clock = clock or RealClock()
        self.prefix = prefix.rstrip("/")
        self._static: dict[str, tuple[bytes, bytes]] = {}

    # -- routing
    def handle(self, req: Request) -> Optional[Union[Response, Awaitable[Response]]]:
        """The response for a console path, or None for any other path (the caller routes it)."""
        path = req.path
        if path == self.prefix:
            return Response(308, b"", b"text/plain", [("Location", self.prefix + "/")])
        if not path.startswith(self.prefix + "/"):
            return None
        rest = path[len(self.prefix) + 1:]
        if rest.startswith("api/"):
            return self._api(req, rest[4:])
        if req.method not in ("GET", "HEAD"):
            return _not_allowed(f"method {req.method} not allowed on {path}", "GET, HEAD")
        return self._file(rest or "index.html")

    def _file(self, name: str) -> Response:
        if name.startswith("static/"):
            name = name[len("static/"):]
        if "/" in name or name.startswith("."):
            return error_response(404, f"no console file {name!r}")
        cached = self._static.get(name)
        if cached is None:
            try:
                data = resources.files("tidal.console").joinpath("static", name).read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                return error_response(404, f"no console file {name!r}")
            ctype = (mimetypes.guess_type(name)[0] or "application/octet-stream")
            if ctype.startswith("text/") or ctype.endswith("javascript"):
                ctype += "; charset=utf-8"
            cached = self._static[name] = (data, ctype.encode())
        data, ctype = cached
        # index.html names the assets with a version query, so they may be cached; the page itself may not.
        cache = "no-cache" if name == "index.html" else "public, max-age=300"
        return Response(200, data, ctype, [("Cache-Control", cache)])

    def authorized(self, req: Request) -> bool:
        if not self.token:
            return False
        auth = req.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    def _api(self, req: Request, route: str) -> Union[Response, Awaitable[Response]]:
        parts = [unquote(p) for p in route.split("/")]
        if req.method == "GET":
            if parts == ["overview"]:
                return self._read(lambda now: self.provider.overview(), overview_json)
            if parts == ["nodepools"]:
                return self._read(lambda now: self.provider.nodepools(), nodepools_json)
            if parts == ["session"]:
                offered = [a for a in ACTIONS if hasattr(self.provider, a)]
                return _json({"authenticated": self.authorized(req), "actions": offered if self.token else []})
            if len(parts) == 2 and parts[0] == "services" and parts[1]:
                try:
                    window = self._window(req.query)
                except ValueError as exc:
                    return error_response(400, str(exc))
                return self._service(parts[1], window)
            return error_response(404, f"no console API route {route!r}")
        if req.method == "POST":
            if len(parts) == 3 and parts[0] == "services" and parts[2] == "scale":
                return self._act(req, "scale", parts[1])
            if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "preempt":
                return self._act(req, "preempt", parts[1])
            return error_response(404, f"no console action {route!r}")
        return _not_allowed(f"method {req.method} not allowed on the console API", "GET, POST")

    @staticmethod
    def _window(query: str) -> float:
        values = parse_qs(query).get("window")
        if not values:
            return DEFAULT_WINDOW
        try:
            window = float(values[0])
        except ValueError:
            raise ValueError(f"bad window {values[0]!r}: expected seconds") from None
        if not 0 < window <= MAX_WINDOW:
            raise ValueError(f"bad window {values[0]!r}: expected 0 < seconds <= {MAX_WINDOW:g}")
        return window

    # -- handlers
    async def _read(self, fetch, render) -> Response:
        now = self.clock.now()
        try:
            return _json(render(await _value(fetch(now)), now))
        except TidalError as exc:
            return error_response(exc.http_status, exc.message)

    async def _service(self, name: str, window: float) -> Response:
        now = self.clock.now()
        try:
            detail = await _value(self.provider.service(name))
        except TidalError as exc:
            return error_response(exc.http_status, exc.message)
        if detail is None:
            return error_response(404, f"no service {name!r}")
        return _json(detail_json(detail, now, window))

    async def _act(self, req: Request, action: str, target: str) -> Response:
        if not self.token:
            return error_response(403, "actions are disabled: the console was started without an API token")
        if not self.authorized(req):
            return error_response(401, "actions need the API token (Authorization: Bearer TOKEN)")
        method = getattr(self.provider, action, None)
        if method is None:
            return error_response(501, f"this control plane does not offer {action!r}")
        try:
            body = _BODIES[action].model_validate_json(req.body or b"{}")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "body"
            return error_response(400, f"bad {action} request: {where}: {first['msg']}")
        try:
            if action == "scale":
                message = await method(target, body.replicas)
            else:
                message = await method(target, body.notice_seconds)
        except TidalError as exc:
            return error_response(exc.http_status, exc.message)
        return _json({"ok": True, "message": message})

