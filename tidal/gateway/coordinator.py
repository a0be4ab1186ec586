"""The gateway's coordinator over its workers: route updates that reach every worker, metrics read as one view.

In front of `ControlEndpoints` when the gateway runs workers: a `PUT /-/control/routes`
is answered once every worker has the new table; the reads (QPS, signals, stats,
releases, `/-/metrics`, `/-/stats`) are answered from a view that serves nothing and
counts what every process counts (see `tidal.gateway.workers.merge`).
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from tidal.gateway.control import PREFIX, QPS, RELEASES, ROUTES, SIGNALS, STATS, ControlEndpoints, apply_routes
from tidal.gateway.workers import WorkerPool, merge, snapshot
from tidal.http.server import Request, error_response

_MERGED = frozenset({QPS, STATS, SIGNALS, RELEASES, "/-/metrics", "/-/stats"})


class Coordinator:
    """`handle` in the place of `ControlEndpoints.handle`: None for paths it does not answer."""

    def __init__(self, endpoints: ControlEndpoints, pool: WorkerPool, token: str) -> None:
        self.endpoints = endpoints
        self.gateway = endpoints.gateway
        self.pool = pool
        self._token = token

    def handle(self, req: Request):
        path = req.path
        if path == "/-/healthz" or not path.startswith("/-/"):
            return None
        if path == ROUTES and req.method == "PUT":
            return self._put_routes(req)
        if path in _MERGED and req.method == "GET":
            if path.startswith(PREFIX) and not self._authorized(req):
                return self.endpoints.handle(req)  # its 401
            return self._merged(req)
        return self.endpoints.handle(req)

    def _authorized(self, req: Request) -> bool:
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token.encode())

    async def _put_routes(self, req: Request):
        resp = self.endpoints.handle(req)
        if resp is not None and resp.status == 200:
            # Answered once every worker serves the new table, so the caller's next request sees it anywhere.
            await self.pool.broadcast_routes()
        return resp

    async def _merged(self, req: Request):
        from tidal.gateway.proxy import Gateway
        release_window = None
        if req.path == RELEASES:
            try:
                release_window = float(parse_qs(req.query).get("window", [""])[-1])
            except ValueError:
                release_window = None  # the view's endpoint answers 400 for it
        services = list(self.endpoints.current.values())
        view = Gateway(self.gateway.host, self.gateway.port, settings=self.gateway.settings)
        try:
            apply_routes(view, {}, services)
            mine = snapshot(self.gateway, release_window)
            merge(view, [mine, *await self.pool.snapshots(release_window)])
            if req.path.startswith(PREFIX):
                return ControlEndpoints(view, self._token, None, services).handle(req)
            return view._admin(req)
        except ValueError as exc:
            return error_response(500, f"the gateway's workers' counts cannot be merged: {exc}")
        finally:
            for name in view.services():
                view.remove_service(name)  # closes the view's (never used) connection pools
