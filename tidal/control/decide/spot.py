"""Spot-aware scale-in (pure): how much each node's capacity is at risk, and so which replicas go first.

When a service scales in, the replicas to remove are chosen by what they stand on:
1. capacity at risk: a node under a reclaim notice, or a spot node in a zone that lost
   a node (a notice) within `LOSS_WINDOW_SECONDS`: it may go anyway, soon;
2. on-demand above the pool's base (`on_demand_base`): the dearest capacity, and the
   pool's ratio rules would rather have spot there;
3. spot that is not at risk;
4. on-demand within the base, which the pool keeps whatever happens.
Within a class the usual rule holds (not placed, then starting, then the newest).
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Iterable

from tidal.control.snapshot import LOSS_WINDOW_SECONDS, Snapshot
from tidal.control.store import ReplicaRow
from tidal.states import NodeState, ReplicaState as S



class Risk(IntEnum):
    """A node's class for scale-in; the lower, the sooner its replicas go."""
    AT_RISK = 0
    ON_DEMAND_ABOVE_BASE = 1
    SPOT = 2
    ON_DEMAND_BASE = 3


def lossy_zones(snap: Snapshot) -> frozenset[tuple[str, str]]:
    """(pool, zone) pairs with a node noticed within the loss window (still here, or gone since)."""
    return frozenset((n.pool, n.zone) for n in snap.nodes + snap.lost
                     if n.notified_at is not None and snap.now - n.notified_at < LOSS_WINDOW_SECONDS)


def above_base(snap: Snapshot) -> frozenset[str]:
    """On-demand nodes beyond each pool's base: the base is its oldest `on_demand_base` on-demand nodes."""
    out: set[str] = set()
    for pool in snap.pools.values():
        od = sorted((n for n in snap.pool_nodes(pool.name) if n.billing != "spot"), key=lambda n: (n.launched_at, n.name))
        out.update(n.name for n in od[pool.on_demand_base:])
    return frozenset(out)


def on_demand_surplus(snap: Snapshot) -> frozenset[str]:
    """On-demand nodes beyond what each pool's ratio rules ask for (base + its percentage of the rest, rounded up,
    as ESS counts): on-demand that stands in for spot, the newest first. These are what moves back to spot."""
    out: set[str] = set()
    for pool in snap.pools.values():
        if not pool.spot:
            continue
        nodes = snap.pool_nodes(pool.name, (NodeState.READY,))
        od = sorted((n for n in nodes if n.billing != "spot"), key=lambda n: (-n.launched_at, n.name))
        above = max(0, len(nodes) - pool.on_demand_base)
        wanted = min(len(nodes), pool.on_demand_base) + math.ceil(above * pool.on_demand_percentage / 100)
        out.update(n.name for n in od[:max(0, len(od) - wanted)])
    return frozenset(out)


def risks(snap: Snapshot) -> dict[str, Risk]:
    lossy, dear = lossy_zones(snap), above_base(snap)
    out = {}
    for n in snap.nodes:
        if n.state == NodeState.NOTIFIED or n.reclaim_at is not None or \
                (n.billing == "spot" and (n.pool, n.zone) in lossy):
            out[n.name] = Risk.AT_RISK
        elif n.billing != "spot":
            out[n.name] = Risk.ON_DEMAND_ABOVE_BASE if n.name in dear else Risk.ON_DEMAND_BASE
        else:
            out[n.name] = Risk.SPOT
    return out


_STATE_ORDER = {S.PENDING: 0, S.STARTING: 1, S.READY: 2}


def scale_in_order(snap: Snapshot, replicas: Iterable[ReplicaRow]) -> list[ReplicaRow]:
    """`replicas` (pending, starting or ready) in the order a scale-in removes them."""
    risk = risks(snap)
    return sorted(replicas, key=lambda r: (_STATE_ORDER[r.state], risk.get(r.node, Risk.AT_RISK),
                                           -r.created_at, r.id))
