"""The HorizontalPodAutoscaler spec as Tidal holds it (autoscaling/v2 shape, defaults applied), and `parse_hpa`.

One model per concept, field names as in autoscaling/v2 (camelCase aliases), so a
v2 or v2beta2 document validates directly and a v2beta1 or v1 document is first
rewritten into the v2 shape. Defaults are those of
kubernetes pkg/apis/autoscaling/v2/defaults.go plus the controller's flags
(tolerance 0.1, sync period 15 s, downscale stabilization 5 min).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from tidal.autoscaling.quantity import Quantity
from tidal.autoscaling.schedule import CronWindow, parse_schedule
from tidal.errors import InvalidArgument


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
# Documents: autoscaling/v1, v2beta1, v2beta2, v2

HPA_API_VERSIONS = ("autoscaling/v1", "autoscaling/v2beta1", "autoscaling/v2beta2", "autoscaling/v2")
BURST_ANNOTATION = "autoscaling.tidal.dev/burst"


def _v2beta1_metric(m: dict, where: str) -> dict:
    """Rewrite one autoscaling/v2beta1 MetricSpec into the v2 shape (the conversion in pkg/apis/autoscaling)."""
    if not isinstance(m, dict):
        raise InvalidArgument(f"{where}: a metric must be a mapping")
    kind = m.get("type")
    body = m.get({"External": "external", "Pods": "pods", "Resource": "resource", "Object": "object"}.get(kind, ""), None)
    if kind not in ("External", "Pods", "Resource", "Object"):
        raise InvalidArgument(f"{where}.type: unsupported metric type {kind!r} "
                              f"(supported: External, Pods, Resource, Object)")
    if not isinstance(body, dict):
        raise InvalidArgument(f"{where}.{kind.lower()}: required for a metric of type {kind}")
    body = dict(body)

    def target(value_key: str | None, average_key: str | None, utilization_key: str | None = None) -> dict:
        found = {}
        if value_key and value_key in body:
            found = {"type": "Value", "value": body.pop(value_key)}
        if average_key and average_key in body:
            if found:
                raise InvalidArgument(f"{where}: set only one of {value_key} and {average_key}")
            found = {"type": "AverageValue", "averageValue": body.pop(average_key)}
        if utilization_key and utilization_key in body:
            if found:
                raise InvalidArgument(f"{where}: set only one of {average_key} and {utilization_key}")
            found = {"type": "Utilization", "averageUtilization": body.pop(utilization_key)}
        if not found:
            keys = " or ".join(k for k in (value_key, average_key, utilization_key) if k)
            raise InvalidArgument(f"{where}.{kind.lower()}: must set {keys}")
        return found

    if kind == "External":
        t = target("targetValue", "targetAverageValue")
        metric = {"name": body.pop("metricName", None)}
        if "metricSelector" in body:
            metric["selector"] = body.pop("metricSelector")
        out = {"metric": metric, "target": t}
    elif kind == "Pods":
        t = target(None, "targetAverageValue")
        metric = {"name": body.pop("metricName", None)}
        if "selector" in body:
            metric["selector"] = body.pop("selector")
        out = {"metric": metric, "target": t}
    elif kind == "Resource":
        t = target(None, "targetAverageValue", "targetAverageUtilization")
        out = {"name": body.pop("name", None), "target": t}
    else:
        t = target("targetValue", "averageValue")
        metric = {"name": body.pop("metricName", None)}
        if "selector" in body:
            metric["selector"] = body.pop("selector")
        out = {"describedObject": body.pop("target", None), "metric": metric, "target": t}
    if body:
        raise InvalidArgument(f"{where}.{kind.lower()}: unknown field(s) {sorted(body)} for autoscaling/v2beta1")
    return {"type": kind, kind.lower(): out}


def _format_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"spec.{loc}: {msg}" if loc else f"spec: {msg}")
    return "invalid HorizontalPodAutoscaler: " + "; ".join(lines)


def parse_hpa(document: Any, *, burst: BurstSettings | None = None,
              controller: ControllerSettings | None = None) -> HPASpec:
    """A HorizontalPodAutoscaler document (autoscaling/v1, v2beta1, v2beta2 or v2) as Tidal's `HPASpec`.

    Raises `InvalidArgument` with the field path for anything Kubernetes would refuse.
    Burst mode comes from `burst`, or from the annotation `autoscaling.tidal.dev/burst: "true"`.
    """
    if not isinstance(document, dict):
        raise InvalidArgument("an HPA document must be a mapping with apiVersion, kind, metadata and spec")
    api_version = document.get("apiVersion")
    if api_version not in HPA_API_VERSIONS:
        raise InvalidArgument(f"apiVersion: unsupported {api_version!r}, expected one of {', '.join(HPA_API_VERSIONS)}")
    if document.get("kind") != "HorizontalPodAutoscaler":
        raise InvalidArgument(f"kind: expected HorizontalPodAutoscaler, got {document.get('kind')!r}")
    extra = sorted(set(document) - {"apiVersion", "kind", "metadata", "spec", "status"})
    if extra:
        raise InvalidArgument(f"unknown top-level field(s) {extra}")
    metadata = document.get("metadata") or {}
    spec = document.get("spec")
    if not isinstance(metadata, dict):
        raise InvalidArgument("metadata: must be a mapping")
    if not isinstance(spec, dict):
        raise InvalidArgument("spec: required, and must be a mapping")
    spec = dict(spec)

    if api_version == "autoscaling/v1":
        target_cpu = spec.pop("targetCPUUtilizationPercentage", None)
        if target_cpu is not None:
            spec["metrics"] = [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target_cpu}}}]
    elif api_version == "autoscaling/v2beta1":
        if "behavior" in spec:
            raise InvalidArgument("spec.behavior: not part of autoscaling/v2beta1; use autoscaling/v2")
        metrics = spec.get("metrics") or []
        if not isinstance(metrics, list):
            raise InvalidArgument("spec.metrics: must be a list")
        spec["metrics"] = [_v2beta1_metric(m, f"spec.metrics.{i}") for i, m in enumerate(metrics)]

    annotations = metadata.get("annotations") or {}
    if burst is None:
        flag = str(annotations.get(BURST_ANNOTATION, "")).strip().lower()
        if flag not in ("", "true", "false", "enabled", "disabled"):
            raise InvalidArgument(f"metadata.annotations.{BURST_ANNOTATION}: expected true or false, got {flag!r}")
        burst = BurstSettings(enabled=flag in ("true", "enabled"))
    zero: dict[str, str] = {}
    for key, annotation in ZERO_ANNOTATIONS.items():
        if annotation in annotations:
            zero[key] = str(annotations[annotation]).strip()
    try:
        zero_settings = ZeroSettings.model_validate(zero)
    except ValidationError as e:
        first = e.errors()[0]
        raise InvalidArgument(f"metadata.annotations.{ZERO_ANNOTATIONS[str(first['loc'][0])]}: "
                              f"{first['msg']} (got {zero[str(first['loc'][0])]!r})") from None
    schedule = parse_schedule(str(annotations.get(SCHEDULE_ANNOTATION) or ""))
    flag = str(annotations.get(PREDICTIVE_ANNOTATION, "")).strip().lower()
    if flag not in ("", "true", "false"):
        raise InvalidArgument(f"metadata.annotations.{PREDICTIVE_ANNOTATION}: expected true or false, got {flag!r}")
    for ours in ("name", "namespace", "controller", "burst", "zero", "schedule", "predictive"):
        if ours in spec:
            raise InvalidArgument(f"spec.{ours}: unknown field")
    spec["name"] = str(metadata.get("name", ""))
    spec["namespace"] = str(metadata.get("namespace") or "default")
    spec["burst"] = burst
    spec["zero"] = zero_settings
    spec["schedule"] = schedule
    spec["predictive"] = PredictiveSettings(enabled=flag == "true")
    spec["controller"] = controller or ControllerSettings()
    try:
        return HPASpec.model_validate(spec)
    except ValidationError as e:
        raise InvalidArgument(_format_validation_error(e)) from None


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
