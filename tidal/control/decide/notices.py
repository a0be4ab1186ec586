"""Preemption notices (pure): a spot trace's capacity drop or an injected notice, and nodes whose notice ran out."""

from __future__ import annotations

from tidal.control.commands import Command, Event, NotifyNode, NotifyReplica, StopReplica, TerminateNode
from tidal.control.snapshot import Snapshot
from tidal.control.store import NodeRow
from tidal.errors import FailedPrecondition, InvalidArgument, NotFound
from tidal.spec import NodePoolSpec
from tidal.states import NodeState, ReplicaState as S


def notify(snap: Snapshot, node: NodeRow, pool: NodePoolSpec, why: str, notice_seconds: float | None,
           margin_seconds: float) -> list[Command]:
    """The node goes in `notice` seconds. With the spot remedy its replicas are replaced at once and keep serving
    until their replacements are ready or the notice is nearly over; without it they are replaced when it goes."""
    now = snap.now
    notice = pool.notice_seconds if notice_seconds is None else notice_seconds
    reps = snap.on(node.name, (S.PENDING, S.STARTING, S.READY))
    out: list[Command] = []
    if pool.spot_remedy:
        drain_at = now + max(0.0, notice - margin_seconds)
        for r in reps:
            if r.state == S.READY:
                out.append(NotifyReplica(r.id, drain_at))
            else:
                # Not serving yet: it cannot cover anything while its node goes, and counting it as
                # available would overstate the service. Its replacement starts elsewhere now.
                out.append(StopReplica(r.id, f"its node {node.name} is going away before it was ready", Event(
                    "ReplicaStopped", f"replica/{r.id}", f"its node {node.name} is going away before it was ready")))
        # Replicas already moving off it (a capacity drain, no deadline) now have the notice's deadline.
        for r in snap.on(node.name, (S.NOTIFIED,)):
            if r.drain_at is None or r.drain_at > drain_at:
                out.append(NotifyReplica(r.id, drain_at))
        fate = "replaced now (spot remedy)"
    else:
        fate = "replaced when it goes (no spot remedy)"
    out.insert(0, NotifyNode(node.name, pool.name, node.zone, now + notice, Event(
        "PreemptionNotice", f"node/{node.name}", f"{why}: reclaimed in {notice:.0f}s; {len(reps)} replica(s) on it {fate}")))
    return out


def choose_victims(snap: Snapshot, pool: NodePoolSpec, node: str | None, count: int) -> list[NodeRow]:
    """An injected preemption's nodes: the named one, or the busiest ready spot nodes first."""
    spot = [n for n in snap.pool_nodes(pool.name, (NodeState.READY,)) if n.billing == "spot"]
    if node is not None:
        chosen = [n for n in spot if n.name == node]
        if not chosen:
            raise NotFound(f"node pool {pool.name!r} has no ready spot node {node!r}")
        return chosen
    if count < 1:
        raise InvalidArgument("--count must be at least 1")
    if not spot:
        raise FailedPrecondition(f"node pool {pool.name!r} has no ready spot node to preempt")
    busy = {r.node for r in snap.in_state(S.STARTING, S.READY)}
    return sorted(spot, key=lambda n: (n.name not in busy, n.launched_at))[:count]


def reclaims(snap: Snapshot, capacity: dict[tuple[str, str], int | None], margin_seconds: float) -> list[Command]:
    """Zones whose spot trace now holds fewer nodes than the pool has there: the provider reclaims the emptiest,
    newest nodes first (what we lose least by). `capacity` is (pool, zone) -> what the zone holds now."""
    out: list[Command] = []
    for pool in snap.pools.values():
        if not pool.spot_trace:
            continue
        nodes = [n for n in snap.pool_nodes(pool.name, (NodeState.READY,)) if n.billing == "spot"]
        for zone in sorted({n.zone for n in nodes}):
            cap = capacity.get((pool.name, zone))
            held = [n for n in nodes if n.zone == zone]
            if cap is None or len(held) <= cap:
                continue
            victims = sorted(held, key=lambda n: (n.empty_since is None, -n.launched_at))[:len(held) - cap]
            for n in victims:
                out += notify(snap, n, pool, f"the spot trace drops {zone} to {cap} node(s)", None, margin_seconds)
    return out


def expire(snap: Snapshot) -> list[Command]:
    """Nodes whose notice ran out: their replicas stop, the node goes."""
    out: list[Command] = []
    for node in snap.nodes:
        if node.state == NodeState.NOTIFIED and node.reclaim_at is not None and snap.now >= node.reclaim_at:
            for r in snap.on(node.name):
                out.append(StopReplica(r.id, "its node was reclaimed",
                                       Event("ReplicaStopped", f"replica/{r.id}", "its node was reclaimed")))
            why = "spot instance reclaimed at the end of its notice"
            out.append(TerminateNode(node.name, why, _terminated(node, why, snap.now)))
    return out


def _terminated(node: NodeRow, why: str, now: float) -> Event:
    return Event("NodeTerminated", f"node/{node.name}",
                 f"{why} (lived {now - node.launched_at:.0f}s, {node.billing})")
