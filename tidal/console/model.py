"""The JSON the console reads (docs/CONTRACTS.md, "Console"), as pydantic models the control plane fills in."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field, NonNegativeFloat, NonNegativeInt, model_validator

Billing = Literal["spot", "on-demand"]


class Latency(BaseModel):
    p50: Optional[NonNegativeFloat] = None
    p99: Optional[NonNegativeFloat] = None


class ReplicaCounts(BaseModel):
    desired: NonNegativeInt
    ready: NonNegativeInt


class ServiceSummary(BaseModel):
    """One row of the service list."""

    name: str
    model: str
    version: str
    runtime: str
    endpoint: Optional[str] = None
    replicas: ReplicaCounts
    qps: NonNegativeFloat = 0.0
    latency_ms: Latency = Latency()
    cost_per_hour: NonNegativeFloat = 0.0
    # What the same replicas would cost on on-demand capacity only; savings derive from it.
    on_demand_cost_per_hour: NonNegativeFloat = 0.0
    scaled_to_zero: bool = False  # at zero replicas after its idle period (autoscaled with --min 0)
    queued: int = 0               # requests the gateway holds while a replica starts

    @property
    def savings(self) -> float:
        od = self.on_demand_cost_per_hour
        return 0.0 if od <= 0 else max(0.0, 1.0 - self.cost_per_hour / od)


class Replica(BaseModel):
    name: str
    node: Optional[str] = None
    instance_type: Optional[str] = None
    zone: Optional[str] = None
    billing: Optional[Billing] = None
    state: str
    started_at: Optional[float] = None  # epoch seconds; the console shows the age


class Series(BaseModel):
    """Samples over time in columns sharing `t` (epoch seconds); a missing value is null."""

    t: list[float] = []
    qps: list[Optional[float]] = []
    p50_ms: list[Optional[float]] = []
    p99_ms: list[Optional[float]] = []
    replicas_spot: list[Optional[float]] = []
    replicas_on_demand: list[Optional[float]] = []
    cost_per_hour: list[Optional[float]] = []

    @model_validator(mode="after")
    def _aligned(self) -> "Series":
        n = len(self.t)
        for name in ("qps", "p50_ms", "p99_ms", "replicas_spot", "replicas_on_demand", "cost_per_hour"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"series column {name!r} has {len(getattr(self, name))} values for {n} times")
        return self

    def since(self, start: float) -> "Series":
        i = next((k for k, t in enumerate(self.t) if t >= start), len(self.t))
        return Series(**{k: v[i:] for k, v in self.__dict__.items()})


class Decision(BaseModel):
    """One autoscaler recommendation, with the Kubernetes condition reason it gave."""

    time: float
    current_replicas: NonNegativeInt
    desired_replicas: NonNegativeInt
    reason: str
    message: str = ""


class Event(BaseModel):
    """A scaling, placement or preemption event (`tidal events -o json` shape)."""

    time: float
    kind: str
    object: str
    message: str


class ReleaseCounts(BaseModel):
    """What the gateway counted of a release since the rollout's current step began (its guards' inputs)."""

    requests: NonNegativeInt = 0
    errors: NonNegativeInt = 0
    p90_ms: Optional[NonNegativeFloat] = None
    classes: dict[str, int] = {}


class Release(BaseModel):
    name: str
    version: str
    model_path: str = ""
    weight: int = Field(ge=0, le=100)
    replicas: NonNegativeInt = 0
    ready: NonNegativeInt = 0
    wanted: Optional[NonNegativeInt] = None  # the replicas the release is sized to, on its share of the traffic
    counts: Optional[ReleaseCounts] = None


class Rollout(BaseModel):
    """A service's rollout (its last one): releases with their weights, the guards, where it is."""

    phase: Literal["progressing", "manual", "promoted", "rolled-back"]
    progress: str
    steps: list[int] = []
    step: int = 0
    bake_seconds: float = 0.0
    guards: dict[str, Optional[float]] = {}
    reason: str = ""
    started_at: float
    finished_at: Optional[float] = None
    releases: list[Release] = []


class ServiceDetail(BaseModel):
    service: ServiceSummary
    replicas: list[Replica] = []
    series: Series = Series()
    decisions: list[Decision] = []
    events: list[Event] = []
    rollout: Optional[Rollout] = None


class Usage(BaseModel):
    used: NonNegativeFloat
    total: NonNegativeFloat


class Node(BaseModel):
    name: str
    zone: str
    instance_type: str
    billing: Billing
    state: str
    price_per_hour: NonNegativeFloat = 0.0
    cpu: Optional[Usage] = None
    memory_mb: Optional[Usage] = None
    replicas: list[str] = []


class NodePool(BaseModel):
    name: str
    labels: dict[str, str] = {}
    # The pool's capacity policy as shown to people: knob -> value (e.g. on_demand_percentage: 30).
    policy: dict[str, object] = {}
    nodes: list[Node] = []


class Overview(BaseModel):
    services: list[ServiceSummary] = []


class NodePools(BaseModel):
    pools: list[NodePool] = Field(default_factory=list)
