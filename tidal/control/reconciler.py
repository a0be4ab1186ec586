"""The reconcile loop: autoscaler -> desired replicas, scheduler -> placement, capacity policy -> nodes, backend executes.

Each pass reads the store, asks the pure decision functions (HPA `decide`, and
burst `decide` + `overlay` for a service in burst mode; the scheduler; the pool's
capacity policy and its Plan diff) what should change, and carries the answers
out through the backend, writing every change to the store before acting on the
next. All times are the injected clock's (virtual when a time factor is set);
only the gateway's QPS windows are real seconds.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import pickle
import re
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from tidal.autoscaling import burst
from tidal.autoscaling.hpa import (HPAState, Recommendation, ScaleEvent, TimestampedRecommendation,
                                   decide as hpa_decide)
from tidal.autoscaling.metrics import Metrics, ready_pods
from tidal.autoscaling.spec import HPASpec, parse_hpa, qps_service
from tidal.backends.base import Backend, CapacityUnavailable, NodeLaunch, ReplicaHandle, ReplicaLaunch
from tidal.capacity.catalog import Catalog
from tidal.capacity.cost import NodeLife, summarize
from tidal.capacity.nodepool import (Drain, Launch, PoolNode, Terminate, demand, observe, plan_decisions, pool_zones,
                                     resources_of, shedding)
from tidal.capacity.policies import POLICIES, pool_params
from tidal.control.home import Home
from tidal.control.store import NodeRow, ReplicaRow, ServiceRow, Store
from tidal.errors import FailedPrecondition, InvalidArgument, NotFound
from tidal.scheduling import NodeInfo, ReplicaRequest, Resources, matches, schedule
from tidal.spec import NodePoolSpec, ServiceSpec

log = logging.getLogger(__name__)

# Requests assumed for a replica that asks for nothing, so "fits on a node" means something.
DEFAULT_CPU = 1.0
DEFAULT_MEMORY_MIB = 1024.0


class ControlSettings(BaseModel):
    """The control plane's own knobs; durations are in the clock's (virtual) seconds."""
    model_config = ConfigDict(extra="forbid")
    tick_seconds: float = Field(default=5.0, gt=0)
    qps_window_seconds: float = Field(default=30.0, gt=0)
    drain_seconds: float = Field(default=10.0, ge=0)          # a scaled-in replica serves in-flight work this long
    notice_margin_seconds: float = Field(default=10.0, ge=0)  # a noticed replica drains this long before its node goes
    start_timeout_seconds: float = Field(default=600.0, gt=0)
    stop_grace_seconds: float = Field(default=30.0, gt=0)     # real seconds before a stopping replica is killed
    unavailable_seconds: float = Field(default=45.0, ge=0)    # an offering that refused a launch is skipped this long
    cold_start_seconds: float = Field(default=0.0, ge=0)      # local nodes are up at once


@dataclass
class _PoolMemory:
    state: object = None
    zones: tuple[str, ...] = ()
    preempted: dict[str, int] = field(default_factory=dict)
    launch_failed: dict[str, int] = field(default_factory=dict)
    unavailable: dict[tuple[str, str, str], float] = field(default_factory=dict)
    last_plan: dict | None = None
    shedding: set[str] = field(default_factory=set)


def release_hash(spec: ServiceSpec) -> str:
    """What a replica runs; a change rolls the service's replicas (other fields apply in place)."""
    key = "|".join([spec.release, spec.type, spec.model_name, spec.model_path, spec.model_config_file,
                    str(spec.version_policy), repr(sorted(spec.env.items())),
                    repr([m.model_dump() for m in spec.data]), str(spec.gpus)])
    return spec.release + "-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def requests_of(spec: ServiceSpec) -> Resources:
    cpu = spec.cpu or (0.0 if spec.gpus else DEFAULT_CPU)
    mem = spec.memory_mib or (0.0 if spec.gpus else DEFAULT_MEMORY_MIB)
    return Resources(cpu=cpu, memory_mib=mem, gpus=spec.gpus)


def _hpa_state_to(state: HPAState) -> dict:
    return {"recommendations": [[r.replicas, r.timestamp] for r in state.recommendations],
            "up": [[e.replica_change, e.timestamp, e.outdated] for e in state.scale_up_events],
            "down": [[e.replica_change, e.timestamp, e.outdated] for e in state.scale_down_events]}


def _hpa_state_from(data: dict | None) -> HPAState:
    if not data or "recommendations" not in data:
        return HPAState()
    return HPAState(recommendations=tuple(TimestampedRecommendation(int(n), float(t)) for n, t in data["recommendations"]),
                    scale_up_events=tuple(ScaleEvent(int(c), float(t), bool(o)) for c, t, o in data["up"]),
                    scale_down_events=tuple(ScaleEvent(int(c), float(t), bool(o)) for c, t, o in data["down"]))


def _burst_state_to(state: burst.BurstState) -> dict:
    return {"panic_since": state.panic_since, "max_panic_replicas": state.max_panic_replicas}


def _burst_state_from(data: dict | None) -> burst.BurstState | None:
    if not data:
        return None
    since = data.get("panic_since")
    return burst.BurstState(panic_since=None if since is None else float(since),
                            max_panic_replicas=int(data.get("max_panic_replicas", 0)))


def _dump_policy_state(policy: str, zones: tuple[str, ...], state) -> str:
    # Policy states are the policies' own frozen values; pickled into the owner-only database.
    return base64.b64encode(pickle.dumps((policy, zones, state))).decode()


def _load_policy_state(text: str | None, policy: str, zones: tuple[str, ...]):
    if not text:
        return None
    try:
        kept_policy, kept_zones, state = pickle.loads(base64.b64decode(text))
    except Exception:  # a state from another version of the policy: start afresh
        return None
    if (kept_policy, tuple(kept_zones)) != (policy, zones) or not _complete(state):
        return None
    return state


def _complete(state) -> bool:
    """Whether an unpickled policy state has every field its class has now: a state saved by an older version
    of the policy unpickles without the fields added since, and would fail at the next decision."""
    if not dataclasses.is_dataclass(state):
        return True
    for f in dataclasses.fields(state):
        if not hasattr(state, f.name):
            return False
        value = getattr(state, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type) and not _complete(value):
            return False
    return True


def _workload_name(name: str) -> str | None:
    m = re.fullmatch(r"(.+?)-[0-9]{6,}(-[a-z]+-serving)?", name)
    return m.group(1) if m else None


class Reconciler:
    """Build with injected store, backend, gateway, catalog and clock; `await tick()` runs one pass."""

    def __init__(self, store: Store, backend: Backend, gateway, catalog: Catalog, clock, home: Home,
                 settings: ControlSettings | None = None, real_seconds=None) -> None:
        self.store = store
        self.backend = backend
        self.gateway = gateway
        self.catalog = catalog
        self.clock = clock
        self.home = home
        self.settings = settings or ControlSettings()
        self._real = real_seconds or (lambda s: s)
        self.lock = asyncio.Lock()
        self._pools: dict[str, _PoolMemory] = {}
        self._hpa_last_sync: dict[str, float] = {}
        # Burst mode: the latest HPA recommendation and burst decision per service (overlay combines them),
        # the time of the last burst tick, and the shortest burst tick of any service (the loop's pace).
        self._hpa_recs: dict[str, Recommendation] = {}
        self._burst_decisions: dict[str, burst.BurstDecision] = {}
        self._burst_last_tick: dict[str, float] = {}
        self.burst_tick_seconds: float | None = None
        self._burst_noted: set[str] = set()
        self._gateway_models: dict[str, tuple[str, ...]] = {}
        self._pending_noted: set[str] = set()
        self._backoff_noted: set[str] = set()

    # ------------------------------------------------------------------ events
    def event(self, kind: str, obj: str, message: str) -> None:
        self.store.add_event(self.clock.now(), kind, obj, message)
        log.info("%s %s: %s", kind, obj, message)

    # ------------------------------------------------------------------ startup
    def adopt(self) -> None:
        """After a restart: keep replica processes that are still ours, mark the dead ones failed, kill strays."""
        now = self.clock.now()
        for node in self.store.nodes():
            t = self.catalog.types.get(node.instance_type)
            self.backend.adopt_node(NodeLaunch(node.name, node.pool, node.zone, node.instance_type, node.billing,
                                               t.gpus if t else 0))
        known: dict[str, int] = {}
        for rep in self.store.replicas(states=("starting", "ready", "draining", "notified")):
            handle = self._handle(rep)
            if handle is not None and self.backend.replica_alive(rep.id, handle):
                known[rep.id] = handle.pid
                self.event("ReplicaAdopted", f"replica/{rep.id}", f"process {handle.pid} on port {handle.port} is still running: adopted")
            else:
                self.store.update_replica(rep.id, state="failed", stopped_at=now,
                                          reason="its process was gone when the control plane restarted")
                self.event("ReplicaFailed", f"replica/{rep.id}", "its process was gone when the control plane restarted")
        for rid, pid in self.backend.orphans(known):
            # Started just before a crash, before its pid was recorded: the store does not want it.
            self.backend.kill(pid)
            self.event("ReplicaKilled", f"replica/{rid}", f"stray process {pid} the store does not know: killed")
        for pool in self.store.list_pools():
            self.attach_trace(pool)

    def attach_trace(self, pool: NodePoolSpec) -> None:
        if pool.spot_trace and hasattr(self.backend, "set_trace"):
            start = float(self.store.get_meta(f"trace_start:{pool.name}") or self.clock.now())
            self.store.set_meta(f"trace_start:{pool.name}", repr(start))
            self.backend.set_trace(pool.name, pool.spot_trace, pool_zones(pool, self.catalog), start)

    @staticmethod
    def _handle(rep: ReplicaRow) -> ReplicaHandle | None:
        if rep.pid is None or rep.port is None:
            return None
        return ReplicaHandle(pid=rep.pid, proc_start=rep.proc_start or 0, port=rep.port, grpc_port=rep.grpc_port or 0)

    # ------------------------------------------------------------------ one pass
    async def tick(self) -> None:
        async with self.lock:
            await self._observe_replicas()
            self._spot_reclaims()
            self._expire_notices()
            self._autoscale()
            self._reconcile_replicas()
            self._schedule()
            self._scale_pools()
            self._schedule()
            self._stop_drained()
            self._track_empty_nodes()
            self.sync_gateway()

    def settling(self) -> bool:
        """Whether replicas are on their way in or out (the loop then looks again sooner)."""
        return bool(self.store.replicas(states=("pending", "starting", "draining", "notified")))

    # -- 1. what the replica processes are doing
    async def _observe_replicas(self) -> None:
        now = self.clock.now()
        reps = self.store.replicas(states=("starting", "ready", "draining", "notified"))
        checks = []
        for rep in reps:
            handle = self._handle(rep)
            if handle is None:
                continue
            if not self.backend.replica_alive(rep.id, handle):
                if rep.state == "draining":
                    self.store.update_replica(rep.id, state="stopped", stopped_at=now)
                    self.event("ReplicaStopped", f"replica/{rep.id}", "drained and exited")
                else:
                    self.store.update_replica(rep.id, state="failed", stopped_at=now, reason="process exited")
                    self.event("ReplicaFailed", f"replica/{rep.id}",
                               f"its process exited unexpectedly (log: {self.backend.log_path(rep.id)}); replacing it")
                continue
            if rep.state == "starting":
                checks.append((rep, handle))
        if checks:
            results = await asyncio.gather(*(self.backend.replica_ready(h) for _, h in checks))
            for (rep, handle), ok in zip(checks, results):
                if ok:
                    self.store.update_replica(rep.id, state="ready", ready_at=now)
                    self.event("ReplicaReady", f"replica/{rep.id}",
                               f"ready on node {rep.node} (port {rep.port}) after {now - rep.created_at:.1f}s")
                elif now - rep.created_at > self.settings.start_timeout_seconds:
                    self.backend.stop_replica(rep.id, handle, 1.0)
                    self.store.update_replica(rep.id, state="failed", stopped_at=now, reason="not ready in time")
                    self.event("ReplicaFailed", f"replica/{rep.id}",
                               f"not ready after {self.settings.start_timeout_seconds:.0f}s "
                               f"(log: {self.backend.log_path(rep.id)}); replacing it")

    # -- 2. preemption: a spot trace's capacity drop, or an injected notice
    def _spot_reclaims(self) -> None:
        now = self.clock.now()
        for pool in self.store.list_pools():
            if not pool.spot_trace:
                continue
            nodes = [n for n in self.store.nodes(pool.name) if n.billing == "spot" and n.state == "ready"]
            for zone in sorted({n.zone for n in nodes}):
                cap = self.backend.spot_capacity(pool.name, zone, now)
                held = [n for n in nodes if n.zone == zone]
                if cap is None or len(held) <= cap:
                    continue
                # The provider reclaims; the emptiest, newest nodes first (what we lose least by).
                victims = sorted(held, key=lambda n: (n.empty_since is None, -n.launched_at))[:len(held) - cap]
                for n in victims:
                    self.notify_node(n, pool, f"the spot trace drops {zone} to {cap} node(s)")

    def preempt(self, pool_name: str, node: str | None = None, count: int = 1,
                notice_seconds: float | None = None) -> list[str]:
        """Inject a preemption: spot nodes of the pool get a reclaim notice (the busiest first)."""
        pool = self.store.get_pool(pool_name)
        spot = [n for n in self.store.nodes(pool.name) if n.billing == "spot" and n.state == "ready"]
        if node is not None:
            chosen = [n for n in spot if n.name == node]
            if not chosen:
                raise NotFound(f"node pool {pool_name!r} has no ready spot node {node!r}")
        else:
            if count < 1:
                raise InvalidArgument("--count must be at least 1")
            if not spot:
                raise FailedPrecondition(f"node pool {pool_name!r} has no ready spot node to preempt")
            busy = {r.node for r in self.store.replicas(states=("starting", "ready"))}
            chosen = sorted(spot, key=lambda n: (n.name not in busy, n.launched_at))[:count]
        for n in chosen:
            self.notify_node(n, pool, "preemption injected", notice_seconds)
        return [n.name for n in chosen]

    def notify_node(self, node: NodeRow, pool: NodePoolSpec, why: str, notice_seconds: float | None = None) -> None:
        now = self.clock.now()
        notice = pool.notice_seconds if notice_seconds is None else notice_seconds
        self.store.update_node(node.name, state="notified", notified_at=now, reclaim_at=now + notice)
        self._memory(pool.name).preempted[node.zone] = self._memory(pool.name).preempted.get(node.zone, 0) + 1
        reps = [r for r in self.store.replicas(states=("pending", "starting", "ready")) if r.node == node.name]
        if pool.spot_remedy:
            for r in reps:
                # Replaced at once; it keeps serving until its replacement is ready or the notice is nearly over.
                self.store.update_replica(r.id, state="notified",
                                          drain_at=now + max(0.0, notice - self.settings.notice_margin_seconds))
            fate = "replaced now (spot remedy)"
        else:
            fate = "replaced when it goes (no spot remedy)"
        self.event("PreemptionNotice", f"node/{node.name}",
                   f"{why}: reclaimed in {notice:.0f}s; {len(reps)} replica(s) on it {fate}")

    def _expire_notices(self) -> None:
        now = self.clock.now()
        for node in self.store.nodes():
            if node.state == "notified" and node.reclaim_at is not None and now >= node.reclaim_at:
                for r in self.store.replicas(states=("pending", "starting", "ready", "draining", "notified")):
                    if r.node == node.name:
                        self._stop(r, "its node was reclaimed")
                self._terminate_node(node, "spot instance reclaimed at the end of its notice")

    # -- 3. autoscalers
    def _autoscale(self) -> None:
        now = self.clock.now()
        services = {s.spec.name: s for s in self.store.list_services()}
        ticks: list[float] = []
        for svc in services.values():
            found = self.store.get_autoscaler(svc.spec.name)
            if found is None:
                continue
            document, _ = found
            try:
                spec = parse_hpa(document)
            except Exception as exc:  # a stored document that no longer parses: report, keep the service
                self.event("FailedGetScale", f"service/{svc.spec.name}", f"autoscaler unreadable: {exc}")
                continue
            bursting = spec.burst.enabled and self._burst_target(spec, svc) is not None
            if bursting:
                ticks.append(spec.burst.tick_seconds)
            synced = self._sync_hpa(spec, svc, now, apply=not bursting)
            if bursting:
                ticked = self._burst_tick(spec, svc, now)
                if synced or ticked:
                    self._apply_overlay(spec, svc, now)
        self.burst_tick_seconds = min(ticks, default=None)

    def _sync_hpa(self, spec: HPASpec, svc: ServiceRow, now: float, apply: bool) -> bool:
        """One HPA sync when its period has passed; in burst mode `overlay` applies its recommendation."""
        name = svc.spec.name
        last = self._hpa_last_sync.get(name)
        if last is not None and now - last < spec.controller.sync_period_seconds:
            return False
        self._hpa_last_sync[name] = now
        metrics = self._hpa_metrics(spec, svc)
        kept = self.store.get_autoscaler_state(name) or {}
        rec, state = hpa_decide(spec, metrics, _hpa_state_from(kept), svc.desired, now)
        self._hpa_recs[name] = rec
        # Kept in the store, so a restarted control plane scales in no sooner than this one would have.
        self.store.set_autoscaler_state(name, {**kept, **_hpa_state_to(state)})
        qps = next(iter(metrics.external.values()), None)
        self.store.set_autoscaler_last(name, {
            "time": now, "current": rec.current_replicas, "desired": rec.desired_replicas,
            "reason": rec.reason, "message": rec.message, "qps": qps,
            "metrics": [{"metric": m.metric, "average_value": m.average_value, "value": m.value,
                         "proposal": m.proposal, "error": m.error} for m in rec.metrics]})
        if apply and rec.rescale and rec.desired_replicas != svc.desired:
            self.store.set_desired(name, rec.desired_replicas)
            self.event("SuccessfulRescale", f"service/{name}",
                       rec.event() + (f" (QPS {qps:.1f})" if qps is not None else ""))
        return True

    def _burst_target(self, spec: HPASpec, svc: ServiceRow) -> float | None:
        """The per-replica QPS target burst mode scales by; None (HPA only) without a QPS AverageValue metric."""
        target = burst.qps_target(spec)
        if target is None and svc.spec.name not in self._burst_noted:
            self._burst_noted.add(svc.spec.name)
            self.event("BurstUnavailable", f"service/{svc.spec.name}",
                       "burst mode needs an External QPS metric with an AverageValue target: HPA only")
        return target if target and target > 0 else None

    def _burst_tick(self, spec: HPASpec, svc: ServiceRow, now: float) -> bool:
        """One burst decision every `tick_seconds`, over the gateway's stable and panic windows."""
        name, settings = svc.spec.name, spec.burst
        last = self._burst_last_tick.get(name)
        if last is not None and now - last < settings.tick_seconds:
            return False
        self._burst_last_tick[name] = now
        # The windows are the clock's seconds; the gateway counts real ones, in buckets of at least a second.
        stable_qps = self._gateway_qps(name, max(1.0, self._real(settings.stable_window_seconds)))
        panic_qps = self._gateway_qps(name, max(1.0, self._real(settings.panic_window_seconds)))
        ready = len(self.store.replicas(name, states=("ready",)))
        kept = self.store.get_autoscaler_state(name) or {}
        # A decider without history (first tick, or after a restart that lost it) holds what is running.
        state = _burst_state_from(kept.get("burst")) or burst.initial_state(ready, now)
        decision, state = burst.decide(settings, self._burst_target(spec, svc), stable_qps, panic_qps, ready,
                                       state, now, min_replicas=spec.min_replicas, max_replicas=spec.max_replicas)
        self._burst_decisions[name] = decision
        self.store.set_autoscaler_state(name, {**kept, "burst": _burst_state_to(state)})
        if decision.reason in ("PanicStarted", "PanicEnded"):
            self.event("BurstPanic" if decision.reason == "PanicStarted" else "BurstPanicEnded",
                       f"service/{name}", f"{decision.reason}: {decision.message}")
        return True

    def _apply_overlay(self, spec: HPASpec, svc: ServiceRow, now: float) -> None:
        """A burst-mode service's count: the HPA's, raised to the burst decider's while it panics."""
        name = svc.spec.name
        rec, decision = self._hpa_recs.get(name), self._burst_decisions.get(name)
        if rec is None or decision is None:
            return
        if svc.desired == 0 and spec.min_replicas != 0:
            return  # the HPA's rule: a target scaled to zero by hand has scaling disabled
        desired, reason = burst.overlay(rec, decision, svc.desired)
        if reason == "BurstPanic":
            message = decision.message
        elif reason == "AwaitingSync":
            message = f"holding {desired} until the next HPA sync sees the count burst mode set"
        else:
            message = rec.message
        last = self.store.get_autoscaler(name)[1] or {}
        qps = last.get("qps")
        self.store.set_autoscaler_last(name, {
            **last, "time": now, "current": svc.desired, "desired": desired, "reason": reason, "message": message,
            "burst": {"reason": decision.reason, "panicking": decision.panicking, "stable_qps": decision.stable_qps,
                      "panic_qps": decision.panic_qps, "desired": decision.desired_replicas,
                      "ready": decision.ready_replicas}})
        if desired == svc.desired:
            return
        self.store.set_desired(name, desired)
        if reason == "BurstPanic":
            text = (f"New size: {desired}; reason: burst: panic window QPS {decision.panic_qps:.1f} "
                    f"(stable window {decision.stable_qps:.1f}) for {decision.ready_replicas} ready replica(s)")
        else:
            text = f"New size: {desired}; reason: {rec.rescale_reason or rec.reason}" + \
                (f" (QPS {qps:.1f})" if qps is not None else "")
        self.event("SuccessfulRescale", f"service/{name}", text)

    def _gateway_qps(self, service: str, window: float) -> float:
        try:
            return self.gateway.qps(service, window)
        except NotFound:  # no replica has been routed yet: no traffic
            return 0.0

    def _hpa_metrics(self, spec: HPASpec, svc: ServiceRow) -> Metrics:
        window = max(1.0, self._real(self.settings.qps_window_seconds))
        external: dict[str, float] = {}
        for m in spec.metrics:
            if m.type != "External" or m.external is None:
                continue
            target = qps_service(m.external.metric, spec.namespace, svc.spec.name)
            if target is None:
                continue
            if target not in (svc.spec.name, svc.spec.release, svc.spec.workload) and _workload_name(target) != svc.spec.name:
                continue
            try:
                external[m.external.metric.name] = self.gateway.qps(svc.spec.name, window)
            except NotFound:
                external[m.external.metric.name] = 0.0
        ready = len(self.store.replicas(svc.spec.name, states=("ready",)))
        return Metrics(external=external, pods=ready_pods(ready, svc.spec.name), status_replicas=svc.desired)

    def resolve_target(self, name: str) -> str:
        """The service an HPA's scaleTargetRef names: its name, release or workload (any version of it)."""
        services = self.store.list_services()
        for s in services:
            if name in (s.spec.name, s.spec.release, s.spec.workload):
                return s.spec.name
        base = _workload_name(name)
        for s in services:
            if base == s.spec.name:
                return s.spec.name
        raise NotFound(f"no service matches scaleTargetRef {name!r} (serve it first; "
                       f"services: {', '.join(s.spec.name for s in services) or 'none'})")

    # -- 4. replicas wanted vs replicas held
    def _reconcile_replicas(self) -> None:
        now = self.clock.now()
        services = {s.spec.name: s for s in self.store.list_services()}
        active = self.store.replicas(states=("pending", "starting", "ready", "draining", "notified"))
        by_service: dict[str, list[ReplicaRow]] = {}
        for r in active:
            by_service.setdefault(r.service, []).append(r)
        for name, reps in by_service.items():
            if name not in services:  # deleted: everything goes
                for r in reps:
                    if r.state in ("pending", "starting", "ready", "notified"):
                        self._drain(r, "its service was deleted")
        for name, svc in services.items():
            reps = by_service.get(name, [])
            current = release_hash(svc.spec)
            live = [r for r in reps if r.state in ("pending", "starting", "ready") and r.release == current]
            outdated = [r for r in reps if r.state in ("pending", "starting", "ready") and r.release != current]
            want = svc.desired
            missing = want - len(live)
            if missing > 0 and self._backing_off(name, now):
                missing = 0
            for _ in range(missing):
                rid = f"{svc.spec.workload}-{self.store.next_id('replica:' + name)}"
                self.store.add_replica(ReplicaRow(id=rid, service=name, release=current, node=None, state="pending",
                                                  port=None, grpc_port=None, pid=None, proc_start=None, created_at=now))
            if len(live) > want:
                # Remove the least useful first: not placed, then still starting, then the newest ready.
                order = {"pending": 0, "starting": 1, "ready": 2}
                victims = sorted(live, key=lambda r: (order[r.state], -r.created_at, r.id))[:len(live) - want]
                for r in victims:
                    self._drain(r, f"scaled in to {want}")
            ready_current = sum(1 for r in live if r.state == "ready")
            # Rolling update: an old replica goes once the new ones can carry the service.
            surplus = ready_current + sum(1 for r in outdated if r.state == "ready") - want
            for r in sorted(outdated, key=lambda r: (r.state == "ready", r.created_at)):
                if r.state != "ready" or surplus > 0:
                    self._drain(r, "replaced by the service's new release")
                    surplus -= r.state == "ready"
            # Noticed replicas drain once their replacements are ready, or when the notice is nearly over.
            for r in reps:
                if r.state == "notified" and (ready_current >= want or (r.drain_at is not None and now >= r.drain_at)):
                    node = self.store.get_node(r.node) if r.node else None
                    stop_at = now + self.settings.drain_seconds
                    if node is not None and node.reclaim_at is not None:
                        stop_at = min(stop_at, node.reclaim_at)
                    self.store.update_replica(r.id, state="draining", drain_at=stop_at)
                    self.event("ReplicaDraining", f"replica/{r.id}",
                               f"its node {r.node} is going away and its replacement is ready"
                               if ready_current >= want else f"its node {r.node} is about to be reclaimed")

    def _backing_off(self, service: str, now: float) -> bool:
        """Replicas that keep failing are replaced ever more slowly (like Kubernetes' CrashLoopBackOff: at once
        after one failure, then 10 s doubling up to 5 min), so a model that cannot load does not become a
        process-spawning loop."""
        window = 600.0
        failed = [r for r in self.store.replicas(service, states=("failed",))
                  if r.stopped_at is not None and now - r.stopped_at < window]
        if not failed:
            return False
        delay = 0.0 if len(failed) == 1 else min(300.0, 10.0 * 2 ** (len(failed) - 2))
        last = max(r.stopped_at for r in failed)
        if now - last < delay:
            if service not in self._backoff_noted:
                self._backoff_noted.add(service)
                self.event("BackOff", f"service/{service}",
                           f"{len(failed)} replica(s) failed in the last {window:.0f}s: the next one starts "
                           f"{delay:.0f}s after the last failure (see `tidal logs {service}`)")
            return True
        self._backoff_noted.discard(service)
        return False

    def _drain(self, r: ReplicaRow, why: str) -> None:
        now = self.clock.now()
        if r.state in ("pending",) or r.pid is None:
            self.store.update_replica(r.id, state="stopped", stopped_at=now, reason=why)
            return
        self.store.update_replica(r.id, state="draining", drain_at=now + self.settings.drain_seconds, reason=why)
        self.event("ReplicaDraining", f"replica/{r.id}", why)

    def _stop(self, r: ReplicaRow, why: str) -> None:
        self.backend.stop_replica(r.id, self._handle(r), self.settings.stop_grace_seconds)
        self.store.update_replica(r.id, state="stopped", stopped_at=self.clock.now(), reason=why)
        self.event("ReplicaStopped", f"replica/{r.id}", why)

    def _stop_drained(self) -> None:
        now = self.clock.now()
        for r in self.store.replicas(states=("draining",)):
            # The gateway sends it nothing new since it went draining; in-flight work had drain_seconds.
            if r.drain_at is None or now >= r.drain_at:
                self._stop(r, r.reason or "drained")

    # -- 5. placement
    def _schedule(self) -> None:
        pending = self.store.replicas(states=("pending",))
        if not pending:
            return
        services = {s.spec.name: s.spec for s in self.store.list_services()}
        nodes = self.store.nodes()
        pools = {p.name: p for p in self.store.list_pools()}
        infos = []
        for n in nodes:
            t = self.catalog.types.get(n.instance_type)
            pool = pools.get(n.pool)
            if t is None or pool is None:
                continue
            infos.append(NodeInfo(n.name, pool.labels, resources_of(t),
                                  schedulable=n.state == "ready" and not n.cordoned,
                                  preferred=n.name not in self._memory(n.pool).shedding))
        used: dict[str, Resources] = {}
        for r in self.store.replicas(states=("starting", "ready", "draining", "notified")):
            spec = services.get(r.service)
            if r.node and spec is not None:
                used[r.node] = used.get(r.node, Resources()) + requests_of(spec)
        requests = [ReplicaRequest(r.id, services[r.service].selector, requests_of(services[r.service]))
                    for r in pending if r.service in services]
        placement = schedule(requests, infos, used)
        by_id = {r.id: r for r in pending}
        for bind in placement.binds:
            self._start(by_id[bind.replica], services[by_id[bind.replica].service], bind.node)
        for rid in placement.pending:
            if rid not in self._pending_noted:
                self._pending_noted.add(rid)
                spec = services[by_id[rid].service]
                req = requests_of(spec)
                self.event("FailedScheduling", f"replica/{rid}",
                           f"no node with labels {spec.selector or '{}'} has room for {req.gpus} GPU, "
                           f"{req.cpu:g} CPU, {req.memory_mib:g} MiB: pending (the pool scales out if it can)")

    def _start(self, rep: ReplicaRow, spec: ServiceSpec, node: str) -> None:
        try:
            launch = self._launch_spec(rep, spec, node)
        except Exception as exc:
            self.store.update_replica(rep.id, state="failed", stopped_at=self.clock.now(), reason=str(exc))
            self.event("ReplicaFailed", f"replica/{rep.id}", f"cannot start: {exc}")
            return
        # The node is recorded before the process starts; the pid right after it (see adopt()).
        self.store.update_replica(rep.id, node=node)
        handle = self.backend.start_replica(launch)
        self.store.update_replica(rep.id, state="starting", pid=handle.pid, proc_start=handle.proc_start,
                                  port=handle.port, grpc_port=handle.grpc_port)
        self.event("ReplicaScheduled", f"replica/{rep.id}", f"started on node {node} (pid {handle.pid}, port {handle.port})")

    def _launch_spec(self, rep: ReplicaRow, spec: ServiceSpec, node: str) -> ReplicaLaunch:
        env = dict(spec.env)
        base = ""
        if spec.model_path:
            base, secret_env = self.resolve_model_path(spec)
            env.update(secret_env)
        return ReplicaLaunch(replica=rep.id, service=spec.name, node=node, model_name=spec.model_name,
                             model_base_path=base, version_policy=str(spec.version_policy), gpus=spec.gpus,
                             env=env, model_config_file=spec.model_config_file)

    def resolve_model_path(self, spec: ServiceSpec) -> tuple[str, dict[str, str]]:
        """--model-path inside a --data mount -> the volume's URL (+ the credentials the model server needs)."""
        for mount in sorted(spec.data, key=lambda m: -len(m.mount)):
            prefix = mount.mount.rstrip("/")
            if spec.model_path == prefix or spec.model_path.startswith(prefix + "/"):
                vol = self.store.get_volume(mount.volume)
                rest = spec.model_path[len(prefix):].lstrip("/")
                url = vol.url.rstrip("/") + ("/" + rest if rest else "")
                if url.startswith("file://"):
                    url = url[len("file://"):]
                return url, self._volume_env(vol)
        if spec.data:
            raise InvalidArgument(f"--model-path {spec.model_path!r} is not under any --data mount "
                                  f"({', '.join(m.mount for m in spec.data)})")
        return spec.model_path, {}

    def _volume_env(self, vol) -> dict[str, str]:
        env: dict[str, str] = {}
        scheme = vol.url.split("://", 1)[0]
        creds = self.home.get_secret(vol.secret) if vol.secret else {}
        if scheme == "oss":
            if vol.endpoint:
                env["OSS_ENDPOINT"] = vol.endpoint
            if creds.get("akId"):
                env["OSS_ACCESS_KEY_ID"] = creds["akId"]
                env["OSS_ACCESS_KEY_SECRET"] = creds.get("akSecret", "")
        elif scheme in ("s3", "s3a"):
            if vol.endpoint:
                env["AWS_ENDPOINT_URL"] = vol.endpoint
            if creds.get("akId"):
                env["AWS_ACCESS_KEY_ID"] = creds["akId"]
                env["AWS_SECRET_ACCESS_KEY"] = creds.get("akSecret", "")
        return env

    # -- 6. node pools: demand -> policy -> Plan -> Launch/Terminate
    def _memory(self, pool: str) -> _PoolMemory:
        return self._pools.setdefault(pool, _PoolMemory())

    def _scale_pools(self) -> None:
        """Per pool, one decision per pass: the policy's Plan as Launch/Terminate/Drain. Spot launches the
        provider refuses reach the policy at the next pass (ESS then compensates with on-demand)."""
        self._track_empty_nodes()  # placements made this pass make nodes busy before any is judged empty
        for pool in self.store.list_pools():
            mem = self._memory(pool.name)
            decisions, plan = self._pool_decisions(pool, mem)
            self._execute(pool, mem, decisions, plan)
            for n in self.store.nodes(pool.name):
                # Drained for a swap the plan no longer wants: an ordinary node again.
                if n.cordoned and n.state == "ready" and n.empty_since is not None:
                    self.store.update_node(n.name, cordoned=0)

    def _pool_decisions(self, pool: NodePoolSpec, mem: _PoolMemory):
        now = self.clock.now()
        services = {s.spec.name: s.spec for s in self.store.list_services()}
        nodes = [PoolNode(n.name, n.zone, n.instance_type, n.billing, n.state, n.launched_at, n.empty_since,
                          bool(n.cordoned)) for n in self.store.nodes(pool.name)]
        wants = [requests_of(services[r.service]) for r in self.store.replicas(states=("pending",))
                 if r.service in services and matches(services[r.service].selector, pool.labels)]
        d = demand(pool, nodes, wants, self.catalog, now)
        zones = tuple(pool_zones(pool, self.catalog))
        policy = POLICIES[pool.policy]
        params = pool_params(pool.policy, pool.model_dump(), pool.policy_params)
        if mem.zones != zones:
            kept = _load_policy_state(self.store.get_pool_state(pool.name), pool.policy, zones)
            mem.state = kept if kept is not None else policy.initial_state(params, zones, 0)
            mem.zones = zones
        mem.unavailable = {k: t for k, t in mem.unavailable.items() if now - t < self.settings.unavailable_seconds}
        obs = observe(pool, self.catalog, nodes, d.target, list(zones), d.node_type, mem.preempted,
                      mem.launch_failed, self.settings.cold_start_seconds, now)
        plan, state = policy.decide(obs, params, mem.state, now)
        if state != mem.state:
            # The policy's memory (e.g. SpotHedge's preempted zones) outlives a control-plane restart.
            self.store.set_pool_state(pool.name, _dump_policy_state(pool.policy, zones, state))
        mem.state = state
        mem.preempted, mem.launch_failed = {}, {}
        mem.last_plan = {"time": now, "target": d.target, "on_demand": plan.on_demand,
                         "spot": plan.spot_by_zone(obs), "pending": len(wants)}
        mem.shedding = shedding(plan, list(zones), nodes)
        return plan_decisions(pool, plan, list(zones), nodes, self.catalog, now, d.node_type,
                              frozenset(mem.unavailable)), plan

    def _execute(self, pool: NodePoolSpec, mem: _PoolMemory, decisions: list, plan) -> None:
        live = [n for n in self.store.nodes(pool.name) if n.state == "ready"]
        # max_nodes bounds the pool, except for the one-for-one surge that swaps a node of a kind
        # the plan holds too many of (it goes once its replicas have moved).
        od = sum(1 for n in live if n.billing == "on-demand")
        excess = max(0, od - plan.on_demand) + max(0, len(live) - od - sum(plan.spot))
        room = pool.max_nodes - len(live) + excess
        for dec in decisions:
            if isinstance(dec, Launch):
                if room <= 0:
                    continue
                if self._launch(pool, dec, mem):
                    room -= 1
            elif isinstance(dec, Terminate):
                self._terminate_node(self.store.get_node(dec.node), dec.reason)
            elif isinstance(dec, Drain):
                self._drain_node(self.store.get_node(dec.node), dec.reason)

    def _drain_node(self, node: NodeRow, why: str) -> None:
        """Cordon the node; its replicas are replaced elsewhere first, then drain (no deadline: never uncovered)."""
        self.store.update_node(node.name, cordoned=1)
        reps = [r for r in self.store.replicas(states=("starting", "ready")) if r.node == node.name]
        for r in reps:
            self.store.update_replica(r.id, state="notified", drain_at=None)
        if reps:
            self.event("NodeDrain", f"node/{node.name}", f"{why} ({len(reps)} replica(s))")

    def _launch(self, pool: NodePoolSpec, dec: Launch, mem: _PoolMemory) -> bool:
        now = self.clock.now()
        t = self.catalog.get(dec.instance_type)
        name = f"{pool.name}-{'spot' if dec.capacity_type == 'spot' else 'od'}-{self.store.next_id('node')}"
        held = sum(1 for n in self.store.nodes(pool.name) if n.billing == "spot" and n.zone == dec.zone
                   and n.state == "ready")
        try:
            self.backend.launch_node(NodeLaunch(name, pool.name, dec.zone, dec.instance_type, dec.capacity_type, t.gpus),
                                     held, now)
        except CapacityUnavailable as exc:
            mem.unavailable[(dec.instance_type, dec.zone, dec.capacity_type)] = now
            mem.launch_failed[dec.zone] = mem.launch_failed.get(dec.zone, 0) + 1
            self.event("NodeLaunchFailed", f"nodepool/{pool.name}", str(exc))
            return False
        self.store.add_node(NodeRow(name=name, pool=pool.name, zone=dec.zone, instance_type=dec.instance_type,
                                    billing=dec.capacity_type, state="ready", launched_at=now, empty_since=now))
        price = t.price(dec.zone, dec.capacity_type)
        self.event("NodeLaunched", f"node/{name}",
                   f"{dec.capacity_type} {dec.instance_type} in {dec.zone} (${price:.3f}/h) for pool {pool.name}")
        return True

    def _terminate_node(self, node: NodeRow, why: str) -> None:
        now = self.clock.now()
        bound = [r for r in self.store.replicas() if r.node == node.name]
        if bound and node.state == "ready" and "tidal down" not in why:
            log.warning("not terminating node %s: %d replica(s) still on it", node.name, len(bound))
            return
        self.backend.terminate_node(node.name)
        self.store.update_node(node.name, state="terminated", terminated_at=now, reason=why)
        self.event("NodeTerminated", f"node/{node.name}", f"{why} (lived {now - node.launched_at:.0f}s, {node.billing})")

    # -- 7. empty nodes, for scale-in
    def _track_empty_nodes(self) -> None:
        now = self.clock.now()
        busy = {r.node for r in self.store.replicas(states=("pending", "starting", "ready", "draining", "notified")) if r.node}
        for n in self.store.nodes():
            if n.state != "ready":
                continue
            if n.name in busy and n.empty_since is not None:
                self.store.update_node(n.name, empty_since=None)
            elif n.name not in busy and n.empty_since is None:
                self.store.update_node(n.name, empty_since=now)

    # -- 8. the gateway follows the store
    def sync_gateway(self) -> None:
        from tidal.gateway.config import ReplicaEndpoint
        services = {s.spec.name: s.spec for s in self.store.list_services()}
        reps = self.store.replicas(states=("ready", "draining", "notified"))
        by_service: dict[str, list] = {name: [] for name in services}
        for r in reps:
            if r.port is None:
                continue
            if r.state == "notified" and r.ready_at is None:
                # Noticed while still starting (a slow model load): it never answered ready, so it gets no traffic.
                continue
            state = "draining" if r.state == "draining" else "ready"
            by_service.setdefault(r.service, []).append(ReplicaEndpoint(id=r.id, port=r.port, state=state))
        for name, endpoints in by_service.items():
            spec = services.get(name)
            if spec is None and not endpoints:
                if name in self.gateway.services():
                    self.gateway.remove_service(name)
                continue
            models = self._gateway_models.get(name)
            if models is None:
                models = (spec.model_name,) if spec is not None and spec.model_name else ()
            try:
                self.gateway.set_service(name, endpoints, models=models)
            except Exception:
                # Another service already answers for this model name: reach this one by its path prefix only.
                models = ()
                self.gateway.set_service(name, endpoints, models=())
            self._gateway_models[name] = models
        for name in self.gateway.services():
            if name not in by_service:
                self.gateway.remove_service(name)
                self._gateway_models.pop(name, None)

    def shutdown(self) -> None:
        """`tidal down`: replicas stop (draining in-flight work), nodes go; desired state stays for the next `up`."""
        for r in self.store.replicas(states=("pending", "starting", "ready", "notified", "draining")):
            if r.pid is None:
                self.store.update_replica(r.id, state="stopped", stopped_at=self.clock.now(), reason="tidal down")
            else:
                self._stop(r, "the control plane was stopped (tidal down)")
        for n in self.store.nodes():
            self._terminate_node(n, "the control plane was stopped (tidal down)")

    # ------------------------------------------------------------------ reports
    def cost(self, pool: str | None = None):
        now = self.clock.now()
        lives = [NodeLife(n.name, n.instance_type, n.zone, n.billing, n.launched_at, n.terminated_at)
                 for n in self.store.nodes(pool, include_terminated=True)]
        return summarize(lives, self.catalog, now)

    def pool_plan(self, pool: str) -> dict | None:
        return self._memory(pool).last_plan
