"""The narrow interface between the control plane and what runs nodes and replicas (local processes, Kubernetes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tidal.errors import CapacityUnavailable

__all__ = ["CapacityUnavailable", "NodeLaunch", "ReplicaLaunch", "ReplicaHandle", "Backend"]


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


@dataclass(frozen=True)
class ReplicaHandle:
    """How to find a started replica again, also after a control-plane restart."""
    pid: int
    proc_start: int
    port: int        # REST (the one the gateway uses)
    grpc_port: int


class Backend(Protocol):
    def launch_node(self, node: NodeLaunch, spot_held_in_zone: int, now: float) -> None:
        """Create a node, or raise CapacityUnavailable."""

    def terminate_node(self, name: str) -> None: ...

    def spot_capacity(self, pool: str, zone: str, now: float) -> int | None:
        """How many spot nodes the zone can hold now (None: no limit known)."""

    def start_replica(self, launch: ReplicaLaunch) -> ReplicaHandle: ...

    def stop_replica(self, replica: str, handle: ReplicaHandle | None, grace_seconds: float) -> None:
        """Ask the replica to drain and exit; force it after `grace_seconds`. Returns at once."""

    def replica_alive(self, replica: str, handle: ReplicaHandle) -> bool:
        """The process is running and is really this replica (pid reuse is not enough)."""

    async def replica_ready(self, handle: ReplicaHandle) -> bool: ...

    def orphans(self, known: dict[str, int]) -> list[tuple[str, int]]:
        """Replica processes of this installation other than the pid the store records for each: (id, pid)."""

    def adopt_node(self, node: NodeLaunch) -> None:
        """Know a node the store already holds (after a restart)."""

    def kill(self, pid: int) -> None: ...

    def log_path(self, replica: str) -> str: ...

    def close(self) -> None: ...
