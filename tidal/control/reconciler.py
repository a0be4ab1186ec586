"""The reconcile loop: observe, decide, execute, in steps a reader can follow.

A pass observes what the replicas are doing (the backend's probes) and what the
gateway counts, then runs the pure decisions of tidal.control.decide in order
(probes -> notices -> autoscaling -> replicas -> placement -> capacity ->
placement -> drained -> routing), each on a fresh snapshot of the store, and hands
each step's typed commands to the executor, which carries them out and records
their events. The memory decisions keep between passes (last syncs, last
recommendations, events already written, pools' policy states) is typed state
this class holds and passes in. All times are the injected clock's (virtual when
a time factor is set); only the gateway's QPS windows are real seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from tidal.autoscaling.scrape import Scraper
from tidal.backends.base import Backend, NodeLaunch, ReplicaLaunch
from tidal.capacity.catalog import Catalog
from tidal.capacity.cost import NodeLife, summarize
from tidal.capacity.nodepool import pool_zones
from tidal.control.commands import (Command, DiscardReplica, Event, FailReplica, Note, Outcomes, StopReplica,
                                    TerminateNode)
from tidal.control.decide import (autoscaling, capacity, cluster, notices, placement, replicas, rollout, routing,
                                  zero)
from tidal.control.decide.autoscaling import workload_name as _workload_name
from tidal.control.decide.replicas import (DEFAULT_CPU, DEFAULT_MEMORY_MIB, release_hash,  # noqa: F401 (re-exported)
                                           requests_of)
from tidal.control.executor import Executor
from tidal.control.home import Home
from tidal.control.settings import ControlSettings  # noqa: F401 (its home before: tidal up and the daemon import it here)
from tidal.control.snapshot import Snapshot, take
from tidal.control.store import NodeRow, ReplicaRow, Store
from tidal.errors import InvalidArgument, NotFound
from tidal.gateway.client import GatewayUnreachable
from tidal.gateway.releases import SAMPLE_SECONDS
from tidal.spec import NodePoolSpec, ServiceSpec
from tidal.states import NodeState, ReplicaState as S

log = logging.getLogger(__name__)


class Reconciler:
    """Build with injected store, backend, gateway, catalog and clock; `await tick()` runs one pass."""

    def __init__(self, store: Store, backend: Backend, gateway, catalog: Catalog, clock, home: Home,
                 settings: ControlSettings | None = None, real_seconds: Callable[[float], float] | None = None) -> None:
        self.store = store
        self.backend = backend
        self.gateway = gateway
        self.catalog = catalog
        self.clock = clock
        self.home = home
        self.settings = settings or ControlSettings()
        self._real = real_seconds or (lambda s: s)
        self.lock = asyncio.Lock()
        self.executor = Executor(store, backend, gateway, clock, self._launch_spec, self.settings.stop_grace_seconds)
        # What the decisions remember between passes (typed, passed in and returned).
        self._autoscaling = autoscaling.AutoscalingMemory()
        self._replicas = replicas.ReplicaMemory()
        self._placement = placement.PlacementMemory()
        self._pools: dict[str, capacity.PoolMemory] = {}
        self.burst_tick_seconds: float | None = None
        self._zero = zero.ZeroMemory()
        self._cluster = cluster.ClusterMemory()
        self.scraper = Scraper()  # replicas' Prometheus metrics, for HPAs that name one
        # Requests wait at the gateway for a replica: the loop looks again within a tenth of a second.
        self.waiting = False

    # ------------------------------------------------------------------ plumbing
    def event(self, kind: str, obj: str, message: str) -> None:
        self.executor.event(kind, obj, message)

    def _snapshot(self, **what: bool) -> Snapshot:
        return take(self.store, self.clock.now(), **what)

    def _run(self, commands: list[Command]) -> Outcomes:
        outcomes = self.executor.run(commands)
        if outcomes.refused or outcomes.preempted:
            self._pools = capacity.feed(self._pools, outcomes.refused, outcomes.preempted)
        return outcomes

    # ------------------------------------------------------------------ startup
    def adopt(self) -> None:
        """After a restart: keep replicas that still run, mark the gone ones failed; the backend removes strays."""
        provisioner = self.backend.provisioner
        for node in self.store.nodes():
            t = self.catalog.lookup(node.instance_type, node.zone)
            if provisioner is not None:
                provisioner.adopt_node(NodeLaunch(node.name, node.pool, node.zone, node.instance_type, node.billing,
                                                  t.gpus if t else 0))
        reps = self.store.replicas(states=S.RUNNING)
        adoption = self.backend.adopt({r.id: r.ref for r in reps if r.ref})
        gone = "its process was gone when the control plane restarted"
        cmds: list[Command] = [
            Note(Event("ReplicaAdopted", f"replica/{r.id}", f"{r.endpoint} is still running: adopted"))
            if r.id in adoption.running else FailReplica(r.id, gone, Event("ReplicaFailed", f"replica/{r.id}", gone))
            for r in reps]
        cmds += [Note(Event("ReplicaKilled", f"replica/{rid}", what)) for rid, what in adoption.removed]
        self._run(cmds)
        for pool in self.store.list_pools():
            self.attach_trace(pool)

    def attach_trace(self, pool: NodePoolSpec) -> None:
        if pool.spot_trace and hasattr(self.backend, "set_trace"):
            start = float(self.store.get_meta(f"trace_start:{pool.name}") or self.clock.now())
            self.store.set_meta(f"trace_start:{pool.name}", repr(start))
            self.backend.set_trace(pool.name, pool.spot_trace, pool_zones(pool, self.catalog), start)

    # ------------------------------------------------------------------ one pass
    async def tick(self) -> None:
        async with self.lock:
            statuses = await self._observe_replicas()
            self._run(replicas.observed(self._snapshot(), statuses, self.settings))
            self._cluster_nodes()
            snap = self._snapshot()
            self._run(notices.reclaims(snap, self._spot_capacity(snap), self.settings.notice_margin_seconds))
            self._run(notices.expire(self._snapshot()))
            self._autoscale(await self._scrape())
            self._roll()
            cmds, self._replicas = replicas.lifecycle(self._snapshot(), self.settings, self._replicas)
            self._run(cmds)
            self._place()
            self._scale_pools()
            self._place()
            self._run(placement.move_to_spot(self._snapshot(), self.catalog,
                                             {name: m.shedding for name, m in self._pools.items()}))
            self._run(replicas.stop_drained(self._snapshot()))
            self._run(capacity.track_empty(self._snapshot()))
            self.sync_gateway()

    def _cluster_nodes(self) -> None:
        """A backend on a cluster: its Nodes' signals, Nodes gone, and pods that find no Node (decide.cluster)."""
        view = getattr(self.backend, "cluster_view", None)
        seen = view() if view is not None else None
        if seen is None:
            return
        self._run(cluster.move(self._snapshot(), seen))  # where the pods really are, before notices count them
        cmds, self._cluster = cluster.decide(self._snapshot(), seen, self._cluster,
                                             self.settings.unschedulable_seconds, self.settings.notice_margin_seconds)
        self._run(cmds)

    def settling(self) -> bool:
        """Whether replicas are on their way in or out (the loop then looks again sooner)."""
        return bool(self.store.replicas(states=S.SETTLING)) or self.rolling()

    def rolling(self) -> bool:
        """Whether a rollout is in progress (its guards are judged every second, not every tick)."""
        return any(r.active for r in self._snapshot().rollouts.values())

    async def _observe_replicas(self):
        running = [r for r in self.store.replicas(states=S.RUNNING) if r.ref is not None]
        if not running:
            return {}
        return await self.backend.observe_replicas({r.id: r.ref for r in running},
                                                   frozenset(r.id for r in running if r.state != S.STARTING))

    def _spot_capacity(self, snap: Snapshot) -> dict[tuple[str, str], int | None]:
        provisioner = self.backend.provisioner
        out: dict[tuple[str, str], int | None] = {}
        if provisioner is None:
            return out
        for pool in snap.pools.values():
            if pool.spot_trace:
                for n in snap.pool_nodes(pool.name, (NodeState.READY,)):
                    if n.billing == "spot" and (pool.name, n.zone) not in out:
                        out[(pool.name, n.zone)] = provisioner.spot_capacity(pool.name, n.zone, snap.now)
        return out

    async def _scrape(self) -> dict:
        targets = autoscaling.scrape_targets(self._snapshot(autoscalers=True))
        return {name: await self.scraper.scrape(endpoints, wanted) for name, (wanted, endpoints) in targets.items()}

    def _autoscale(self, scraped: dict | None = None) -> None:
        snap = self._snapshot(autoscalers=True)
        window = self.settings.qps_window_seconds
        qps: dict[tuple[str, float], float] = {}
        signals = {}
        for name, scaler in snap.autoscalers.items():
            spec, _ = autoscaling.parse(scaler.document)
            if spec is None:
                continue
            for w in autoscaling.windows(spec, window, self._real):
                rate = self._gateway_qps(name, w)
                if rate is not None:
                    qps[(name, w)] = rate
            if autoscaling.reads_gateway_signals(spec):
                signals[name] = self._gateway_signals(name, autoscaling.hpa_window(window, self._real))
        result = autoscaling.decide(snap, qps, self._autoscaling, window, self._real, gateway=signals,
                                    scraped=scraped)
        self._autoscaling = result.memory
        self.burst_tick_seconds = result.burst_tick_seconds
        self._run(result.commands)
        self._scale_to_zero(snap, result.floors)

    def _roll(self) -> None:
        """Rollouts: guards and steps, on the gateway's counts of each release since the current step began."""
        snap = self._snapshot()
        counts = {}
        for name, r in snap.rollouts.items():
            found = self.release_counts(r, snap.now) if r.active else None
            if found is not None:
                counts[name] = {s.release: s for s in found}
        self._run(rollout.decide(snap, counts))

    def release_counts(self, r, now: float) -> list | None:
        """The gateway's counts of each release of a rollout since its current step began (real seconds, at
        most the gateway's sample window); None while the gateway cannot say (not answering, not routed yet)."""
        since = max(r.started_at, r.step_started_at or r.started_at)
        try:
            return self.gateway.release_stats(r.service, min(SAMPLE_SECONDS, max(1.0, self._real(now - since))))
        except NotFound:
            return None

    def _gateway_signals(self, service: str, window: float):
        """None (missing metrics: the HPA holds) while the gateway cannot be reached or has not routed it."""
        try:
            return self.gateway.signals(service, window)
        except NotFound:  # GatewayUnreachable is one
            return None

    def _scale_to_zero(self, snap: Snapshot, floors: dict[str, int] | None = None) -> None:
        specs = {}
        for name, scaler in snap.autoscalers.items():
            spec, _ = autoscaling.parse(scaler.document)
            if zero.scales_to_zero(spec) and not (floors or {}).get(name):  # a window or forecast holds it up
                specs[name] = spec
        activity = {name: self._activity(name) for name in specs}
        self.waiting = any(a is not None and a.queued > 0 for a in activity.values())
        cmds, self._zero = zero.decide(self._snapshot(), specs, activity, self._zero)
        self._run(cmds)

    def _activity(self, service: str) -> zero.Activity | None:
        """What the gateway holds for a service now; None while it cannot be reached (nothing is decided)."""
        try:
            st = self.gateway.stats(service)
        except GatewayUnreachable:
            return None
        except NotFound:  # not routed yet: no traffic
            return zero.Activity(requests=0)
        return zero.Activity(requests=st.requests, in_flight=st.in_flight, queued=getattr(st, "queued", 0))

    def _gateway_qps(self, service: str, window: float) -> float | None:
        """The gateway's rate; 0 for a service it has not routed yet; None (a missing metric: the HPA holds, as
        Kubernetes' does when its metrics API fails) while the gateway process cannot be reached."""
        try:
            return self.gateway.qps(service, window)
        except GatewayUnreachable:
            return None
        except NotFound:  # no replica has been routed yet: no traffic
            return 0.0

    def _place(self) -> None:
        shedding = {name: m.shedding for name, m in self._pools.items()}
        cmds, self._placement = placement.place(self._snapshot(), self.catalog, shedding, self._placement,
                                                can_grow=self.backend.provisioner is not None)
        self._run(cmds)

    def _scale_pools(self) -> None:
        """Per pool, one decision per pass: the policy's Plan as launches, terminations and drains. Launches the
        provider refuses reach the policy at the next pass (ESS then compensates with on-demand)."""
        if self.backend.provisioner is None:
            return  # the cluster's own provisioner follows the pending replicas
        cmds, self._pools = capacity.decide(self._snapshot(policy_states=True), self.catalog, self._pools,
                                            self.settings)
        self._placement = placement.capacity_ran(self._placement)
        self._run(cmds)

    # ------------------------------------------------------------------ injected preemption
    def preempt(self, pool_name: str, node: str | None = None, count: int = 1,
                notice_seconds: float | None = None) -> list[str]:
        """Inject a preemption: spot nodes of the pool get a reclaim notice (the busiest first)."""
        pool = self.store.get_pool(pool_name)
        snap = self._snapshot()
        chosen = notices.choose_victims(snap, pool, node, count)
        cmds: list[Command] = []
        for n in chosen:
            cmds += notices.notify(snap, n, pool, "preemption injected", notice_seconds,
                                   self.settings.notice_margin_seconds)
        self._run(cmds)
        return [n.name for n in chosen]

    def notify_node(self, node: NodeRow, pool: NodePoolSpec, why: str, notice_seconds: float | None = None) -> None:
        self._run(notices.notify(self._snapshot(), node, pool, why, notice_seconds, self.settings.notice_margin_seconds))

    # ------------------------------------------------------------------ the gateway follows the store
    def sync_gateway(self) -> None:
        self._run(routing.route(self._snapshot(autoscalers=True), frozenset(self.gateway.services())))

    def shutdown(self) -> None:
        """`tidal down`: replicas stop (draining in-flight work), nodes go; desired state stays for the next `up`."""
        now = self.clock.now()
        why = "the control plane was stopped (tidal down)"
        cmds: list[Command] = []
        for r in self.store.replicas(states=S.ACTIVE):
            if r.ref is None:
                cmds.append(DiscardReplica(r.id, "tidal down"))
            else:
                cmds.append(StopReplica(r.id, why, Event("ReplicaStopped", f"replica/{r.id}", why)))
        for n in self.store.nodes():
            cmds.append(TerminateNode(n.name, why, Event("NodeTerminated", f"node/{n.name}",
                                                         f"{why} (lived {now - n.launched_at:.0f}s, {n.billing})"),
                                      force=True))
        self._run(cmds)

    # ------------------------------------------------------------------ services and their model paths
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

    def _launch_spec(self, rep: ReplicaRow, spec: ServiceSpec, node: str) -> ReplicaLaunch:
        env = dict(spec.env)
        base = ""
        if spec.model_path:
            base, secret_env = self.resolve_model_path(spec)
            env.update(secret_env)
        return ReplicaLaunch(replica=rep.id, service=spec.name, node=node, model_name=spec.model_name,
                             model_base_path=base, version_policy=str(spec.version_policy), gpus=spec.gpus,
                             env=env, model_config_file=spec.model_config_file, release=spec.release)

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

    # ------------------------------------------------------------------ reports
    def cost(self, pool: str | None = None):
        now = self.clock.now()
        lives = [NodeLife(n.name, n.instance_type, n.zone, n.billing, n.launched_at, n.terminated_at)
                 for n in self.store.nodes(pool, include_terminated=True)]
        return summarize(lives, self.catalog, now)

    def pool_plan(self, pool: str) -> dict | None:
        return self._pools.get(pool, capacity.PoolMemory()).last_plan

    def pool_memory(self, pool: str) -> capacity.PoolMemory:
        """The capacity step's memory of a pool (its policy's state and the zones it follows)."""
        return self._pools.get(pool, capacity.PoolMemory())
