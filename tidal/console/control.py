"""The console's provider over a running control plane: a narrow read model, the operations, sampled history.

The store keeps desired and observed state but no time series, so the provider
samples each service (QPS, latency, replicas by billing, cost) every few seconds
into a bounded in-memory history, and remembers each autoscaler decision it sees.
Its actions are the control plane's operations, under the same rules as the API's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

from tidal.console.model import (Decision, Event, Latency, Node, NodePool, NodePools, Overview, Release,
                                 ReleaseCounts, Replica, ReplicaCounts, Rollout, Series, ServiceDetail,
                                 ServiceSummary, Usage)
from tidal.console.readmodel import ReadModel, StoreReadModel
from tidal.control.operations import Operations, ScaleRequest
from tidal.errors import FailedPrecondition
from tidal.states import REPLICA_RUNNING, REPLICA_SERVING

log = logging.getLogger(__name__)

# Replicas that hold a node (and so cost money); "pending" ones wait for one.
_PLACED = REPLICA_RUNNING
_READY = REPLICA_SERVING
_WINDOW = 15.0  # seconds of gateway traffic behind "QPS" and the latency percentiles


@dataclass(frozen=True)
class Sample:
    t: float
    qps: Optional[float]
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    spot: int
    on_demand: int
    cost_per_hour: float


class ControlPlaneProvider:
    """Reads the control plane's state for the console; `sample()` adds a point to every service's history.
    Without `operations` the console is read-only."""

    def __init__(self, read: ReadModel, operations: Operations | None = None, *, max_samples: int = 4320,
                 sample_seconds: float = 5.0) -> None:
        self.read = read
        self.ops = operations
        self.max_samples = max_samples
        self.sample_seconds = sample_seconds
        self._history: dict[str, deque[Sample]] = {}
        self._decisions: dict[str, deque[Decision]] = {}
        self._last_sample = float("-inf")

    # -- what the state says now
    def _snapshot(self) -> dict[str, Any]:
        nodes = {n.name: n for n in self.read.nodes()}
        replicas = self.read.replicas()
        on_node: dict[str, int] = {}
        for r in replicas:
            if r.node and r.state in _PLACED:
                on_node[r.node] = on_node.get(r.node, 0) + 1
        return {"nodes": nodes, "replicas": replicas, "on_node": on_node}

    def _prices(self, node) -> tuple[float, float]:
        """(price now, on-demand price) per hour of a node's instance type; 0 for a type not in the catalog."""
        t = self.read.instance_type(node.instance_type, node.zone)
        if t is None:
            return 0.0, 0.0
        return t.price(node.zone, node.billing), t.on_demand_price

    def _summary(self, row, snap: dict[str, Any]) -> tuple[ServiceSummary, int, int]:
        name = row.spec.name
        mine = [r for r in snap["replicas"] if r.service == name]
        cost = od_cost = 0.0
        spot = od = 0
        for r in mine:
            node = snap["nodes"].get(r.node) if r.node else None
            if node is None or r.state not in _PLACED:
                continue
            # A node's price is shared by the replicas on it.
            share = 1.0 / max(1, snap["on_node"].get(r.node, 1))
            price, od_price = self._prices(node)
            cost += price * share
            od_cost += od_price * share
            if node.billing == "spot":
                spot += 1
            else:
                od += 1
        qps = p50 = p99 = None
        queued = 0
        st = self.read.stats(name)
        if st is not None:
            queued = getattr(st, "queued", 0) or 0
            w = _WINDOW if _WINDOW in st.qps else next(iter(st.qps), None)
            if w is not None:
                qps = st.qps.get(w)
                p50 = st.p50.get(w) * 1000 if st.p50.get(w) is not None else None
                p99 = st.p99.get(w) * 1000 if st.p99.get(w) is not None else None
        endpoint = f"{self.read.gateway_url}/services/{name}" if self.read.gateway_url else None
        # The engine the replicas say serves the model (ONNX Runtime for an ONNX file under `serve tensorflow`);
        # the command's type until one is ready.
        engines = sorted({r.runtime for r in mine if getattr(r, "runtime", "")})
        summary = ServiceSummary(
            name=name, model=row.spec.model_name or name, version=str(row.spec.version),
            runtime=", ".join(engines) or row.spec.type,
            endpoint=endpoint,
            replicas=ReplicaCounts(desired=self._desired(name, row.desired),
                                   ready=sum(1 for r in mine if r.state in _READY)),
            qps=qps or 0.0, latency_ms=Latency(p50=p50, p99=p99),
            cost_per_hour=round(cost, 6), on_demand_cost_per_hour=round(od_cost, 6),
            scaled_to_zero=row.desired == 0 and self._last_reason(name) == "ScaledToZero", queued=queued)
        return summary, spot, od

    def _desired(self, name: str, desired: int) -> int:
        """During a rollout each release is sized on its share (at least one each): the sum of those sizes."""
        read = getattr(self.read, "rollout", None)  # a read model from before rollouts has none
        found = read(name) if read is not None else None
        from tidal.control.releases import ACTIVE
        if found is None or found["phase"] not in ACTIVE:
            return desired
        sized = [rel.get("wanted") for rel in found["releases"]]
        return sum(sized) if all(w is not None for w in sized) else desired

    def _last_reason(self, name: str) -> str | None:
        found = self.read.autoscaler(name)
        last = found[1] if found else None
        return last.get("reason") if isinstance(last, dict) else None

    def _remember_decision(self, name: str) -> None:
        found = self.read.autoscaler(name)
        last = found[1] if found else None
        if not last or "time" not in last:
            return
        seen = self._decisions.setdefault(name, deque(maxlen=50))
        if seen and seen[-1].time >= last["time"]:
            return
        seen.append(Decision(time=last["time"], current_replicas=max(0, int(last.get("current", 0))),
                             desired_replicas=max(0, int(last.get("desired", 0))),
                             reason=str(last.get("reason", "")), message=str(last.get("message", ""))))

    def sample(self) -> None:
        """Add the current figures of every service to its history (and note the autoscaler's last decision)."""
        now = self.read.now()
        snap = self._snapshot()
        live = set()
        for row in self.read.services():
            name = row.spec.name
            live.add(name)
            s, spot, od = self._summary(row, snap)
            hist = self._history.setdefault(name, deque(maxlen=self.max_samples))
            hist.append(Sample(now, s.qps, s.latency_ms.p50, s.latency_ms.p99, spot, od, s.cost_per_hour))
            self._remember_decision(name)
        for gone in set(self._history) - live:
            self._history.pop(gone, None)
            self._decisions.pop(gone, None)
        self._last_sample = now

    def _fresh(self) -> None:
        # Reads between the sampler's ticks (or without a sampler) still see the present.
        if self.read.now() - self._last_sample >= self.sample_seconds:
            self.sample()

    async def run_sampler(self, real_interval: float = 5.0) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a failed sample is a gap in the charts, not a reason to stop sampling
                log.exception("console sample failed")
            await asyncio.sleep(real_interval)

    # -- ConsoleProvider
    def overview(self) -> Overview:
        self._fresh()
        snap = self._snapshot()
        return Overview(services=[self._summary(row, snap)[0] for row in self.read.services()])

    def service(self, name: str) -> Optional[ServiceDetail]:
        self._fresh()
        row = self.read.service(name)
        if row is None:
            return None
        snap = self._snapshot()
        summary, _, _ = self._summary(row, snap)
        replicas = []
        for r in snap["replicas"]:
            if r.service != name:
                continue
            node = snap["nodes"].get(r.node) if r.node else None
            replicas.append(Replica(name=r.id, node=r.node, instance_type=node.instance_type if node else None,
                                    zone=node.zone if node else None, billing=node.billing if node else None,
                                    state=r.state, started_at=r.created_at))
        hist = list(self._history.get(name, ()))
        series = Series(t=[s.t for s in hist], qps=[s.qps for s in hist], p50_ms=[s.p50_ms for s in hist],
                        p99_ms=[s.p99_ms for s in hist], replicas_spot=[s.spot for s in hist],
                        replicas_on_demand=[s.on_demand for s in hist], cost_per_hour=[s.cost_per_hour for s in hist])
        return ServiceDetail(service=summary, replicas=replicas, series=series,
                             decisions=list(self._decisions.get(name, ())), events=self._events(name),
                             rollout=self._rollout(name))

    def _rollout(self, name: str) -> Optional[Rollout]:
        read = getattr(self.read, "rollout", None)  # a read model from before rollouts has none to show
        found = read(name) if read is not None else None
        if found is None:
            return None
        releases = []
        for rel in found["releases"]:
            c = rel["counts"]
            counts = None if c is None else ReleaseCounts(
                requests=c["requests"], errors=c["errors"], classes=c["classes"],
                p90_ms=None if c["p90"] is None else c["p90"] * 1000)
            releases.append(Release(**{**rel, "counts": counts}))
        return Rollout(**{k: found[k] for k in ("phase", "progress", "steps", "step", "bake_seconds", "guards",
                                                 "reason", "started_at", "finished_at")}, releases=releases)

    def _events(self, name: str, limit: int = 40) -> list[Event]:
        """The service's own events, its replicas', and those of the nodes its replicas ran on."""
        reps = self.read.replicas(name, every_state=True)
        objects = {f"service/{name}"} | {f"replica/{r.id}" for r in reps} | {f"node/{r.node}" for r in reps if r.node}
        mine = [e for e in self.read.events(limit=2000) if e.object in objects]
        return [Event(time=e.time, kind=e.kind, object=e.object, message=e.message) for e in mine[-limit:]]

    def nodepools(self) -> NodePools:
        snap = self._snapshot()
        services = {s.spec.name: s.spec for s in self.read.services()}
        pools = []
        for pool in self.read.pools():
            nodes = []
            for n in self.read.nodes(pool.name):
                t = self.read.instance_type(n.instance_type, n.zone)
                on = [r for r in snap["replicas"] if r.node == n.name and r.state in _PLACED]
                cpu = mem = 0.0
                for r in on:
                    spec = services.get(r.service)
                    if spec is not None:
                        req = _requests(spec)
                        cpu, mem = cpu + req[0], mem + req[1]
                price, _ = self._prices(n)
                nodes.append(Node(name=n.name, zone=n.zone, instance_type=n.instance_type, billing=n.billing,
                                  state=n.state, price_per_hour=price,
                                  cpu=Usage(used=cpu, total=t.vcpu) if t else None,
                                  memory_mb=Usage(used=mem, total=t.memory_gib * 1024) if t else None,
                                  replicas=[r.id for r in on]))
            policy = pool.model_dump(mode="json", exclude={"name", "labels"})
            pools.append(NodePool(name=pool.name, labels=pool.labels, policy=policy, nodes=nodes))
        return NodePools(pools=pools)

    # -- actions (with the token): the control plane's operations, under the API's rules
    def _operations(self) -> Operations:
        if self.ops is None:
            raise FailedPrecondition("this console is read-only: it was mounted without the control plane's operations")
        return self.ops

    async def scale(self, service: str, replicas: int) -> str:
        return self._operations().scale_service(service, ScaleRequest(replicas=replicas), by="the console").message

    async def preempt(self, node: str, notice_seconds: float | None = None) -> str:
        done = await self._operations().preempt_node(node, notice_seconds)
        return f"{node}: preemption notice, reclaimed in {done.notice_seconds:g} s"


def _requests(spec) -> tuple[float, float]:
    """(CPU, memory MiB) a replica of `spec` asks for, as the scheduler counts it."""
    from tidal.control.reconciler import requests_of
    r = requests_of(spec)
    return r.cpu, r.memory_mib


def mount(cp) -> Callable:
    """The daemon's console: a handler for every path outside the API (`/` leads to `/console/`).

    Called from `ControlPlane.start()` once the store, gateway and reconciler exist: it builds the
    console's read model and the operations from them and hands only those to `console_handler`.
    """
    r = cp.reconciler
    gateway_url = f"http://{cp.options.host}:{cp.gateway.port}" if cp.gateway is not None else None
    read = StoreReadModel(cp.store, cp.gateway, r.catalog, r.clock, gateway_url)
    wake = cp._wake.set if cp._wake is not None else (lambda: None)
    ops = Operations.build(r, wake, os.environ)
    return console_handler(read, ops, token=cp.home.token(), clock=r.clock)


def console_handler(read: ReadModel, operations: Operations | None, *, token: str | None, clock) -> Callable:
    """The console over a read model and the operations; it starts the sampler on the running loop, so the
    charts have a past when first opened."""
    from tidal.console.app import ConsoleApp
    from tidal.http.server import Response, error_response

    provider = ControlPlaneProvider(read, operations)
    app = ConsoleApp(provider, token=token, clock=clock)
    task = asyncio.get_running_loop().create_task(provider.run_sampler())
    provider.sampler = task  # held, so the task is not collected

    def handle(req):
        resp = app.handle(req)
        if resp is not None:
            return resp
        if req.path == "/" and req.method in ("GET", "HEAD"):
            return Response(302, b"", b"text/plain", [("Location", "/console/")])
        return error_response(404, f"no route {req.path} (the API is under /api/v1/, the console at /console/)")
    return handle
