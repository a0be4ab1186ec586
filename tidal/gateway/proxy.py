"""The gateway: one port for every service; routes, balances, retries and counts each request.

The reference procedure's nginx Ingress on port 8501 and its QPS log, in one process. The control
plane drives it through `set_service`, `set_replica_state` and `remove_service`; the
autoscaler reads `qps(service, window)`. The gateway's own endpoints live under `/-/`,
a prefix that no TF Serving or V2 path uses:
`/-/metrics` (Prometheus), `/-/healthz`, `/-/stats` (JSON).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import orjson

from tidal.clock import Clock, RealClock
from tidal.errors import NotFound
from tidal.gateway.balancing import choose
from tidal.gateway.config import (GatewaySettings, QueueSettings, ReleaseSplit, ReplicaEndpoint, ReplicaState,
                                  ServiceConfig)
from tidal.gateway.metrics import GatewaySignals, RequestMetrics, make_registry, render, signals
from tidal.gateway.queue import WaitQueue
from tidal.gateway.releases import Releases, ReleaseStats, UnknownRelease
from tidal.gateway.routing import RouteSpec, RouteTable, build_table, resolve
from tidal.gateway.window import WindowedCounter
from tidal.http.client import ConnectFailed, ConnectionLost, HttpClient, Timeout
from tidal.http.server import HttpServer, Request, Response, error_response

log = logging.getLogger(__name__)

# Windows (seconds) reported in stats and metrics: the autoscaler's burst window, the
# HPA's sync period and a minute.
REPORTED_WINDOWS = (6.0, 15.0, 60.0)

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded. Content-Length is
# recomputed; Expect was already answered by our server; Host is forwarded as the client sent it.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                         "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
                         "content-length", "expect"})
_HOP_BY_HOP_B = frozenset(h.encode() for h in _HOP_BY_HOP | {"content-type"})
# HEAD's answer has a Content-Length but no body, which the pooled client cannot tell from
# a truncated answer; CONNECT and TRACE make no sense in front of a model server.
_NOT_PROXIED = frozenset({"HEAD", "CONNECT", "TRACE"})
_PROXIED_ALLOW = "DELETE, GET, OPTIONS, PATCH, POST, PUT"
_ADMIN_PATHS = frozenset({"/-/metrics", "/-/healthz", "/-/stats"})
_IDEMPOTENT = frozenset({"GET", "OPTIONS", "PUT", "DELETE"})
_INFERENCE_SUFFIXES = (":predict", ":classify", ":regress", "/infer")


def retry_safe(method: str, path: str) -> bool:
    """Whether an attempt whose connection broke after it was sent may go to another replica.

    The replica may have run the request, so only requests that can run twice qualify:
    idempotent methods and inference calls (no side effects). Whether the answer had
    begun does not matter here, unlike for a streaming client: the gateway passes on
    only complete answers, so its client never sees half of one. (A request that was
    never sent, `ConnectFailed`, is always safe; callers do not ask.)
    """
    return method in _IDEMPOTENT or path.endswith(_INFERENCE_SUFFIXES)


def eject_seconds(base: float, failures: int) -> float:
    """How long a replica is skipped after its `failures`-th connection failure in a row.

    Doubles with each failure, up to 32 times `base`: a replica that is gone for good
    costs one quick retry every half minute or so, not one every `base` seconds, until
    the control plane removes it; one that failed once is back soon.
    """
    return base * 2 ** min(max(failures - 1, 0), 5)


def _not_allowed(message: str, allow: str) -> Response:
    """405 with the `Allow` header HTTP asks for."""
    resp = error_response(405, message)
    resp.headers = [("Allow", allow)]
    return resp


@dataclass(frozen=True)
class ReplicaStats:
    id: str
    host: str
    port: int
    state: ReplicaState
    outstanding: int
    requests: int
    errors: int
    ejected: bool


@dataclass(frozen=True)
class ServiceStats:
    """A service's traffic as the gateway sees it; `qps`, `p50`, `p99` keyed by window seconds."""

    name: str
    in_flight: int
    requests: int
    errors: int
    retries: int
    qps: dict[float, float]
    error_qps: dict[float, float]
    p50: dict[float, float | None]
    p99: dict[float, float | None]
    replicas: list[ReplicaStats]
    queued: int = 0  # waiting for a ready replica (counted in in_flight too)

    def to_dict(self) -> dict:
        return asdict(self)


class _Replica:
    __slots__ = ("id", "host", "port", "state", "outstanding", "ejected_until", "failures", "client", "metrics",
                 "removed", "release_name")

    def __init__(self, ep: ReplicaEndpoint, settings: GatewaySettings) -> None:
        self.id = ep.id
        self.release_name = ep.release
        self.host = ep.host
        self.port = ep.port
        self.state: ReplicaState = ep.state
        self.outstanding = 0
        self.ejected_until = 0.0
        self.failures = 0  # connection failures since its last answer
        # One pool per replica, so removing a replica closes exactly its connections.
        self.client = HttpClient(connect_timeout=settings.connect_timeout_seconds,
                                 max_idle_per_host=settings.max_idle_connections_per_replica)
        self.metrics = RequestMetrics()
        self.removed = False

    def release(self) -> None:
        self.outstanding -= 1
        self.metrics.in_flight = self.outstanding
        if self.removed and self.outstanding == 0:
            self.client.close()


class _Service:
    __slots__ = ("name", "config", "replicas", "ready", "deadline", "metrics", "window", "queue", "releases")

    def __init__(self, config: ServiceConfig, settings: GatewaySettings, now: float) -> None:
        self.name = config.name
        self.config = config
        self.replicas: dict[str, _Replica] = {}
        self.ready: tuple[_Replica, ...] = ()
        self.deadline = settings.deadline_seconds
        self.metrics = RequestMetrics()
        self.window = WindowedCounter(now, bucket_seconds=settings.bucket_seconds,
                                      max_window_seconds=settings.max_window_seconds)
        self.queue = WaitQueue()
        self.releases: Releases | None = None  # a rollout's split (None: one release)

    def refresh_ready(self) -> None:
        self.ready = tuple(r for r in self.replicas.values() if r.state == "ready")
        if self.releases is not None:
            self.releases.refresh(self.ready)
        if self.ready or self.config.queue is None:
            self.queue.release()  # the waiters go now (or, with no queue any more, get their 503 now)


class Gateway:
    """Build, `await start()`, drive with `set_service`/`set_replica_state`, `await stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, clock: Clock | None = None,
                 settings: GatewaySettings | None = None, rand: Callable[[], float] | None = None,
                 sock: socket.socket | None = None,
                 admin: Callable[[Request], Response | None] | None = None,
                 on_queue: Callable[[str], None] | None = None) -> None:
        # `sock`: a listening socket handed over by a supervisor (it stays open while this process restarts);
        # `admin`: answers more `/-/` paths first (the route-control endpoints of a supervised gateway).
        self.host = host
        self.port = port
        self.settings = settings or GatewaySettings()
        self._clock = clock or RealClock()
        self._rand = rand or random.Random().random
        self._services: dict[str, _Service] = {}
        self._table: RouteTable = build_table((), domain=self.settings.domain, prefix=self.settings.path_prefix)
        self._server: HttpServer | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-"
        self._registry = make_registry(self._snapshot)
        self._sock = sock
        self._admin_extra = admin
        # Asks the control plane for a replica of a service whose requests wait (at most once a second).
        self._on_queue = on_queue

    # -- lifecycle
    async def start(self) -> None:
        self._server = HttpServer(self._handle, self.host, self.port, max_body=self.settings.max_body_bytes,
                                  sock=self._sock)
        await self._server.start()
        self.port = self._server.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(self.settings.drain_timeout_seconds)
            self._server = None
        for svc in self._services.values():
            for r in svc.replicas.values():
                r.client.close()

    # -- the control plane's interface
    def set_service(self, name: str, replicas: Iterable[ReplicaEndpoint], hosts: Iterable[str] = (),
                    models: Iterable[str] = (), *, deadline_seconds: float | None = None,
                    queue: QueueSettings | None = None, unready_reason: str | None = None,
                    releases: ReleaseSplit | None = None) -> None:
        """Create or replace a service's replicas and addresses (and, during a rollout, its release split).

        Replicas are matched by id: one that stays keeps its connections, counters and
        in-flight requests and takes the state given here; one that is gone gets no new
        requests and its connections close once its in-flight requests finish.
        """
        config = ServiceConfig(name=name, replicas=tuple(replicas), hosts=tuple(hosts), models=tuple(models),
                               deadline_seconds=deadline_seconds, queue=queue, unready_reason=unready_reason,
                               releases=releases)
        ids = [ep.id for ep in config.replicas]
        if len(set(ids)) != len(ids):
            raise ValueError(f"service {name!r}: replica ids must be unique, got {ids}")
        specs = [RouteSpec(s.name, s.config.hosts, s.config.models) for s in self._services.values() if s.name != name]
        specs.append(RouteSpec(name, config.hosts, config.models))
        table = build_table(specs, domain=self.settings.domain, prefix=self.settings.path_prefix)
        svc = self._services.get(name)
        if svc is None:
            svc = _Service(config, self.settings, self._clock.monotonic())
        svc.config = config
        svc.deadline = deadline_seconds or self.settings.deadline_seconds
        old = svc.replicas
        new: dict[str, _Replica] = {}
        for ep in config.replicas:
            r = old.get(ep.id)
            if r is None or (r.host, r.port) != (ep.host, ep.port):
                r = _Replica(ep, self.settings)
            r.state = ep.state
            r.release_name = ep.release
            new[ep.id] = r
        for rid, r in old.items():
            if new.get(rid) is not r:
                self._retire(r)
        svc.replicas = new
        svc.releases = Releases.follow(svc.releases, releases)
        svc.refresh_ready()
        self._services[name] = svc
        self._table = table

    def set_replica_state(self, service: str, replica_id: str, state: ReplicaState) -> None:
        if state not in ("ready", "draining"):
            raise ValueError(f"replica state must be 'ready' or 'draining', got {state!r}")
        svc = self._service(service)
        r = svc.replicas.get(replica_id)
        if r is None:
            raise NotFound(f"service {service!r} has no replica {replica_id!r}")
        r.state = state
        svc.refresh_ready()

    def remove_service(self, name: str) -> None:
        svc = self._service(name)
        del self._services[name]
        self._table = build_table([RouteSpec(s.name, s.config.hosts, s.config.models) for s in self._services.values()],
                                  domain=self.settings.domain, prefix=self.settings.path_prefix)
        for r in svc.replicas.values():
            self._retire(r)
        svc.queue.release()  # its waiters find no replica: 503 now

    def endpoint(self, service: str) -> str:
        """The base URL a client appends TF Serving or V2 paths to (the path-prefix route,
        which needs no DNS for `NAME.localhost`)."""
        self._service(service)
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.settings.path_prefix}{service}"

    def services(self) -> list[str]:
        return sorted(self._services)

    def qps(self, service: str, window_seconds: float) -> float:
        """Requests per second answered for `service` over the last `window_seconds`."""
        return self._service(service).window.rate(self._clock.monotonic(), window_seconds)

    def release_stats(self, service: str, window_seconds: float) -> list[ReleaseStats]:
        """Each release's answers over the last `window_seconds` (none for a service with one release)."""
        rel = self._service(service).releases
        return [] if rel is None else rel.stats(self._clock.monotonic(), window_seconds)

    def signals(self, service: str, window_seconds: float) -> GatewaySignals:
        """The autoscaler's gateway signals for `service` over the last `window_seconds`."""
        svc = self._service(service)
        return signals(svc.window, self._clock.monotonic(), window_seconds, in_flight=svc.metrics.in_flight,
                       queued=svc.queue.waiting, ready=len(svc.ready))

    def stats(self, service: str) -> ServiceStats:
        svc = self._service(service)
        now = self._clock.monotonic()
        sums = {w: svc.window.summary(now, w) for w in REPORTED_WINDOWS if w <= svc.window.max_window_seconds}
        m = svc.metrics
        return ServiceStats(
            name=svc.name, in_flight=m.in_flight, requests=m.requests, errors=m.errors, retries=m.retries,
            qps={w: s.qps for w, s in sums.items()}, error_qps={w: s.error_qps for w, s in sums.items()},
            p50={w: s.p50 for w, s in sums.items()}, p99={w: s.p99 for w, s in sums.items()},
            replicas=[ReplicaStats(r.id, r.host, r.port, r.state, r.outstanding, r.metrics.requests,
                                   r.metrics.errors, r.ejected_until > now) for r in svc.replicas.values()],
            queued=svc.queue.waiting)

    def _service(self, name: str) -> _Service:
        svc = self._services.get(name)
        if svc is None:
            raise NotFound(f"the gateway has no service {name!r}")
        return svc

    @staticmethod
    def _retire(r: _Replica) -> None:
        r.removed = True
        r.state = "draining"
        if r.outstanding == 0:
            r.client.close()

    # -- the data path
    def _handle(self, req: Request):
        path = req.path
        if path.startswith("/-/"):
            return self._admin(req)
        if req.method in _NOT_PROXIED:
            return _not_allowed(f"the gateway does not proxy {req.method} requests", _PROXIED_ALLOW)
        hit = resolve(self._table, req.headers.get("host"), path)
        if hit is None:
            return error_response(404, f"no service is routed for host {req.headers.get('host', '')!r} "
                                       f"and path {path!r}")
        svc = self._services[hit[0]]
        return self._forward(svc, hit[1], req)

    def _pick(self, svc: _Service, tried: list[_Replica], now: float,
              pool: tuple[_Replica, ...] | None = None) -> _Replica | None:
        cands = svc.ready if pool is None else pool
        if tried:
            cands = [r for r in cands if r not in tried]
        if not cands:
            return None
        healthy = [r for r in cands if r.ejected_until <= now]
        # Every candidate failed recently: try them anyway, one may be back.
        if healthy:
            cands = healthy
        if len(cands) == 1:
            return cands[0]
        return cands[choose([r.outstanding for r in cands], self._rand)]

    def _encode(self, req: Request, path: str) -> bytes:
        parts = [f"{req.method} {path}{'?' + req.query if req.query else ''} HTTP/1.1\r\n"]
        xff = req.client.rpartition(":")[0]
        rid = None
        connection = req.headers.get("connection")
        named = {t.strip().lower() for t in connection.split(",")} if connection else ()
        for k, v in req.headers.items():
            if k in _HOP_BY_HOP or k in named:
                continue
            if k == "x-forwarded-for":
                xff = f"{v}, {xff}"
                continue
            if k == "x-request-id":
                rid = v
            parts.append(f"{k}: {v}\r\n")
        if rid is None:
            parts.append(f"x-request-id: {self._id_prefix}{next(self._ids)}\r\n")
        parts.append(f"x-forwarded-for: {xff}\r\ncontent-length: {len(req.body)}\r\n\r\n")
        return "".join(parts).encode("latin-1") + req.body

    async def _forward(self, svc: _Service, path: str, req: Request) -> Response:
        clock = self._clock
        start = clock.monotonic()
        m = svc.metrics
        m.in_flight += 1
        status = 499  # if the client goes away first
        try:
            resp = await self._attempts(svc, path, req, start)
            status = resp.status
            return resp
        except Exception:
            status = 500  # a bug; the server answers 500 and logs it
            raise
        finally:
            m.in_flight -= 1
            end = clock.monotonic()
            m.observe(status, end - start)
            svc.window.record(end, end - start, status >= 500)

    async def _attempts(self, svc: _Service, path: str, req: Request, start: float) -> Response:
        clock = self._clock
        data = self._encode(req, path)
        if not svc.ready and svc.config.queue is not None:
            now = clock.monotonic()
            refused = await svc.queue.hold(svc.name, svc.config.queue, now, start + svc.deadline - now,
                                           svc.config.unready_reason, self._on_queue)
            if refused is not None:
                return refused
        tried: list[_Replica] = []
        last_error = ""
        rel = svc.releases
        release, pinned = "", False
        if rel is not None:
            try:
                release, pinned = rel.choose(req.headers, self._rand)
            except UnknownRelease as exc:
                return error_response(400, f"service {svc.name!r}: {exc}")
            mirror = None if pinned else rel.mirror(self._rand)
            if mirror is not None:
                rel.keep(asyncio.ensure_future(rel.copy(mirror, data, svc.deadline, clock.monotonic, self._rand)))
        for _ in range(self.settings.max_attempts):
            now = clock.monotonic()
            remaining = start + svc.deadline - now
            if remaining <= 0:
                return _deadline(svc)
            # A release with no ready replica passes its share on, unless the request named it.
            pool = None
            if rel is not None:
                pool = rel.ready(release) or (() if pinned else None)
            r = self._pick(svc, tried, now, pool)
            if r is None and pool and not pinned:
                r = self._pick(svc, tried, now)  # the release's replicas all failed: any other takes it
            if r is None:
                break
            if tried:
                svc.metrics.retries += 1
            r.outstanding += 1
            r.metrics.in_flight = r.outstanding
            sent = now
            try:
                up = await r.client.request_raw(r.host, r.port, data, remaining)
            except Timeout:
                r.metrics.observe(504, clock.monotonic() - sent)
                return _deadline(svc)
            except ConnectFailed as exc:
                last_error = str(exc)
            except ConnectionLost as exc:
                if not retry_safe(req.method, path):
                    r.metrics.observe(502, clock.monotonic() - sent)
                    return error_response(502, f"replica {r.id} of service {svc.name!r} failed while answering: {exc}")
                last_error = f"replica {r.id}: {exc}"
            else:
                r.failures = 0
                r.metrics.observe(up.status, clock.monotonic() - sent)
                if rel is None:
                    return _response(up)
                rel.record(r.release_name, clock.monotonic(), up.status, clock.monotonic() - sent, up.body)
                if up.status < 500 or pinned or r.release_name == rel.stable or not rel.ready(rel.stable) \
                        or not retry_safe(req.method, path):
                    return _response(up)
                # A canary failed a request that may run twice: its guard has counted it; the stable release answers.
                release = rel.stable
                tried.append(r)
                continue
            finally:
                r.release()
            # The connection broke before a whole answer came: skip this replica for a while and
            # try another (the client has seen nothing yet).
            r.metrics.observe(503, clock.monotonic() - sent)
            r.failures += 1
            r.ejected_until = clock.monotonic() + eject_seconds(self.settings.eject_seconds, r.failures)
            if rel is not None:
                rel.record(r.release_name, clock.monotonic(), 503, clock.monotonic() - sent, None)
            tried.append(r)
            log.warning("service %s: replica %s failed to answer (%s)", svc.name, r.id, last_error)
        if last_error:
            return error_response(503, f"no replica of service {svc.name!r} could be reached "
                                       f"({len(tried)} tried); last error: {last_error}")
        return error_response(503, f"service {svc.name!r} has no ready replica")

    # -- the gateway's own endpoints
    def _admin(self, req: Request) -> Response:
        if self._admin_extra is not None:
            resp = self._admin_extra(req)
            if resp is not None:
                return resp
        if req.path in _ADMIN_PATHS and req.method != "GET":
            return _not_allowed(f"{req.path} takes GET", "GET")
        if req.path == "/-/metrics":
            return Response(200, render(self._registry), b"text/plain; version=0.0.4; charset=utf-8")
        if req.path == "/-/healthz":
            return Response(200, b'{"status":"ok"}')
        if req.path == "/-/stats":
            return Response(200, orjson.dumps([self.stats(n).to_dict() for n in self.services()],
                                              option=orjson.OPT_NON_STR_KEYS))
        return error_response(404, f"no gateway endpoint {req.path!r}; try /-/metrics, /-/healthz or /-/stats")

    def _snapshot(self):
        now = self._clock.monotonic()
        for svc in list(self._services.values()):
            windows = {w: svc.window.rate(now, w) for w in REPORTED_WINDOWS if w <= svc.window.max_window_seconds}
            yield svc.name, svc.metrics, [(r.id, r.metrics) for r in svc.replicas.values()], windows, svc.queue.waiting


def _deadline(svc: _Service) -> Response:
    return error_response(504, f"service {svc.name!r} did not answer within its deadline of {svc.deadline:g}s")


def _response(up) -> Response:
    ctype = b"application/json"
    headers = []
    for k, v in up.headers:
        lk = k.lower()
        if lk in _HOP_BY_HOP_B:
            if lk == b"content-type":
                ctype = v
            continue
        headers.append((k.decode("latin-1"), v.decode("latin-1")))
    return Response(up.status, up.body, ctype, headers or None)
