"""What the autoscaler observes at one sync: metric samples and the target's pods, as plain frozen values."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping, Optional, Sequence, Union

PodPhase = Literal["Running", "Pending", "Succeeded", "Failed", "Unknown"]


@dataclass(frozen=True)
class PodInfo:
    """One pod (replica) of the scale target, as the pod lister shows it.

    CPU metrics need `start_time` and the Ready condition: as in Kubernetes, a pod
    without them counts as not ready, and its CPU sample is set aside.
    """

    name: str
    phase: PodPhase = "Running"
    # The Ready condition: True/False, or None when the pod has no Ready condition yet.
    ready: Optional[bool] = True
    deleting: bool = False
    start_time: Optional[float] = None
    # When the Ready condition last changed; defaults to start_time.
    ready_transition_time: Optional[float] = None
    # Requests summed over the pod's containers, in base units (cpu: cores, memory: bytes).
    requests: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class PodMetric:
    """One pod's sample of a resource metric (cpu in cores, memory in bytes)."""

    value: float
    # When the sample was taken and over what window; the CPU readiness rules use them.
    timestamp: Optional[float] = None
    window_seconds: float = 0.0


ExternalValue = Union[float, Sequence[float]]


@dataclass(frozen=True)
class Metrics:
    """Everything one sync reads. A metric absent from its mapping is "unable to get" (an invalid metric).

    - `external`: metric name -> the value, or the values of every series the selector matched (summed).
      For the reference procedure's `sls_ingress_qps` / `tidal_service_qps` this is the gateway's windowed QPS.
    - `pods_metrics`: metric name -> pod name -> value (a `Pods` metric).
    - `resource`: resource name -> pod name -> sample (a `Resource` metric).
    - `objects`: metric name -> value (an `Object` metric).
    - `pods`: the target's pods (ready, pending, ...). External metrics ignore readiness except for
      `Value` targets, which multiply by the number of ready pods.
    - `status_replicas`: the target's observed replica count (scale.status.replicas); defaults to the
      current (desired) count.
    """

    external: Mapping[str, ExternalValue] = field(default_factory=lambda: MappingProxyType({}))
    pods_metrics: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    resource: Mapping[str, Mapping[str, Union[PodMetric, float]]] = field(
        default_factory=lambda: MappingProxyType({}))
    objects: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    pods: tuple[PodInfo, ...] = ()
    status_replicas: Optional[int] = None


def ready_pods(count: int, prefix: str = "replica") -> tuple[PodInfo, ...]:
    """`count` running, ready pods: what a target with no readiness detail to report looks like."""
    return tuple(PodInfo(name=f"{prefix}-{i}") for i in range(count))
