"""Placement (pure): pending replicas onto nodes that fit, spread over nodes and zones, never back where they left.

The scoring is tidal.scheduling's. On top of it: a node that is cordoned, under a
notice, or holds a replica of the same service that is leaving (noticed or
draining) takes none of that service's replicas; and a replica that could only
share a node with another replica of its service, or go to a node its pool is
shrinking (it would be drained off again), while the pool still has room below
its maximum, stays pending until the capacity step has seen it once,
so the pool's demand launches a node for it (at the maximum, or once the capacity
step has had its chance, it shares).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from tidal.capacity.catalog import Catalog
from tidal.capacity.nodepool import resources_of
from tidal.control.commands import Command, Event, Note, StartReplica
from tidal.control.decide.replicas import requests_of
from tidal.control.snapshot import Snapshot
from tidal.scheduling import NodeInfo, ReplicaRequest, Resources, schedule
from tidal.states import NodeState, ReplicaState as S


@dataclass(frozen=True)
class PlacementMemory:
    pending_noted: frozenset[str] = frozenset()  # replicas whose FailedScheduling event is written
    held: frozenset[str] = frozenset()           # held pending rather than share a node: for the capacity step
    waited: frozenset[str] = frozenset()         # held, and the capacity step has seen them: they may share


def capacity_ran(memory: PlacementMemory) -> PlacementMemory:
    """The capacity step has seen the held replicas as demand: from now on they may share a node."""
    return PlacementMemory(memory.pending_noted, frozenset(), memory.waited | memory.held)


def place(snap: Snapshot, catalog: Catalog, shedding: Mapping[str, frozenset[str]], memory: PlacementMemory,
          can_grow: bool = True) -> tuple[list[Command], PlacementMemory]:
    """`shedding`: per pool, the nodes its plan holds too many of (placed on last). `can_grow`: whether the
    control plane launches nodes (a backend whose cluster provisions them: no hold, nothing to wait for)."""
    pending = [r for r in snap.in_state(S.PENDING) if r.service in snap.services]
    if not pending:
        return [], PlacementMemory()
    shed = frozenset().union(*shedding.values()) if shedding else frozenset()
    infos, pool_of = [], {}
    for n in snap.nodes:
        t, pool = catalog.types.get(n.instance_type), snap.pools.get(n.pool)
        if t is None or pool is None:
            continue
        pool_of[n.name] = n.pool
        infos.append(NodeInfo(n.name, pool.labels, resources_of(t),
                              schedulable=n.state == NodeState.READY and not n.cordoned,
                              preferred=n.name not in shed, zone=n.zone))
    used: dict[str, Resources] = {}
    placed: dict[str, dict[str, int]] = {}
    leaving: dict[str, set[str]] = {}
    for r in snap.replicas:
        spec = snap.services.get(r.service)
        if not r.node or r.state == S.PENDING:
            continue
        if spec is not None:
            used[r.node] = used.get(r.node, Resources()) + requests_of(spec.spec)
        if r.state in (S.STARTING, S.READY):
            placed.setdefault(r.node, {})[r.service] = placed.get(r.node, {}).get(r.service, 0) + 1
        else:
            leaving.setdefault(r.service, set()).add(r.node)
    requests = [ReplicaRequest(r.id, snap.services[r.service].spec.selector, requests_of(snap.services[r.service].spec),
                               group=r.service, avoid=frozenset(leaving.get(r.service, ())))
                for r in pending]
    result = schedule(requests, infos, used, placed)
    by_id = {r.id: r for r in pending}
    out: list[Command] = []
    held, waited = set(memory.held) & set(by_id), set(memory.waited) & set(by_id)
    for bind in result.binds:
        pool = snap.pools[pool_of[bind.node]]
        room = len(snap.pool_nodes(pool.name, (NodeState.READY,))) < pool.max_nodes
        if (bind.colocated or bind.node in shed) and can_grow and room and bind.replica not in waited:
            held.add(bind.replica)  # pending: the pool's demand launches a node for it (one the plan keeps)
            continue
        rep = by_id[bind.replica]
        out.append(StartReplica(rep.id, rep.service, bind.node, Event(
            "ReplicaScheduled", f"replica/{rep.id}", f"started on node {bind.node} at {{endpoint}}")))
    noted = set(memory.pending_noted) & set(by_id)
    for rid in result.pending:
        if rid in noted:
            continue
        noted.add(rid)
        spec = snap.services[by_id[rid].service].spec
        req = requests_of(spec)
        out.append(Note(Event("FailedScheduling", f"replica/{rid}",
                              f"no node with labels {spec.selector or '{}'} has room for {req.gpus} GPU, "
                              f"{req.cpu:g} CPU, {req.memory_mib:g} MiB: pending (the pool scales out if it can)")))
    return out, PlacementMemory(frozenset(noted), frozenset(held), frozenset(waited))
