"""A typed, immutable view of the store (and what was observed of the backend) that decisions read, at one `now`."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from tidal.control import releases
from tidal.control.records import AutoscalerMemory, AutoscalerStatus
from tidal.control.store import NodeRow, ReplicaRow, ServiceRow, Store
from tidal.spec import NodePoolSpec
from tidal.states import NodeState, ReplicaState

# Failed replicas this recent count for a service's back-off.
FAILURE_WINDOW_SECONDS = 600.0
# Nodes noticed and gone this recently mark their zone as losing capacity (spot-aware scale-in).
LOSS_WINDOW_SECONDS = 900.0


@dataclass(frozen=True)
class Autoscaler:
    document: dict
    status: AutoscalerStatus | None = None
    memory: AutoscalerMemory | None = None


@dataclass(frozen=True)
class Snapshot:
    now: float
    services: Mapping[str, ServiceRow] = field(default_factory=dict)
    pools: Mapping[str, NodePoolSpec] = field(default_factory=dict)
    nodes: tuple[NodeRow, ...] = ()              # not terminated
    replicas: tuple[ReplicaRow, ...] = ()        # active (pending .. draining)
    failed: tuple[ReplicaRow, ...] = ()          # failed within FAILURE_WINDOW_SECONDS
    autoscalers: Mapping[str, Autoscaler] = field(default_factory=dict)
    policy_states: Mapping[str, str | None] = field(default_factory=dict)  # pool -> stored record
    rollouts: Mapping[str, releases.Rollout] = field(default_factory=dict)  # service -> its (last) rollout
    lost: tuple[NodeRow, ...] = ()               # terminated within LOSS_WINDOW_SECONDS after a notice

    def releases(self, service: str) -> list[releases.Release]:
        svc = self.services[service]
        return releases.releases(svc.spec, svc.desired, self.rollouts.get(service))

    def node(self, name: str | None) -> NodeRow | None:
        return next((n for n in self.nodes if n.name == name), None) if name else None

    def of(self, service: str, states=ReplicaState.ACTIVE) -> list[ReplicaRow]:
        return [r for r in self.replicas if r.service == service and r.state in states]

    def on(self, node: str, states=ReplicaState.ACTIVE) -> list[ReplicaRow]:
        return [r for r in self.replicas if r.node == node and r.state in states]

    def in_state(self, *states: ReplicaState) -> list[ReplicaRow]:
        return [r for r in self.replicas if r.state in states]

    def pool_nodes(self, pool: str, states=NodeState.LIVE) -> list[NodeRow]:
        return [n for n in self.nodes if n.pool == pool and n.state in states]


def take(store: Store, now: float, *, autoscalers: bool = False, policy_states: bool = False) -> Snapshot:
    """Read the store once. Autoscaler records and policy states are read only by the steps that use them."""
    services = {s.spec.name: s for s in store.list_services()}
    scalers: dict[str, Autoscaler] = {}
    if autoscalers:
        for name in services:
            found = store.get_autoscaler(name)
            if found is not None:
                scalers[name] = Autoscaler(found[0], store.get_autoscaler_status(name),
                                           store.get_autoscaler_state(name))
    pools = {p.name: p for p in store.list_pools()}
    return Snapshot(
        now=now,
        services=MappingProxyType(services),
        pools=MappingProxyType(pools),
        nodes=tuple(store.nodes()),
        replicas=tuple(store.replicas(states=ReplicaState.ACTIVE)),
        failed=tuple(store.replicas(states=(ReplicaState.FAILED,), stopped_since=now - FAILURE_WINDOW_SECONDS)),
        autoscalers=MappingProxyType(scalers),
        policy_states=MappingProxyType({p: store.get_pool_state(p) for p in pools} if policy_states else {}),
        rollouts=MappingProxyType(_rollouts(store, services)),
        lost=tuple(n for n in store.nodes(include_terminated=True, noticed_since=now - LOSS_WINDOW_SECONDS)
                   if n.state == NodeState.TERMINATED),
    )


def _rollouts(store: Store, services: Mapping[str, ServiceRow]) -> dict[str, releases.Rollout]:
    out = {}
    for name, text in store.rollout_records().items():
        found = releases.load(text, name)
        if found is not None and name in services:
            out[name] = found
    return out
