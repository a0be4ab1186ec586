"""The model server's request handler: dispatch to the TF Serving and V2 adapters, health and metrics."""

from __future__ import annotations

from tidal.http.server import DEFAULT_MAX_BODY, Request, Response, error_response
from tidal.server.metrics import ServerMetrics
from tidal.server.tfserving import TFServingAPI
from tidal.server.v2 import V2API

METRICS_PATHS = ("/metrics", "/monitoring/prometheus/metrics")
PROMETHEUS_TEXT = b"text/plain; version=0.0.4; charset=utf-8"


class ModelServerApp:
    """A handler for tidal.http.server.HttpServer over a model manager (see docs/CONTRACTS.md)."""

    def __init__(self, manager, metrics: ServerMetrics | None = None, *, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.manager = manager
        self.metrics = metrics if metrics is not None else ServerMetrics()
        self.tfserving = TFServingAPI(manager, self.metrics)
        self.v2 = V2API(manager, self.metrics, max_body=max_body)

    def __call__(self, req: Request):
        path = req.path
        # TF Serving matches its routes case-insensitively ("(?i)/v1/.*").
        if path.startswith("/v1/") or path[:4].lower() == "/v1/":
            return self.tfserving.handle(req)
        if path.startswith("/v2"):
            return self.v2.handle(req)
        if path in METRICS_PATHS:
            if req.method != "GET":
                return error_response(405, f"{path} takes GET")
            return Response(200, self.metrics.render(), content_type=PROMETHEUS_TEXT)
        return error_response(404, f"Not found: {req.method} {path}")
