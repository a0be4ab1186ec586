"""Replica and node states, and the named groups of them every part of Tidal uses (store, reconciler, console, CLI)."""

from __future__ import annotations

from enum import StrEnum


class ReplicaState(StrEnum):
    """pending (no node) -> starting (launched) -> ready -> draining -> stopped | failed; notified: its node is
    going away, it serves until its replacement is ready, then drains. Values are the store's and the API's words."""
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    NOTIFIED = "notified"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


class NodeState(StrEnum):
    READY = "ready"
    NOTIFIED = "notified"   # a reclaim notice: it goes at its reclaim_at
    TERMINATED = "terminated"


# Groups (a frozenset each, so `state in GROUP` reads as what it means).
# LIVE: counts toward the service's desired replicas.
REPLICA_LIVE = frozenset({ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.READY})
# ACTIVE: not finished (what `serve get` lists, what holds a node).
REPLICA_ACTIVE = REPLICA_LIVE | {ReplicaState.NOTIFIED, ReplicaState.DRAINING}
# RUNNING: a process (or pod) exists for it.
REPLICA_RUNNING = REPLICA_ACTIVE - {ReplicaState.PENDING}
# SERVING: answers requests (the gateway routes to it; `available` counts it).
REPLICA_SERVING = frozenset({ReplicaState.READY, ReplicaState.NOTIFIED})
# SETTLING: on the way in or out (the loop looks again sooner).
REPLICA_SETTLING = frozenset({ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.DRAINING,
                              ReplicaState.NOTIFIED})
REPLICA_DONE = frozenset({ReplicaState.STOPPED, ReplicaState.FAILED})

NODE_LIVE = frozenset({NodeState.READY, NodeState.NOTIFIED})

# The same groups as the enums' attributes: ReplicaState.LIVE, NodeState.LIVE, ...
for _name, _group in (("LIVE", REPLICA_LIVE), ("ACTIVE", REPLICA_ACTIVE), ("RUNNING", REPLICA_RUNNING),
                      ("SERVING", REPLICA_SERVING), ("SETTLING", REPLICA_SETTLING), ("DONE", REPLICA_DONE)):
    setattr(ReplicaState, _name, _group)
NodeState.LIVE = NODE_LIVE
