"""Carries out a decision's commands against the store, the backend and the gateway, and records their events.

Every change is written to the store before the next command acts on it; what
only acting reveals (a launch the provider refused, a model name another service
holds) comes back as `Outcomes` for the decisions' state.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable, Iterable

from tidal.backends.base import Backend, CapacityUnavailable, NodeLaunch, ReplicaLaunch
from tidal.capacity.executor import Ledger, carry_out
from tidal.control import releases
from tidal.control.commands import (CarryOutPool, Command, CreateReplica, DiscardReplica, DrainNode, DrainReplica, Event,
                                    FailReplica, LaunchNode, LaunchRefused, MarkEmpty, MarkReady, MoveReplica, Note,
                                    NotifyNode, NotifyReplica, Outcomes, Preempted, PromoteRelease, RefuseLaunch,
                                    ReplicaExited, Route, Routed, SaveAutoscaler, SavePolicyState, SaveRollout, SetDesired,
                                    SetEndpoint, StartReplica, StopReplica, TerminateNode, Uncordon, Unroute, Warn)
from tidal.control.store import NodeRow, ReplicaRow, Store
from tidal.errors import NotFound
from tidal.spec import ServiceSpec
from tidal.states import NodeState, ReplicaState as S

log = logging.getLogger(__name__)

LaunchSpec = Callable[[ReplicaRow, ServiceSpec, str], ReplicaLaunch]


class Executor:
    def __init__(self, store: Store, backend: Backend, gateway, clock, launch_spec: LaunchSpec,
                 stop_grace_seconds: float) -> None:
        self.store = store
        self.backend = backend
        self.gateway = gateway
        self.clock = clock
        self.launch_spec = launch_spec
        self.stop_grace_seconds = stop_grace_seconds
        self._conflicts: set[tuple[str, tuple[str, ...]]] = set()  # logged once each

    def event(self, kind: str, obj: str, message: str) -> None:
        self.store.add_event(self.clock.now(), kind, obj, message)
        log.info("%s %s: %s", kind, obj, message)

    def record(self, e: Event | None, **fill: str) -> None:
        if e is not None:
            self.event(e.kind, e.obj.format(**fill) if fill else e.obj, e.message.format(**fill) if fill else e.message)

    def run(self, commands: Iterable[Command]) -> Outcomes:
        out = Outcomes()
        self.carry(commands, out)
        return out

    def carry(self, commands: Iterable[Command], out: Outcomes) -> None:
        for c in commands:
            getattr(self, "_" + type(c).__name__)(c, out)

    # -- replicas
    def _CreateReplica(self, c: CreateReplica, out: Outcomes) -> None:
        rid = f"{c.workload}-{self.store.next_id('replica:' + c.service)}"
        self.store.add_replica(ReplicaRow(id=rid, service=c.service, release=c.release, node=None,
                                          state=S.PENDING, created_at=self.clock.now()))

    def _StartReplica(self, c: StartReplica, out: Outcomes) -> None:
        now = self.clock.now()
        rep = self.store.get_replica(c.replica)
        try:
            launch = self.launch_spec(rep, self._release_spec(c.service, rep.release), c.node)
        except Exception as exc:
            self.store.update_replica(rep.id, state=S.FAILED, stopped_at=now, reason=str(exc))
            self.event("ReplicaFailed", f"replica/{rep.id}", f"cannot start: {exc}")
            return
        # The node is recorded before the process starts; the ref right after it (see Reconciler.adopt()).
        self.store.update_replica(rep.id, node=c.node)
        try:
            started = self.backend.start_replica(launch)
        except Exception as exc:
            self.store.update_replica(rep.id, state=S.FAILED, stopped_at=now, reason=f"cannot start: {exc}")
            self.event("ReplicaFailed", f"replica/{rep.id}", f"cannot start: {exc}")
            return
        self.store.update_replica(rep.id, state=S.STARTING, ref=started.ref, endpoint=started.endpoint)
        out.started[rep.id] = started.ref
        # A pod has no address until it runs: the backend reports it with the replica's status.
        self.record(c.event, endpoint=started.endpoint or "the address its pod gets")

    def _release_spec(self, service: str, key: str) -> ServiceSpec:
        """What a replica of release `key` runs: its service's spec, or during a rollout the canary's."""
        rollout = releases.load(self.store.get_rollout_record(service), service)
        return releases.spec_for(self.store.get_service(service).spec, rollout, key)

    def _MarkReady(self, c: MarkReady, out: Outcomes) -> None:
        self.store.update_replica(c.replica, state=S.READY, ready_at=self.clock.now(), runtime=c.runtime)
        self.record(c.event)

    def _FailReplica(self, c: FailReplica, out: Outcomes) -> None:
        if c.stop:
            rep = self.store.get_replica(c.replica)
            self.backend.stop_replica(rep.id, rep.ref, 1.0)
        self.store.update_replica(c.replica, state=S.FAILED, stopped_at=self.clock.now(), reason=c.reason)
        self.record(c.event)

    def _SetEndpoint(self, c: SetEndpoint, out: Outcomes) -> None:
        self.store.update_replica(c.replica, endpoint=c.endpoint)

    def _MoveReplica(self, c: MoveReplica, out: Outcomes) -> None:
        self.store.update_replica(c.replica, node=c.node)

    def _NotifyReplica(self, c: NotifyReplica, out: Outcomes) -> None:
        self.store.update_replica(c.replica, state=S.NOTIFIED, drain_at=c.drain_at)

    def _DrainReplica(self, c: DrainReplica, out: Outcomes) -> None:
        changes = {"reason": c.reason} if c.reason is not None else {}
        self.store.update_replica(c.replica, state=S.DRAINING, drain_at=c.drain_at, **changes)
        self.record(c.event)

    def _DiscardReplica(self, c: DiscardReplica, out: Outcomes) -> None:
        self.store.update_replica(c.replica, state=S.STOPPED, stopped_at=self.clock.now(), reason=c.reason)

    def _StopReplica(self, c: StopReplica, out: Outcomes) -> None:
        rep = self.store.get_replica(c.replica)
        if rep.ref is not None:
            self.backend.stop_replica(rep.id, rep.ref, self.stop_grace_seconds)
        self.store.update_replica(rep.id, state=S.STOPPED, stopped_at=self.clock.now(), reason=c.reason)
        self.record(c.event)

    def _ReplicaExited(self, c: ReplicaExited, out: Outcomes) -> None:
        self.store.update_replica(c.replica, state=S.STOPPED, stopped_at=self.clock.now())
        self.record(c.event)

    # -- nodes
    def _CarryOutPool(self, c: CarryOutPool, out: Outcomes) -> None:
        """Through the one executor of capacity Plans (`tidal.capacity.executor.carry_out`, which the simulator
        runs too): its provider here is this executor's node commands, each capacity command's own group."""
        groups: dict[object, deque] = {}
        for cmd, group in zip(c.planned.commands, c.actions):
            groups.setdefault(cmd, deque()).append(group)
        executor = self

        class Provider:
            def launch(self, launch, now):
                (node,) = groups[launch].popleft()
                if not executor._LaunchNode(node, out):
                    raise CapacityUnavailable(f"launch refused in {launch.zone}")

            def terminate(self, terminate, now):
                executor.carry(groups[terminate].popleft(), out)

            def drain(self, drain, now):
                executor.carry(groups[drain].popleft(), out)

        carry_out(c.planned, Provider(), Ledger(), self.clock.now())

    def _LaunchNode(self, c: LaunchNode, out: Outcomes) -> bool:
        now = self.clock.now()
        provisioner = self.backend.provisioner
        if provisioner is None:
            return False  # the cluster provisions nodes itself
        name = f"{c.pool}-{'spot' if c.capacity_type == 'spot' else 'od'}-{self.store.next_id('node')}"
        # What the zone holds now (launches before this one in the pass may have been refused).
        held = sum(1 for n in self.store.nodes(c.pool) if n.billing == "spot" and n.zone == c.zone
                   and n.state == NodeState.READY) if c.capacity_type == "spot" else 0
        try:
            # A provisioner that claims an existing node (a cluster's) names it; the others take Tidal's name.
            claimed = provisioner.launch_node(NodeLaunch(name, c.pool, c.zone, c.instance_type, c.capacity_type,
                                                         c.gpus), held, now)
            name = claimed if isinstance(claimed, str) and claimed else name
        except CapacityUnavailable as exc:
            out.refused.append(LaunchRefused(c.pool, (c.instance_type, c.zone, c.capacity_type), now))
            self.event("NodeLaunchFailed", f"nodepool/{c.pool}", str(exc))
            return False
        self.store.add_node(NodeRow(name=name, pool=c.pool, zone=c.zone, instance_type=c.instance_type,
                                    billing=c.capacity_type, state=NodeState.READY, launched_at=now, empty_since=now))
        self.record(c.event, name=name)
        return True

    def _TerminateNode(self, c: TerminateNode, out: Outcomes) -> None:
        try:
            node = self.store.get_node(c.node)
        except NotFound:
            return
        if node.state == NodeState.TERMINATED:
            return
        bound = [r for r in self.store.replicas() if r.node == node.name]
        if bound and node.state == NodeState.READY and not c.force:
            log.warning("not terminating node %s: %d replica(s) still on it", node.name, len(bound))
            return
        if self.backend.provisioner is not None:
            self.backend.provisioner.terminate_node(node.name)
        self.store.update_node(node.name, state=NodeState.TERMINATED, terminated_at=self.clock.now(), reason=c.reason)
        self.record(c.event)

    def _DrainNode(self, c: DrainNode, out: Outcomes) -> None:
        self.store.update_node(c.node, cordoned=1)
        for rid in c.replicas:
            self.store.update_replica(rid, state=S.NOTIFIED, drain_at=None)
        self.record(c.event)

    def _RefuseLaunch(self, c: RefuseLaunch, out: Outcomes) -> None:
        out.refused.append(LaunchRefused(c.pool, c.offering, self.clock.now()))
        self.record(c.event)

    def _Uncordon(self, c: Uncordon, out: Outcomes) -> None:
        self.store.update_node(c.node, cordoned=0)

    def _NotifyNode(self, c: NotifyNode, out: Outcomes) -> None:
        now = self.clock.now()
        self.store.update_node(c.node, state=NodeState.NOTIFIED, notified_at=now, reclaim_at=c.reclaim_at)
        out.preempted.append(Preempted(c.pool, c.zone, self.store.get_node(c.node).instance_type))
        self.record(c.event)

    def _MarkEmpty(self, c: MarkEmpty, out: Outcomes) -> None:
        self.store.update_node(c.node, empty_since=c.since)

    # -- services, autoscalers, pools
    def _SetDesired(self, c: SetDesired, out: Outcomes) -> None:
        self.store.set_desired(c.service, c.desired)
        self.record(c.event)

    def _SaveAutoscaler(self, c: SaveAutoscaler, out: Outcomes) -> None:
        if c.status is not None:
            self.store.set_autoscaler_last(c.service, c.status)
        if c.memory is not None:
            self.store.set_autoscaler_state(c.service, c.memory)

    def _SaveRollout(self, c: SaveRollout, out: Outcomes) -> None:
        self.store.put_rollout_record(c.rollout.service, c.rollout.model_dump_json(), self.clock.now())
        self.record(c.event)

    def _PromoteRelease(self, c: PromoteRelease, out: Outcomes) -> None:
        self.store.update_service(c.spec)

    def _SavePolicyState(self, c: SavePolicyState, out: Outcomes) -> None:
        self.store.set_pool_state(c.pool, c.text)

    # -- routing
    def _Route(self, c: Route, out: Outcomes) -> None:
        from tidal.gateway.config import ReplicaEndpoint
        endpoints = [ReplicaEndpoint(id=e.id, host=e.host, port=e.port, state=e.state, release=e.release)
                     for e in c.endpoints]
        models = c.models
        # Only a service that queues says so: a gateway stand-in without queues keeps working.
        extra = {"queue": c.queue, "unready_reason": c.unready_reason} if c.queue is not None else {}
        if c.releases is not None:  # likewise only a service in a rollout
            extra["releases"] = c.releases
        try:
            self.gateway.set_service(c.service, endpoints, models=models, **extra)
            self._conflicts.discard((c.service, models))
        except Exception as exc:
            if not models:
                raise
            # Another service still answers for this model name: reach this one by its path prefix for now.
            if (c.service, models) not in self._conflicts:
                self._conflicts.add((c.service, models))
                log.info("service %s: model name %s not routed yet (%s)", c.service, ", ".join(models), exc)
            models = ()
            self.gateway.set_service(c.service, endpoints, models=(), **extra)
        out.routed.append(Routed(c.service, models))

    def _Unroute(self, c: Unroute, out: Outcomes) -> None:
        self.gateway.remove_service(c.service)

    # -- records only
    def _Note(self, c: Note, out: Outcomes) -> None:
        self.record(c.event)

    def _Warn(self, c: Warn, out: Outcomes) -> None:
        log.warning("%s", c.message)
