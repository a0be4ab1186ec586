"""The typed commands decisions return and the executor carries out; each carries the event it should record.

An event's `obj` and `message` may hold `{name}`: what the executor learns only
by acting (the name of a node it launches) fills it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tidal.backends.base import ReplicaRef
from tidal.capacity.executor import PoolCommands
from tidal.control.records import AutoscalerMemory, AutoscalerStatus


@dataclass(frozen=True)
class Event:
    kind: str
    obj: str
    message: str


@dataclass(frozen=True)
class Command:
    pass


# -- replicas
@dataclass(frozen=True)
class CreateReplica(Command):
    """A new pending replica (the executor takes its id from the store's counter)."""
    service: str
    workload: str
    release: str


@dataclass(frozen=True)
class StartReplica(Command):
    """Bind a pending replica to a node and start it there."""
    replica: str
    service: str
    node: str
    event: Event  # message holds {endpoint}


@dataclass(frozen=True)
class MarkReady(Command):
    replica: str
    event: Event
    runtime: str = ""  # the engine the replica reported serving its model with


@dataclass(frozen=True)
class FailReplica(Command):
    replica: str
    reason: str
    event: Event
    stop: bool = False  # still running (a model that cannot load, a start that timed out): stop it


@dataclass(frozen=True)
class SetEndpoint(Command):
    """The backend reports the replica answering elsewhere now (a rescheduled pod)."""
    replica: str
    endpoint: str


@dataclass(frozen=True)
class MoveReplica(Command):
    """The backend reports the replica running on another of the pool's nodes (a pod the cluster's scheduler
    placed on a Node of the same slice): the store follows."""
    replica: str
    node: str


@dataclass(frozen=True)
class NotifyReplica(Command):
    """Its node is going: it serves until its replacement is ready or `drain_at` (None: no deadline)."""
    replica: str
    drain_at: Optional[float]


@dataclass(frozen=True)
class DrainReplica(Command):
    """No new requests; it stops at `drain_at`. `reason` is kept as the replica's reason when given."""
    replica: str
    drain_at: float
    event: Event
    reason: Optional[str] = None


@dataclass(frozen=True)
class DiscardReplica(Command):
    """A replica with nothing running (pending): stopped at once, without an event."""
    replica: str
    reason: str


@dataclass(frozen=True)
class StopReplica(Command):
    """Stop its process (or pod) and mark it stopped."""
    replica: str
    reason: str
    event: Event


@dataclass(frozen=True)
class ReplicaExited(Command):
    """A draining replica whose process has gone by itself."""
    replica: str
    event: Event


# -- nodes
@dataclass(frozen=True)
class LaunchNode(Command):
    pool: str
    zone: str
    instance_type: str
    capacity_type: str
    gpus: int
    event: Event  # obj and message hold {name}


@dataclass(frozen=True)
class TerminateNode(Command):
    node: str
    reason: str
    event: Event
    force: bool = False  # `tidal down`: even with replicas on it


@dataclass(frozen=True)
class DrainNode(Command):
    """Cordon a node; its replicas are replaced elsewhere first, then drain (no deadline: never uncovered)."""
    node: str
    replicas: tuple[str, ...]
    event: Optional[Event]


@dataclass(frozen=True)
class CarryOutPool(Command):
    """A pool's capacity commands, carried out by the executor every capacity Plan goes through
    (`tidal.capacity.executor.carry_out`, which the simulator runs too): terminations and drains, then launches
    while `planned.launch_budget` lasts. `actions[i]` are the control-plane commands for `planned.commands[i]`
    (with their events); a refused launch spends no budget and comes back as `LaunchRefused`."""
    pool: str
    planned: PoolCommands
    actions: tuple[tuple[Command, ...], ...]

    def flat(self) -> list[Command]:
        return [a for group in self.actions for a in group]


@dataclass(frozen=True)
class RefuseLaunch(Command):
    """A launch accepted earlier that the provider turned out not to honour (a cluster that made no Node for its
    pods): the pool's policy learns it as a refused launch."""
    pool: str
    offering: tuple[str, str, str]  # (instance type, zone, capacity type)
    event: Event


@dataclass(frozen=True)
class Uncordon(Command):
    node: str


@dataclass(frozen=True)
class NotifyNode(Command):
    """A reclaim notice: the node goes at `reclaim_at`."""
    node: str
    pool: str
    zone: str
    reclaim_at: float
    event: Event


@dataclass(frozen=True)
class MarkEmpty(Command):
    node: str
    since: Optional[float]  # None: busy again


# -- services and autoscalers
@dataclass(frozen=True)
class SetDesired(Command):
    service: str
    desired: int
    event: Event


@dataclass(frozen=True)
class SaveAutoscaler(Command):
    service: str
    status: Optional[AutoscalerStatus] = None
    memory: Optional[AutoscalerMemory] = None


@dataclass(frozen=True)
class SaveRollout(Command):
    """Write a service's rollout record (a tidal.control.releases.Rollout) and record what changed."""
    rollout: object
    event: Optional[Event] = None


@dataclass(frozen=True)
class PromoteRelease(Command):
    """The canary becomes the service's release: its spec is the service's now (its replicas stay; the old
    release's drain as the rolling update replaces them)."""
    service: str
    spec: object  # a tidal.spec.ServiceSpec


@dataclass(frozen=True)
class SavePolicyState(Command):
    pool: str
    text: str


# -- routing
@dataclass(frozen=True)
class Endpoint:
    id: str
    host: str
    port: int
    state: str  # "ready" | "draining" (the gateway's words)
    release: str = ""  # the release it runs, during a rollout (the gateway splits traffic by it)


@dataclass(frozen=True)
class Route(Command):
    """The gateway's view of a service; `models` are the model names it answers for (tried, and dropped
    for this pass when another service holds one)."""
    service: str
    endpoints: tuple[Endpoint, ...]
    models: tuple[str, ...] = ()
    queue: Optional[object] = None          # a tidal.gateway.config.QueueSettings: requests wait for a replica
    unready_reason: Optional[str] = None    # why no replica is ready (told to requests that waited in vain)
    releases: Optional[object] = None       # a tidal.gateway.config.ReleaseSplit: a rollout's weights and mirror


@dataclass(frozen=True)
class Unroute(Command):
    service: str


# -- only a record
@dataclass(frozen=True)
class Note(Command):
    event: Event


@dataclass(frozen=True)
class Warn(Command):
    """One line for the log (a dropped record), no event."""
    message: str


# -- what the executor learned (fed back to the decisions' state)
@dataclass(frozen=True)
class LaunchRefused:
    pool: str
    offering: tuple[str, str, str]  # (instance type, zone, capacity type)
    at: float


@dataclass(frozen=True)
class Preempted:
    pool: str
    zone: str
    instance_type: str | None = None  # for a policy that spreads over (type, zone) pools


@dataclass(frozen=True)
class Routed:
    service: str
    models: tuple[str, ...]  # what the gateway took


@dataclass(frozen=True)
class Outcomes:
    refused: list[LaunchRefused] = field(default_factory=list)
    preempted: list[Preempted] = field(default_factory=list)
    routed: list[Routed] = field(default_factory=list)
    started: dict[str, ReplicaRef] = field(default_factory=dict)
