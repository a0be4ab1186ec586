"""Placement (pure): pending replicas onto nodes that fit, spread over nodes and zones, never back where they left.

The scoring is tidal.scheduling's. On top of it: a node that is cordoned, under a
notice, or holds a replica of the same service that is leaving (noticed or
draining) takes none of that service's replicas; and a replica that could only
share a node with another replica of its service, or go to a node its pool is
shrinking (it would be drained off again), while the pool still has room below
its maximum, stays pending until the capacity step has seen it once,
so the pool's demand launches a node for it (at the maximum, or once the capacity
step has had its chance, it shares). On-demand nodes above their pool's base are
placed on after spot and base nodes, and `move_to_spot` moves replicas off them to
spot nodes with room once spot is back (a surge: the replacement starts first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from tidal.capacity.catalog import Catalog
from tidal.capacity.nodepool import resources_of
from tidal.control.commands import Command, Event, Note, NotifyReplica, StartReplica
from tidal.control.decide.replicas import requests_of
from tidal.control.decide.spot import Risk, above_base, on_demand_surplus, risks
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
    dear = above_base(snap)
    infos, pool_of = [], {}
    for n in snap.nodes:
        t, pool = catalog.lookup(n.instance_type, n.zone), snap.pools.get(n.pool)
        if t is None or pool is None:
            continue
        pool_of[n.name] = n.pool
        infos.append(NodeInfo(n.name, pool.labels, resources_of(t),
                              schedulable=n.state == NodeState.READY and not n.cordoned,
                              preferred=n.name not in shed and n.name not in dear, zone=n.zone))
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


def _free(snap: Snapshot, catalog: Catalog) -> dict[str, Resources]:
    """What each ready, uncordoned node has left after the replicas bound to it."""
    used: dict[str, Resources] = {}
    for r in snap.replicas:
        spec = snap.services.get(r.service)
        if r.node and spec is not None and r.state != S.PENDING:
            used[r.node] = used.get(r.node, Resources()) + requests_of(spec.spec)
    out = {}
    for n in snap.nodes:
        t = catalog.lookup(n.instance_type, n.zone)
        if t is not None and n.state == NodeState.READY and not n.cordoned:
            out[n.name] = resources_of(t) - used.get(n.name, Resources())
    return out


def move_to_spot(snap: Snapshot, catalog: Catalog, shedding: Mapping[str, frozenset[str]]) -> list[Command]:
    """Spot is back: a ready replica on on-demand beyond its pool's ratio rules (base plus its percentage: the
    on-demand that stood in for spot) moves to a spot node with room (not at risk, not being shed). It is marked as leaving (notified, no deadline): its replacement starts, placed on
    spot first, and it drains once the replacement is ready, so the service never has fewer replicas serving.
    One move per service per pass, and none while the service is scaling or already moving."""
    risk = risks(snap)
    surplus = on_demand_surplus(snap)
    if not surplus:
        return []
    shed = frozenset().union(*shedding.values()) if shedding else frozenset()
    free = _free(snap, catalog)
    out: list[Command] = []
    for name, svc in snap.services.items():
        reps = snap.of(name)
        live = [r for r in reps if r.state in S.LIVE]
        if len(live) != svc.desired or any(r.state != S.READY for r in reps):
            continue  # scaling, starting, draining or already moving: not now
        need = requests_of(svc.spec)
        movable = [r for r in live if r.node in surplus]
        for r in sorted(movable, key=lambda r: (-r.created_at, r.id))[:1]:
            node = snap.node(r.node)
            pool = snap.pools.get(node.pool) if node else None
            if pool is None:
                continue
            spot = [n for n in snap.pool_nodes(pool.name, (NodeState.READY,))
                    if n.billing == "spot" and risk.get(n.name) == Risk.SPOT and n.name not in shed
                    and n.name in free and need.fits_in(free[n.name])]
            if not spot:
                continue
            target = spot[0]
            free[target.name] = free[target.name] - need
            out += [NotifyReplica(r.id, None), Note(Event(
                "ReplicaMoving", f"replica/{r.id}",
                f"spot is back: moving from on-demand node {r.node} (beyond the pool's base of "
                f"{pool.on_demand_base} and {pool.on_demand_percentage}% on-demand) to spot; it serves until its "
                f"replacement is ready"))]
    return out
