"""The control plane's handle on a gateway process: the in-process `Gateway`'s methods, over HTTP on 127.0.0.1.

The client keeps the route table the control plane wants (its mirror) and sends the
whole table to the gateway whenever it changes. Claims are checked here, against the
mirror, so a model name another service answers for raises `AlreadyExists` at once, as
the in-process gateway does. Calls stay synchronous (the reconcile pass makes them) and
short: one keep-alive connection, half a second at most per call.

While the gateway cannot be reached, route changes go to the mirror and the latest
table is sent when it is back; `services()` answers from the mirror. Reads:
- `qps` answers the last rate read for that service and window, so the autoscaler sees
  the rate it saw, not a drop to zero, and does not scale in on a gateway outage (the
  HPA's scale-down stabilization then holds; a burst-mode panic does not end early).
  With no rate read yet it raises `GatewayUnreachable`, a `NotFound`, which the
  reconciler reads as "no traffic yet" (the HPA's 5 min scale-down window holds).
- `stats` and `signals` raise `GatewayUnreachable`: callers show no traffic figures, and the
  autoscaler reads the gateway's signals as missing metrics (the HPA holds).
A restarted gateway starts with empty QPS windows: rates climb back over the window.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from typing import Callable, Iterable
from urllib.parse import urlencode

import orjson

from tidal.errors import AlreadyExists, Internal, NotFound
from tidal.gateway.config import (GatewaySettings, QueueSettings, ReleaseSplit, ReplicaEndpoint, ReplicaState,
                                  ServiceConfig)
from tidal.gateway.control import QPS, RELEASES, ROUTES, SIGNALS, STATS, check_claims
from tidal.gateway.metrics import GatewaySignals
from tidal.gateway.proxy import ReplicaStats, ServiceStats
from tidal.gateway.releases import ReleaseStats

log = logging.getLogger(__name__)


class GatewayUnreachable(NotFound):
    """The gateway process did not answer. A `NotFound`, so callers that show "no traffic data" keep working."""


class _Unreachable(Exception):
    pass


def connect_host(host: str) -> str:
    """Where to reach a gateway listening on `host` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


class GatewayClient:
    """Build with the gateway's address, the token and the routes it serves now; `attach()` once it answers."""

    def __init__(self, host: str, port: int, token: str, *, services: Iterable[ServiceConfig] = (),
                 settings: GatewaySettings | None = None, timeout: float = 0.5, retry_seconds: float = 0.5,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.port = port
        self.settings = settings or GatewaySettings()
        self._token = token
        self._timeout = timeout
        self._retry_seconds = retry_seconds
        self._monotonic = monotonic
        self._routes: dict[str, ServiceConfig] = {s.name: s for s in services}
        self._attached = False
        self._dirty = True  # the gateway may not hold the mirror yet
        self._down_until = 0.0
        self._failures = 0  # calls in a row the gateway did not answer
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.RLock()
        self._last_qps: dict[tuple[str, float], float] = {}
        # Set by the supervisor: what `tidal top` shows about the process.
        self.describe: Callable[[], dict] = lambda: {"mode": "process", "url": self.url}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- the supervisor's interface
    def attach(self, port: int) -> bool:
        """The gateway (new or adopted) answers on `port`: send it the latest table now. True when it took it."""
        with self._lock:
            self.port = port
            self._close()
            self._attached = True
            self._dirty = True
            self._down_until = 0.0
            self._failures = 0
            return self._flush()

    def detach(self) -> None:
        """The gateway is gone: keep changes in the mirror until the next `attach`."""
        with self._lock:
            self._attached = False
            self._close()

    @property
    def reachable(self) -> bool:
        return self._attached and self._down_until <= self._monotonic() and not self._dirty

    def routes(self) -> list[ServiceConfig]:
        """The table the control plane wants (what a restarted gateway must serve)."""
        return list(self._routes.values())

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the in-process gateway's interface
    def set_service(self, name: str, replicas: Iterable[ReplicaEndpoint], hosts: Iterable[str] = (),
                    models: Iterable[str] = (), *, deadline_seconds: float | None = None,
                    queue: QueueSettings | None = None, unready_reason: str | None = None,
                    releases: ReleaseSplit | None = None) -> None:
        config = ServiceConfig(name=name, replicas=tuple(replicas), hosts=tuple(hosts), models=tuple(models),
                               deadline_seconds=deadline_seconds, queue=queue, unready_reason=unready_reason,
                               releases=releases)
        ids = [ep.id for ep in config.replicas]
        if len(set(ids)) != len(ids):
            raise ValueError(f"service {name!r}: replica ids must be unique, got {ids}")
        if self._routes.get(name) == config:
            if self._dirty:  # the reconcile pass repeats itself each tick: a good time to send what is pending
                with self._lock:
                    self._flush()
            return
        check_claims([*(s for s in self._routes.values() if s.name != name), config], self.settings.domain)
        self._change(name, config)

    def set_replica_state(self, service: str, replica_id: str, state: ReplicaState) -> None:
        if state not in ("ready", "draining"):
            raise ValueError(f"replica state must be 'ready' or 'draining', got {state!r}")
        svc = self._service(service)
        if not any(r.id == replica_id for r in svc.replicas):
            raise NotFound(f"service {service!r} has no replica {replica_id!r}")
        replicas = tuple(r.model_copy(update={"state": state}) if r.id == replica_id else r for r in svc.replicas)
        self._change(service, svc.model_copy(update={"replicas": replicas}))

    def remove_service(self, name: str) -> None:
        self._service(name)
        self._change(name, None)

    def services(self) -> list[str]:
        return sorted(self._routes)

    def endpoint(self, service: str) -> str:
        self._service(service)
        host = connect_host(self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.settings.path_prefix}{service}"

    def qps(self, service: str, window_seconds: float) -> float:
        self._service(service)
        key = (service, float(window_seconds))
        try:
            data = self._get(QPS, {"service": service, "window": repr(float(window_seconds))})
        except GatewayUnreachable:
            if key in self._last_qps:
                return self._last_qps[key]
            raise
        value = float(data["qps"])
        self._last_qps[key] = value
        return value

    def signals(self, service: str, window_seconds: float) -> GatewaySignals:
        self._service(service)
        return GatewaySignals(**self._get(SIGNALS, {"service": service, "window": repr(float(window_seconds))}))

    def stats(self, service: str) -> ServiceStats:
        self._service(service)
        d = self._get(STATS, {"service": service})
        windows = {k: {float(w): v for w, v in d[k].items()} for k in ("qps", "error_qps", "p50", "p99")}
        return ServiceStats(name=d["name"], in_flight=d["in_flight"], requests=d["requests"], errors=d["errors"],
                            retries=d["retries"], **windows, replicas=[ReplicaStats(**r) for r in d["replicas"]],
                            queued=d.get("queued", 0))

    def release_stats(self, service: str, window_seconds: float) -> list[ReleaseStats]:
        """Each release's answers over the window; raises `GatewayUnreachable` (callers then judge nothing)."""
        self._service(service)
        d = self._get(RELEASES, {"service": service, "window": repr(float(window_seconds))})
        return [ReleaseStats(**r) for r in d["releases"]]

    # -- inside
    def _service(self, name: str) -> ServiceConfig:
        svc = self._routes.get(name)
        if svc is None:
            raise NotFound(f"the gateway has no service {name!r}")
        return svc

    def _change(self, name: str, config: ServiceConfig | None) -> None:
        with self._lock:
            before = self._routes.get(name)
            if config is None:
                self._routes.pop(name, None)
                for key in [k for k in self._last_qps if k[0] == name]:
                    del self._last_qps[key]
            else:
                self._routes[name] = config
            self._dirty = True
            try:
                self._flush()
            except Exception:
                # The gateway refused the table (it never should: claims were checked here): keep what it serves.
                if before is None:
                    self._routes.pop(name, None)
                else:
                    self._routes[name] = before
                raise

    def _flush(self) -> bool:
        """Send the whole table if the gateway lacks it. False while it cannot be reached (it stays pending)."""
        if not self._dirty:
            return True
        # Defaults left out, as in the routes file: a gateway from before a field was added (one adopted after an
        # upgrade) still takes a table that does not use it.
        body = orjson.dumps({"services": [s.model_dump(mode="json", exclude_defaults=True)
                                          for s in self._routes.values()]})
        try:
            self._request("PUT", ROUTES, body)
        except _Unreachable:
            return False
        self._dirty = False
        return True

    def _get(self, path: str, query: dict[str, str]) -> dict:
        with self._lock:
            try:
                if not self._flush():
                    raise _Unreachable()
                return self._request("GET", f"{path}?{urlencode(query)}" if query else path)
            except _Unreachable:
                raise GatewayUnreachable(f"the gateway at {self.url} is not answering") from None

    def _request(self, method: str, path: str, body: bytes | None = None) -> dict:
        if not self._attached or self._monotonic() < self._down_until:
            raise _Unreachable()
        headers = {"Authorization": f"Bearer {self._token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            fresh = self._conn is None
            if fresh:
                self._conn = http.client.HTTPConnection(connect_host(self.host), self.port, timeout=self._timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                status, data = resp.status, resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                # A kept-alive connection may have been closed by a gateway that restarted: one fresh try.
                if fresh or attempt:
                    log.warning("the gateway at %s did not answer %s %s: %s", self.url, method, path.split("?")[0],
                                exc)
                    # A gateway that hangs costs a timeout per try: try less often while it stays silent.
                    self._failures += 1
                    self._down_until = self._monotonic() + min(5.0, self._retry_seconds * 2 ** (self._failures - 1))
                    self._dirty = self._dirty or method == "PUT"
                    raise _Unreachable() from None
        self._failures = 0
        if status == 200:
            return orjson.loads(data)
        try:
            message = orjson.loads(data).get("error", "")
        except (orjson.JSONDecodeError, AttributeError):
            message = data[:200].decode(errors="replace")
        if status == 404:
            raise NotFound(message)
        if status == 409:
            raise AlreadyExists(message)
        if status == 400:
            raise ValueError(message)
        if status == 401:  # not our gateway, or not this home's token: nothing here may be trusted
            self._down_until = self._monotonic() + self._retry_seconds
            raise _Unreachable()
        raise Internal(f"the gateway answered {status}: {message}")
