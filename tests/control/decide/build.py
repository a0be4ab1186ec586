"""Snapshots for the decision tables: a few services, pools, nodes and replicas in a line each."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from tidal.capacity.catalog import Catalog, InstanceType
from tidal.control.decide.replicas import release_hash
from tidal.control.snapshot import Autoscaler, Snapshot
from tidal.control.store import NodeRow, ReplicaRow, ServiceRow
from tidal.spec import NodePoolSpec, ServiceSpec
from tidal.states import NodeState, ReplicaState

CAT = Catalog([
    InstanceType(name="gpu.small", vcpu=4, memory_gib=15, gpus=1, on_demand_price=1.0,
                 spot_prices={"z-a": 0.30, "z-b": 0.25}),
    InstanceType(name="cpu.large", vcpu=8, memory_gib=16, gpus=0, on_demand_price=0.4,
                 spot_prices={"z-a": 0.10, "z-b": 0.12}),
])
NOW = 10_000.0


def service(name="s", desired=1, **spec) -> ServiceRow:
    spec.setdefault("model_path", "/models/m")
    spec.setdefault("version", "1")
    return ServiceRow(ServiceSpec(name=name, **spec), desired, 0.0)


def pool(name="p", **kw) -> NodePoolSpec:
    kw.setdefault("instance_types", ["cpu.large"])
    kw.setdefault("zones", ["z-a", "z-b"])
    return NodePoolSpec(name=name, **kw)


def node(name, zone="z-a", pool="p", billing="spot", state=NodeState.READY, instance_type="cpu.large",
         launched_at=0.0, empty_since=None, cordoned=0, reclaim_at=None) -> NodeRow:
    return NodeRow(name=name, pool=pool, zone=zone, instance_type=instance_type, billing=billing,
                   state=NodeState(state), launched_at=launched_at, empty_since=empty_since, cordoned=cordoned,
                   reclaim_at=reclaim_at)


def replica(rid, state=ReplicaState.READY, node=None, service="s", created_at=0.0, ready_at=None, drain_at=None,
            release=None, stopped_at=None, reason="", running=None) -> ReplicaRow:
    state = ReplicaState(state)
    running = state != ReplicaState.PENDING if running is None else running
    return ReplicaRow(id=rid, service=service, release=release or "", node=node, state=state,
                      created_at=created_at, ready_at=ready_at if ready_at is not None else
                      (created_at if state in (ReplicaState.READY,) else None),
                      drain_at=drain_at, stopped_at=stopped_at, reason=reason,
                      ref={"pid": 1} if running else None, endpoint="127.0.0.1:9000" if running else None)


def snap(now=NOW, services=(), pools=(), nodes=(), replicas=(), failed=(), autoscalers=None,
         policy_states=None) -> Snapshot:
    by_name = {s.spec.name: s for s in services}

    def current(r: ReplicaRow) -> ReplicaRow:
        # A replica without a release runs its service's current one.
        if not r.release and r.service in by_name:
            return replace(r, release=release_hash(by_name[r.service].spec))
        return r
    return Snapshot(now=now, services=MappingProxyType(by_name), pools=MappingProxyType({p.name: p for p in pools}),
                    nodes=tuple(nodes), replicas=tuple(current(r) for r in replicas),
                    failed=tuple(current(r) for r in failed),
                    autoscalers=MappingProxyType({k: Autoscaler(v) if isinstance(v, dict) else v
                                                  for k, v in (autoscalers or {}).items()}),
                    policy_states=MappingProxyType(policy_states or {}))


def kinds(commands) -> list[str]:
    return [type(c).__name__ for c in commands]
