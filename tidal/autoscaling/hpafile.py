"""Reading a HorizontalPodAutoscaler document (autoscaling/v1, v2beta1, v2beta2 or v2) into Tidal's `HPASpec`.

A v2 or v2beta2 document validates directly; v2beta1 metrics and v1's CPU target are first
rewritten into the v2 shape, as the API server's conversions do. Tidal's own settings come
from annotations (`autoscaling.tidal.dev/...`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tidal.autoscaling.schedule import parse_schedule
from tidal.autoscaling.spec import (PREDICTIVE_ANNOTATION, SCHEDULE_ANNOTATION, ZERO_ANNOTATIONS, BurstSettings,
                                    ControllerSettings, HPASpec, PredictiveSettings, ZeroSettings)
from tidal.errors import InvalidArgument


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
