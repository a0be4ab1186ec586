"""The HorizontalPodAutoscaler spec as Tidal holds it (autoscaling/v2 shape, defaults applied).

One model per concept, field names as in autoscaling/v2 (camelCase aliases), so a
v2 or v2beta2 document validates directly and a v2beta1 or v1 document is first
rewritten into the v2 shape (`tidal.autoscaling.hpafile`). Defaults are those of
kubernetes pkg/apis/autoscaling/v2/defaults.go plus the controller's flags
(tolerance 0.1, sync period 15 s, downscale stabilization 5 min).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from tidal.autoscaling.quantity import Quantity
from tidal.autoscaling.schedule import CronWindow


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


# ---------------------------------------------------------------------------------------------
# Targets and metric sources


class CrossVersionObjectReference(_Model):
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)
    api_version: str = ""


class LabelSelectorRequirement(_Model):
    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


class LabelSelector(_Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        parts += [f"{r.key} {r.operator} ({','.join(r.values)})" for r in self.match_expressions]
        return ",".join(parts)


class MetricIdentifier(_Model):
    name: str = Field(min_length=1)
    selector: Optional[LabelSelector] = None

    def describe(self) -> str:
        return f"{self.name}({self.selector.describe()})" if self.selector else self.name


class MetricTarget(_Model):
    type: Literal["Utilization", "Value", "AverageValue"]
    value: Optional[Quantity] = None
    average_value: Optional[Quantity] = None
    average_utilization: Optional[Annotated[int, Field(gt=0, le=2**31 - 1)]] = None

    @model_validator(mode="after")
    def _consistent(self) -> "MetricTarget":
        # The field named by `type` must be set and positive (validation.go validateMetricTarget).
        field = {"Utilization": "average_utilization", "Value": "value", "AverageValue": "average_value"}[self.type]
        got = getattr(self, field)
        if got is None:
            raise ValueError(f"target type {self.type} needs {to_camel(field)}")
        if got <= 0:
            raise ValueError(f"{to_camel(field)} must be positive, got {got}")
        return self

    def describe(self) -> str:
        if self.type == "Utilization":
            return f"{self.average_utilization}% (average utilization)"
        if self.type == "Value":
            return f"{self.value} (value)"
        return f"{self.average_value} (average value)"


class ExternalMetricSource(_Model):
    metric: MetricIdentifier
    target: MetricTarget

    @model_validator(mode="after")
    def _no_utilization(self) -> "ExternalMetricSource":
        if self.target.type == "Utilization":
            raise ValueError("an External metric target must be of type Value or AverageValue")
        return self


class PodsMetricSource(_Model):
    metric: MetricIdentifier
    target: MetricTarget

    @model_validator(mode="after")
    def _average_only(self) -> "PodsMetricSource":
        if self.target.type != "AverageValue":
            raise ValueError("a Pods metric target must be of type AverageValue")
        return self


class ResourceMetricSource(_Model):
    name: str = Field(min_length=1)
    target: MetricTarget

    @model_validator(mode="after")
    def _no_value(self) -> "ResourceMetricSource":
        if self.target.type == "Value":
            raise ValueError("a Resource metric target must be of type Utilization or AverageValue")
        return self


class ObjectMetricSource(_Model):
    described_object: CrossVersionObjectReference
    metric: MetricIdentifier
    target: MetricTarget

    @model_validator(mode="after")
    def _no_utilization(self) -> "ObjectMetricSource":
        if self.target.type == "Utilization":
            raise ValueError("an Object metric target must be of type Value or AverageValue")
        return self


class MetricSpec(_Model):
    type: Literal["External", "Pods", "Resource", "Object"]
    external: Optional[ExternalMetricSource] = None
    pods: Optional[PodsMetricSource] = None
    resource: Optional[ResourceMetricSource] = None
    object: Optional[ObjectMetricSource] = None

    @model_validator(mode="after")
    def _one_source(self) -> "MetricSpec":
        named = self.type.lower()
        present = [k for k in ("external", "pods", "resource", "object") if getattr(self, k) is not None]
        if present != [named]:
            raise ValueError(f"metric of type {self.type} must set exactly the field {named!r}, got {present}")
        return self

    @property
    def source(self):
        return getattr(self, self.type.lower())

    def describe(self) -> str:
        """The metric's name as the HPA controller writes it in conditions and events."""
        if self.type == "External":
            return f"external metric {self.external.metric.describe()}"
        if self.type == "Pods":
            return f"pods metric {self.pods.metric.name}"
        if self.type == "Object":
            return f"{self.object.described_object.kind} metric {self.object.metric.name}"
        if self.resource.target.type == "Utilization":
            return f"{self.resource.name} resource utilization (percentage of request)"
        return f"{self.resource.name} resource"


# ---------------------------------------------------------------------------------------------
# Behavior


class HPAScalingPolicy(_Model):
    type: Literal["Pods", "Percent"]
    value: Annotated[int, Field(gt=0, le=2**31 - 1)]
    period_seconds: Annotated[int, Field(gt=0, le=1800)]


DEFAULT_SCALE_UP_POLICIES = (
    HPAScalingPolicy(type="Pods", value=4, period_seconds=15),
    HPAScalingPolicy(type="Percent", value=100, period_seconds=15),
)
DEFAULT_SCALE_DOWN_POLICIES = (HPAScalingPolicy(type="Percent", value=100, period_seconds=15),)


class HPAScalingRules(_Model):
    # None until defaults are applied; `HPABehavior` always fills it.
    stabilization_window_seconds: Optional[Annotated[int, Field(ge=0, le=3600)]] = None
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"
    policies: Optional[tuple[HPAScalingPolicy, ...]] = None
    # autoscaling/v2 (1.33+) per-direction tolerance; None means the controller's.
    tolerance: Optional[Annotated[float, Field(ge=0)]] = None

    @model_validator(mode="after")
    def _some_policy(self) -> "HPAScalingRules":
        if self.policies is not None and len(self.policies) == 0:
            raise ValueError("must specify at least one Policy")
        return self


class HPABehavior(_Model):
    scale_up: HPAScalingRules = Field(default_factory=HPAScalingRules)
    scale_down: HPAScalingRules = Field(default_factory=HPAScalingRules)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        # Fill what the user left out, field by field, as copyHPAScalingRules does.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, alias, window, policies in (
                ("scale_up", "scaleUp", 0, DEFAULT_SCALE_UP_POLICIES),
                ("scale_down", "scaleDown", None, DEFAULT_SCALE_DOWN_POLICIES)):
            raw = data.pop(alias, data.pop(key, None))
            rules = dict(raw.model_dump(exclude_none=True) if isinstance(raw, HPAScalingRules) else (raw or {}))
            if rules.get("stabilizationWindowSeconds", rules.get("stabilization_window_seconds")) is None \
                    and window is not None:
                rules["stabilizationWindowSeconds"] = window
            if rules.get("policies") is None:
                rules["policies"] = policies
            data[alias] = rules
        return data


class ControllerSettings(_Model):
    """The kube-controller-manager flags the HPA decision depends on."""

    sync_period_seconds: Annotated[float, Field(gt=0)] = 15.0
    tolerance: Annotated[float, Field(ge=0)] = 0.1
    downscale_stabilization_seconds: Annotated[int, Field(ge=0)] = 300
    cpu_initialization_period_seconds: Annotated[float, Field(ge=0)] = 300.0
    initial_readiness_delay_seconds: Annotated[float, Field(ge=0)] = 30.0


class BurstSettings(_Model):
    """Tidal's burst ("panic") mode, after Knative's KPA; off by default so an HPA means what it means on Kubernetes."""

    enabled: bool = False
    stable_window_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    panic_window_percentage: Annotated[float, Field(gt=0, le=100)] = 10.0
    panic_threshold_percentage: Annotated[float, Field(gt=100, le=1000)] = 200.0
    max_scale_up_rate: Annotated[float, Field(gt=1)] = 1000.0
    max_scale_down_rate: Annotated[float, Field(gt=1)] = 2.0
    tick_seconds: Annotated[float, Field(gt=0)] = 2.0

    @property
    def panic_window_seconds(self) -> float:
        return self.stable_window_seconds * self.panic_window_percentage / 100.0


class ZeroSettings(_Model):
    """Scale to zero (minReplicas 0), with Knative's semantics rather than the HPA's HPAScaleToZero: a service
    goes to zero only after `idle_seconds` with no request at the gateway, and back to one on the first
    request, which waits in the gateway's queue (at most `queue_size` requests for `queue_wait_seconds`)."""

    idle_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] = 300.0
    queue_size: Annotated[int, Field(ge=1, le=100000)] = 100
    queue_wait_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0


ZERO_ANNOTATIONS = {"idle_seconds": "autoscaling.tidal.dev/idle-seconds",
                    "queue_size": "autoscaling.tidal.dev/queue-size",
                    "queue_wait_seconds": "autoscaling.tidal.dev/queue-wait-seconds"}


class PredictiveSettings(_Model):
    """Scale ahead of the request rate forecast from the service's own history (daily and weekly seasonality),
    by the measured cold start. Only raises the floor; needs a QPS metric with an AverageValue target."""

    enabled: bool = False
    slot_seconds: Annotated[float, Field(ge=60, le=3600)] = 900.0


SCHEDULE_ANNOTATION = "autoscaling.tidal.dev/schedule"
PREDICTIVE_ANNOTATION = "autoscaling.tidal.dev/predictive"


class HPASpec(_Model):
    """One autoscaler: the v2 HorizontalPodAutoscaler spec with defaults, plus Tidal's settings."""

    name: str = ""
    namespace: str = "default"
    scale_target_ref: CrossVersionObjectReference
    min_replicas: Annotated[int, Field(ge=0, le=2**31 - 1)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=2**31 - 1)]
    metrics: tuple[MetricSpec, ...] = ()
    behavior: Optional[HPABehavior] = None
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    burst: BurstSettings = Field(default_factory=BurstSettings)
    zero: ZeroSettings = Field(default_factory=ZeroSettings)
    # Cron windows that raise the minimum (autoscaling.tidal.dev/schedule), and the forecast's floor.
    schedule: tuple[CronWindow, ...] = ()
    predictive: PredictiveSettings = Field(default_factory=PredictiveSettings)

    @model_validator(mode="before")
    @classmethod
    def _default_metrics(cls, data: Any) -> Any:
        # No metrics means CPU at 80% of requests (defaults.go).
        if isinstance(data, dict) and not data.get("metrics"):
            data = dict(data)
            data["metrics"] = [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
        return data

    @model_validator(mode="after")
    def _replicas(self) -> "HPASpec":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"maxReplicas ({self.max_replicas}) must be greater than or equal to "
                             f"minReplicas ({self.min_replicas})")
        if self.min_replicas == 0 and not any(m.type in ("External", "Object") for m in self.metrics):
            # Scale to zero needs a metric that exists without pods (HPAScaleToZero).
            raise ValueError("minReplicas may be 0 only with at least one Object or External metric")
        return self

    def scale_down_window(self) -> int:
        window = self.behavior.scale_down.stabilization_window_seconds if self.behavior else None
        return self.controller.downscale_stabilization_seconds if window is None else window


# ---------------------------------------------------------------------------------------------
# Metric names the gateway answers

# The reference procedure's metric (from the nginx ingress log in SLS) and Tidal's own name both mean
# "requests per second that the gateway routed to this service".
QPS_METRIC_NAMES = frozenset({"sls_ingress_qps", "tidal_service_qps"})
_ROUTE_LABEL = "sls.ingress.route"
_SERVICE_LABELS = ("tidal.dev/service", "service")


def qps_service(metric: MetricIdentifier, namespace: str, default_service: str) -> Optional[str]:
    """The service whose gateway QPS a metric names, or None when it is not a QPS metric.

    `sls_ingress_qps` names its route as `{namespace}-{service}-{port}`
    (`default-bert-tfserving-202107141745-tensorflow-serving-8501`); a `tidal.dev/service`
    or `service` label names the service directly; otherwise it is the HPA's own target.
    """
    if metric.name not in QPS_METRIC_NAMES:
        return None
    labels = metric.selector.match_labels if metric.selector else {}
    for key in _SERVICE_LABELS:
        if labels.get(key):
            return labels[key]
    route = labels.get(_ROUTE_LABEL)
    if route:
        prefix = f"{namespace}-"
        body = route[len(prefix):] if route.startswith(prefix) else route
        m = re.match(r"^(.+)-([0-9]+)$", body)
        return m.group(1) if m else body
    return default_service
