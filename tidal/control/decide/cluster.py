"""A cluster's Nodes (pure): replicas follow their pods' Nodes, interruption signals become notices, Nodes that left
end their claims, and pods that stay unschedulable count as a refused launch (of their node's billing and zone).

Under a Kubernetes backend the pool's nodes are Nodes of the cluster (or provisional ones the cluster's provisioner
has yet to make); the backend observes them with a watch and hands this step a `ClusterView`. A Node that carries
an interruption signal is handled like a spot reclaim notice locally (`notices.notify`): its replicas are replaced
elsewhere at once and keep serving until their replacements are ready, then drain from the gateway before the
node goes. A replica whose pod runs on a signalled Node, whatever node Tidal placed it on, is replaced the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from tidal.control.commands import (Command, Event, FailReplica, MoveReplica, Note, NotifyReplica, RefuseLaunch,
                                    StopReplica, TerminateNode)
from tidal.control.decide.notices import notify
from tidal.control.snapshot import Snapshot
from tidal.control.store import NodeRow
from tidal.states import NodeState, ReplicaState as S


@dataclass(frozen=True)
class ClusterView:
    present: frozenset[str]                                     # the cluster's Nodes now
    deleted: frozenset[str] = frozenset()                       # Nodes the watch saw deleted
    signals: Mapping[str, str] = field(default_factory=dict)    # Node -> why it is going
    provisional: frozenset[str] = frozenset()                   # pool nodes no Node stands for yet
    pod_nodes: Mapping[str, str] = field(default_factory=dict)  # replica -> the Node its pod runs on
    unschedulable: Mapping[str, str] = field(default_factory=dict)  # replica -> the scheduler's message


@dataclass(frozen=True)
class ClusterMemory:
    unschedulable_since: Mapping[str, float] = field(default_factory=dict)


def decide(snap: Snapshot, view: ClusterView, memory: ClusterMemory, unschedulable_seconds: float,
           margin_seconds: float) -> tuple[list[Command], ClusterMemory]:
    now = snap.now
    out: list[Command] = []
    handled: set[str] = set()  # replicas a command here already covers
    for node in snap.nodes:
        pool = snap.pools.get(node.pool)
        if pool is None or node.name in view.provisional or node.state == NodeState.TERMINATED:
            continue
        if node.name not in view.present:
            why = "its Node left the cluster"
            for r in snap.on(node.name):
                handled.add(r.id)
                out.append(StopReplica(r.id, why, Event("ReplicaStopped", f"replica/{r.id}", why)))
            out.append(TerminateNode(node.name, "the Node left the cluster", Event(
                "NodeTerminated", f"node/{node.name}",
                f"the Node left the cluster (lived {now - node.launched_at:.0f}s, {node.billing})"), force=True))
        elif node.name in view.signals and node.state == NodeState.READY:
            cmds = notify(snap, node, pool, view.signals[node.name], None, margin_seconds)
            handled.update(r.id for r in snap.on(node.name))
            out += cmds
    # Pods on a signalled or vanished Node that Tidal placed elsewhere (a slice's pods land on any Node of its
    # billing and zone).
    for r in snap.in_state(S.STARTING, S.READY):
        where = view.pod_nodes.get(r.id)
        # A Node the pod names but the watch has not shown yet is new, not gone: only one seen deleted is gone.
        if r.id in handled or where is None or where not in (view.signals.keys() | view.deleted):
            continue
        pool = snap.pools.get(snap.node(r.node).pool) if snap.node(r.node) else None
        notice = pool.notice_seconds if pool is not None else 0.0
        going = where in view.signals
        why = f"its pod's Node {where} " + (f"is going: {view.signals[where]}" if going else "left the cluster")
        if going and r.state == S.READY and pool is not None and pool.spot_remedy:
            out.append(Note(Event("PreemptionNotice", f"node/{where}",
                                  f"{view.signals[where]}: replica {r.id}'s pod on it replaced now (spot remedy)")))
            out.append(NotifyReplica(r.id, now + max(0.0, notice - margin_seconds)))
        else:
            out.append(StopReplica(r.id, why, Event("ReplicaStopped", f"replica/{r.id}", why)))
        handled.add(r.id)
    since: dict[str, float] = {}
    failing: set[str] = set()
    refused: dict[str, tuple[NodeRow, float]] = {}
    for r in snap.in_state(S.STARTING):
        node = snap.node(r.node)
        if r.id in handled or r.id not in view.unschedulable or node is None:
            continue
        start = memory.unschedulable_since.get(r.id, now)
        if now - start < unschedulable_seconds:
            since[r.id] = start
            continue
        why = (f"its pod found no {node.billing} Node in {node.zone or 'any zone'} for {now - start:.0f}s "
               f"({view.unschedulable[r.id]})")
        out.append(FailReplica(r.id, why, Event("ReplicaFailed", f"replica/{r.id}", f"{why}; replacing it"),
                               stop=True))
        failing.add(r.id)
        refused.setdefault(node.name, (node, now - start))
    for name, (node, waited) in refused.items():
        # One refusal per node, however many of its pods waited: the policy counts launches, not pods.
        out.append(RefuseLaunch(node.pool, (node.instance_type, node.zone, node.billing), Event(
            "NodeLaunchFailed", f"nodepool/{node.pool}",
            f"no {node.billing} capacity for {node.instance_type} in {node.zone}: the cluster made no Node for a pod "
            f"in {waited:.0f}s")))
        # The claim goes once nothing on it runs or starts: the policy then plans without it.
        if all(o.id in failing for o in snap.on(name) if o.state in (S.READY, S.STARTING)):
            out.append(TerminateNode(name, "its launch was refused", Event(
                "NodeTerminated", f"node/{name}", f"no {node.billing} capacity in {node.zone} (claim released)"),
                force=True))
    return out, ClusterMemory(since)


def move(snap: Snapshot, view: ClusterView) -> list[Command]:
    """Replicas whose pod the scheduler put on another node of the same pool, billing and zone (its slice) than
    the one Tidal placed it on: the store follows, so a notice on a node concerns the replicas really on it."""
    out: list[Command] = []
    ready = {n.name: n for n in snap.nodes if n.state == NodeState.READY}
    for r in snap.in_state(S.STARTING, S.READY):
        where, placed = view.pod_nodes.get(r.id), snap.node(r.node)
        there = ready.get(where) if where != r.node else None
        if there is not None and placed is not None and (there.pool, there.billing, there.zone) == \
                (placed.pool, placed.billing, placed.zone):
            out.append(MoveReplica(r.id, there.name))
    return out
