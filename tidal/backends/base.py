"""The engine-neutral interface between the control plane and what runs nodes and replicas (local processes, Kubernetes).

The control plane speaks of nodes, replicas, their readiness and their
endpoints. How a backend finds a replica again (a process id and start time, a
pod's uid) is its own business: it hands back an opaque, JSON-serialisable
`ref` that the store keeps as it is and gives back. Node provisioning is a
separate, optional part (`provisioner`): a backend whose cluster provisions
nodes itself has none, and the control plane's capacity step then has nothing
to launch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from tidal.errors import CapacityUnavailable

ReplicaRef = dict[str, Any]  # opaque to the control plane; JSON-serialisable


@dataclass(frozen=True)
class NodeLaunch:
    name: str
    pool: str
    zone: str
    instance_type: str
    billing: str
    gpus: int


@dataclass(frozen=True)
class ReplicaLaunch:
    """Everything a backend needs to start one replica of a service on a node."""
    replica: str
    service: str
    node: str
    model_name: str
    model_base_path: str            # a URL or path the model server can read (a volume resolved)
    version_policy: str             # arena's text: latest, latest:N, specific:N, all
    gpus: int
    env: dict[str, str] = field(default_factory=dict)   # may carry credentials: never logged
    model_config_file: str = ""     # a user's own TF Serving model config, instead of name/path
    release: str = ""               # the release it runs (NAME-VERSION): during a rollout a service has two


@dataclass(frozen=True)
class StartedReplica:
    ref: ReplicaRef
    endpoint: str  # "host:port" of its REST API (the one the gateway uses)


class ReplicaPhase(StrEnum):
    STARTING = "starting"   # running, not ready yet
    READY = "ready"         # answers its readiness probe
    FAILED = "failed"       # running but cannot serve (its model cannot load): `reason` says why
    EXITED = "exited"       # gone (or no longer the replica it was): `reason` says what is known


@dataclass(frozen=True)
class ReplicaStatus:
    phase: ReplicaPhase
    reason: str = ""
    endpoint: str | None = None  # where it answers now, when the backend can move it (None: as started)
    runtime: str = ""            # the engine that serves its model once ready (onnxruntime, tensorflow); "" unknown


@dataclass(frozen=True)
class Adoption:
    """After a control-plane restart: which recorded replicas still run, and what strays the backend removed."""
    running: frozenset[str]
    removed: tuple[tuple[str, str], ...] = ()  # (replica id, what was removed and why), e.g. a stray process


class NodeProvisioner(Protocol):
    """Launches and terminates nodes (absent where the cluster's own provisioner does it)."""

    def launch_node(self, node: NodeLaunch, spot_held_in_zone: int, now: float) -> str | None:
        """Create a node, or raise CapacityUnavailable. Returns the node's name when the provisioner names it
        (a cluster node it claims), None to keep `node.name`."""

    def terminate_node(self, name: str) -> None: ...

    def adopt_node(self, node: NodeLaunch) -> None:
        """Know a node the store already holds (after a restart)."""

    def spot_capacity(self, pool: str, zone: str, now: float) -> int | None:
        """How many spot nodes the zone can hold now (None: no limit known)."""


class Backend(Protocol):
    provisioner: NodeProvisioner | None

    def start_replica(self, launch: ReplicaLaunch) -> StartedReplica: ...

    def stop_replica(self, replica: str, ref: ReplicaRef | None, grace_seconds: float) -> None:
        """Ask the replica to drain and exit; force it after `grace_seconds`. Returns at once."""

    async def observe_replicas(self, refs: dict[str, ReplicaRef],
                               known_ready: frozenset[str] = frozenset()) -> dict[str, ReplicaStatus]:
        """Each replica's phase. `known_ready` were ready at the last look: a backend may only check they run."""

    def adopt(self, refs: dict[str, ReplicaRef]) -> Adoption:
        """After a restart: which of these still run; replicas of this installation not among them are removed."""

    def logs(self, replica: str, tail: int = 100) -> str:
        """The last `tail` lines the replica wrote ('' when there are none)."""

    def close(self) -> None: ...
