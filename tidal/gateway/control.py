"""A supervised gateway's route control: `/-/control/...` endpoints for its control plane only, and its routes file.

The control plane sends the whole route table (`PUT /-/control/routes`); the gateway
applies it as one change and writes it to its routes file, so a gateway that restarts
while the control plane is down serves at once with the routes it was last given.
Every path here needs the control plane's token (`Authorization: Bearer ...`).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qs

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from tidal.errors import AlreadyExists, NotFound
from tidal.files import write_private
from tidal.gateway.config import RoutesFile, ServiceConfig
from tidal.gateway.routing import RouteSpec, build_table
from tidal.http.server import Request, Response, error_response

log = logging.getLogger(__name__)

PREFIX = "/-/control/"
ROUTES = PREFIX + "routes"
HELLO = PREFIX + "hello"
QPS = PREFIX + "qps"
STATS = PREFIX + "stats"
RELEASES = PREFIX + "releases"
SIGNALS = PREFIX + "signals"  # the autoscaler's gateway signals over a window (rate, concurrency, queue, p90)
_ALLOW = {HELLO: "GET", ROUTES: "GET, PUT", QPS: "GET", STATS: "GET", RELEASES: "GET",
          SIGNALS: "GET"}  # a path's methods, for 405's Allow


class RouteDocument(BaseModel):
    """The whole route table, as the control plane sends it."""

    model_config = ConfigDict(extra="forbid")

    services: list[ServiceConfig] = []


def check_claims(services: Iterable[ServiceConfig], domain: str = "localhost") -> None:
    """Raise `AlreadyExists` when two services claim one host or model, `ValueError` for a replica id used
    twice in a service or a service named twice (the gateway's own rules, checked before anything changes)."""
    services = list(services)
    names = [s.name for s in services]
    if len(set(names)) != len(names):
        raise ValueError(f"a service is named twice in the table: {sorted(names)}")
    for s in services:
        ids = [ep.id for ep in s.replicas]
        if len(set(ids)) != len(ids):
            raise ValueError(f"service {s.name!r}: replica ids must be unique, got {ids}")
    build_table([RouteSpec(s.name, s.hosts, s.models) for s in services], domain=domain)


def apply_routes(gateway, current: dict[str, ServiceConfig], wanted: list[ServiceConfig]) -> None:
    """Make `gateway` serve exactly `wanted`, given that it serves `current` now.

    Nothing awaits in between, so no request sees a half-applied table. A model or host
    may move from one service to another in one table: every claim that goes is released
    first, so the claims that come never collide with one on its way out.
    """
    check_claims(wanted, gateway.settings.domain)
    names = {s.name for s in wanted}
    for name in gateway.services():
        if name not in names:
            gateway.remove_service(name)
    for s in wanted:
        old = current.get(s.name)
        if old is not None and (old.hosts, old.models) != (s.hosts, s.models):
            gateway.set_service(s.name, s.replicas, tuple(h for h in old.hosts if h in s.hosts),
                                tuple(m for m in old.models if m in s.models), deadline_seconds=s.deadline_seconds,
                                queue=s.queue, unready_reason=s.unready_reason, releases=s.releases)
    for s in wanted:
        gateway.set_service(s.name, s.replicas, s.hosts, s.models, deadline_seconds=s.deadline_seconds,
                            queue=s.queue, unready_reason=s.unready_reason, releases=s.releases)


# -- the routes file: a valid `tidal gateway --routes` file, written atomically, the owner's alone
def save_routes(path: Path, services: Iterable[ServiceConfig], host: str, port: int) -> None:
    doc = RoutesFile(host=host, port=port, services=list(services)).model_dump(mode="json", exclude_defaults=True)
    write_private(path, json.dumps(doc, indent=1))


def load_routes(path: Path) -> list[ServiceConfig]:
    """The services a routes file holds; none when it is missing or unreadable (logged, never fatal)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read the routes file %s: %s; starting with no routes", path, exc.strerror or exc)
        return []
    try:
        services = RoutesFile.model_validate_json(text).services
        check_claims(services)
        return services
    except (ValueError, AlreadyExists) as exc:  # pydantic's ValidationError is a ValueError
        log.warning("the routes file %s is not valid (%s); starting with no routes", path,
                    str(exc).splitlines()[0])
        return []


class ControlEndpoints:
    """Answers `/-/control/...` for a gateway; `handle` returns None for any other path."""

    def __init__(self, gateway, token: str, routes_file: Path | None, services: list[ServiceConfig],
                 info: Callable[[], dict] | None = None) -> None:
        self.gateway = gateway
        self._token = token.encode()
        self.routes_file = routes_file
        self.current: dict[str, ServiceConfig] = {s.name: s for s in services}
        self._info = info or dict

    def handle(self, req: Request) -> Response | None:
        if not req.path.startswith(PREFIX):
            return None
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token):
            return error_response(401, "the gateway's control endpoints need the control plane's token")
        query = {k: v[-1] for k, v in parse_qs(req.query).items()}
        try:
            if req.path == HELLO and req.method == "GET":
                return _json({**self._info(), "pid": os.getpid(), "services": len(self.current)})
            if req.path == ROUTES and req.method == "GET":
                return _json({"services": [s.model_dump(mode="json") for s in self.current.values()]})
            if req.path == ROUTES and req.method == "PUT":
                return self._put_routes(req.body)
            if req.path == QPS and req.method == "GET":
                return _json({"qps": self.gateway.qps(query.get("service", ""), float(query.get("window", "")))})
            if req.path == RELEASES and req.method == "GET":
                found = self.gateway.release_stats(query.get("service", ""), float(query.get("window", "")))
                return _json({"releases": [r.to_dict() for r in found]})
            if req.path == SIGNALS and req.method == "GET":
                return _json(self.gateway.signals(query.get("service", ""), float(query.get("window", ""))).to_dict())
            if req.path == STATS and req.method == "GET":
                return Response(200, orjson.dumps(self.gateway.stats(query.get("service", "")).to_dict(),
                                                  option=orjson.OPT_NON_STR_KEYS))
        except NotFound as exc:
            return error_response(404, exc.message)
        except ValueError as exc:
            return error_response(400, str(exc))
        allow = _ALLOW.get(req.path)
        if allow is not None:
            resp = error_response(405, f"{req.path} takes {allow}, not {req.method}")
            resp.headers = [("Allow", allow)]
            return resp
        return error_response(404, f"no control endpoint {req.method} {req.path}")

    def _put_routes(self, body: bytes) -> Response:
        try:
            doc = RouteDocument.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            return error_response(400, f"routes: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
        try:
            apply_routes(self.gateway, self.current, doc.services)
        except AlreadyExists as exc:
            return error_response(409, exc.message)
        except ValueError as exc:
            return error_response(400, str(exc))
        self.current = {s.name: s for s in doc.services}
        persisted = False
        if self.routes_file is not None:
            try:
                save_routes(self.routes_file, doc.services, self.gateway.host, self.gateway.port)
                persisted = True
            except OSError as exc:  # still serving them: only a restart before the next update would lose them
                log.error("cannot write the routes file %s: %s", self.routes_file, exc.strerror or exc)
        return _json({"services": len(doc.services), "persisted": persisted})


def _json(data) -> Response:
    return Response(200, orjson.dumps(data))
