"""The gateway's configuration, declared once: replica endpoints, services, proxy limits, routes file."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ReplicaState = Literal["ready", "draining"]


class GatewayEngine(str, Enum):
    """What serves the gateway's port: the Python gateway alone, or the compiled edge in front of it."""

    PYTHON = "python"
    EDGE = "edge"  # `tidal-edge` answers the common case, the Python gateway the rest (see tidal.gateway.edge)
    AUTO = "auto"  # edge where this source tree's edge is built (`tidal.gateway.edge.auto_edge`), else python


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class ReplicaEndpoint(BaseModel):
    """One replica of a service, as the control plane knows it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=253)
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    # "draining": finish the requests in flight, take no new ones.
    state: ReplicaState = "ready"
    # The release it runs, when its service has several (a rollout): the split picks a release, then a replica.
    release: str = Field(default="", max_length=253)


class ReleaseSplit(BaseModel):
    """A service's releases during a rollout: each one's share of the requests, a mirror, what to count."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: dict[str, int] = Field(min_length=1)  # release -> percent (they sum to 100)
    # The release a canary's 5xx answer to a request that may run twice is sent to again, so a failing
    # canary costs its guard's verdict, not the client's answer.
    stable: str = ""
    mirror: str = ""                                # a release that gets a copy of `mirror_percent` of the requests
    mirror_percent: int = Field(default=0, ge=0, le=100)
    classes: bool = False                           # count each release's answer classes (a classifier's guard)

    @model_validator(mode="after")
    def _sum(self) -> "ReleaseSplit":
        if any(not 0 <= w <= 100 for w in self.weights.values()) or sum(self.weights.values()) != 100:
            raise ValueError(f"release weights must be percents that sum to 100, got {self.weights}")
        return self


class QueueSettings(BaseModel):
    """Requests for a service with no ready replica wait here (a service scaled to zero) instead of a 503."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(default=100, ge=1, le=100000)            # more waiting: 503 with Retry-After
    wait_seconds: float = Field(default=30.0, gt=0, le=3600)  # longer: 503 with the reason


class ServiceConfig(BaseModel):
    """A service behind the gateway: its replicas and the names it is reached by."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME, max_length=253)
    replicas: tuple[ReplicaEndpoint, ...] = ()
    hosts: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    # None: the gateway's default deadline.
    deadline_seconds: float | None = Field(default=None, gt=0)
    # None: a request finding no ready replica gets 503 at once.
    queue: QueueSettings | None = None
    # Why no replica is ready (the last start failure): said to requests that waited in vain.
    unready_reason: str | None = Field(default=None, max_length=2000)
    # None: one release; every ready replica shares the requests.
    releases: ReleaseSplit | None = None


class GatewaySettings(BaseModel):
    """How the gateway proxies; the same for every service unless a service overrides it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    domain: str = "localhost"
    path_prefix: str = Field(default="/services/", pattern=r"^/.*/$")
    deadline_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)
    # After a connection failure a replica is skipped for this long (while others are ready),
    # doubling with each further failure in a row, up to 32 times.
    eject_seconds: float = Field(default=2.0, ge=0)
    connect_timeout_seconds: float = Field(default=1.0, gt=0)
    max_idle_connections_per_replica: int = Field(default=256, ge=1)
    bucket_seconds: float = Field(default=1.0, gt=0)
    max_window_seconds: float = Field(default=300.0, gt=0)
    drain_timeout_seconds: float = Field(default=30.0, ge=0)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1)


class RoutesFile(BaseModel):
    """The file `tidal gateway --routes` reads (YAML or JSON)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8501, ge=0, le=65535)
    settings: GatewaySettings = GatewaySettings()
    services: list[ServiceConfig] = []
