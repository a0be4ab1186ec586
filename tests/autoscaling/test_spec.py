"""The HPA spec: the reference procedure's hpa.yaml and its v2/v2beta2 forms, defaults, quantities, bad documents,
QPS names."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tidal.autoscaling.quantity import milli_of, parse_quantity
from tidal.autoscaling.spec import HPASpec, LabelSelector, MetricIdentifier, qps_service
from tidal.autoscaling.hpafile import parse_hpa
from tidal.errors import InvalidArgument

REFERENCE = Path(__file__).resolve().parents[2] / "examples" / "reference-procedure"
ROUTE = "default-bert-tfserving-202107141745-tensorflow-serving-8501"


def load(name: str) -> dict:
    return yaml.safe_load((REFERENCE / name).read_text())


def v2(spec: dict, api: str = "autoscaling/v2", **metadata) -> dict:
    return {"apiVersion": api, "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h", **metadata},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}, **spec}}


# -- the reference procedure --------------------------------------------------------------------

def test_seed_hpa_parses_unchanged():
    spec = parse_hpa(load("hpa.yaml"))
    assert spec.name == "bert-tfserving-hpa"
    assert spec.namespace == "default"
    assert (spec.scale_target_ref.api_version, spec.scale_target_ref.kind, spec.scale_target_ref.name) == (
        "apps/v1", "Deployment", "bert-tfserving-202107141745-tensorflow-serving")
    assert (spec.min_replicas, spec.max_replicas) == (1, 10)
    assert len(spec.metrics) == 1
    m = spec.metrics[0]
    assert m.type == "External"
    assert m.external.metric.name == "sls_ingress_qps"
    assert m.external.metric.selector.match_labels == {
        "sls.project": "k8s-log-c210fbedb96674b9eaf15f2dc47d169a8",
        "sls.logstore": "nginx-ingress",
        "sls.ingress.route": ROUTE,
    }
    assert m.external.target.type == "AverageValue"
    assert m.external.target.average_value == Decimal(10)
    # v2beta1 has no behavior: the legacy rules apply; burst mode is off by default.
    assert spec.behavior is None
    assert spec.burst.enabled is False
    assert spec.controller.tolerance == 0.1 and spec.controller.sync_period_seconds == 15


@pytest.mark.parametrize("other", ["hpa-v2.yaml", "hpa-v2beta2.yaml"])
def test_seed_equivalents_yield_the_same_spec(other):
    assert parse_hpa(load(other)) == parse_hpa(load("hpa.yaml"))


def test_v1_target_cpu_is_a_cpu_utilization_metric():
    doc = v2({"maxReplicas": 5, "targetCPUUtilizationPercentage": 60}, api="autoscaling/v1")
    expected = parse_hpa(v2({"maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]}))
    assert parse_hpa(doc) == expected


def test_v2beta1_pods_resource_object_convert_like_v2():
    beta1 = v2({"maxReplicas": 5, "metrics": [
        {"type": "Pods", "pods": {"metricName": "rps", "targetAverageValue": "500m"}},
        {"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "1Gi"}},
        {"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 70}},
        {"type": "Object", "object": {"target": {"kind": "Ingress", "name": "main"}, "metricName": "hits",
                                      "targetValue": "2k"}},
        {"type": "External", "external": {"metricName": "queue", "targetValue": 30}},
    ]}, api="autoscaling/v2beta1")
    v2doc = v2({"maxReplicas": 5, "metrics": [
        {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "500m"}}},
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}},
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
        {"type": "Object", "object": {"describedObject": {"kind": "Ingress", "name": "main"}, "metric": {"name": "hits"},
                                      "target": {"type": "Value", "value": "2k"}}},
        {"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "Value", "value": 30}}},
    ]})
    assert parse_hpa(beta1) == parse_hpa(v2doc)


# -- defaults (defaults.go) ---------------------------------------------------------------------

def test_behavior_defaults_fill_each_unset_field():
    spec = parse_hpa(v2({"maxReplicas": 5, "behavior": {"scaleDown": {"selectPolicy": "Min"}}}))
    up, down = spec.behavior.scale_up, spec.behavior.scale_down
    # scaleUp: window 0, Max, Pods 4 / 15 s and Percent 100 / 15 s
    assert up.stabilization_window_seconds == 0 and up.select_policy == "Max"
    assert [(p.type, p.value, p.period_seconds) for p in up.policies] == [("Pods", 4, 15), ("Percent", 100, 15)]
    # scaleDown: the user's Min kept; Percent 100 / 15 s; window from the controller flag, 300 s
    assert down.select_policy == "Min"
    assert [(p.type, p.value, p.period_seconds) for p in down.policies] == [("Percent", 100, 15)]
    assert down.stabilization_window_seconds is None and spec.scale_down_window() == 300


def test_no_metrics_defaults_to_cpu_80_percent_and_min_replicas_to_1():
    spec = parse_hpa(v2({"maxReplicas": 3}))
    assert spec.min_replicas == 1
    (m,) = spec.metrics
    assert (m.type, m.resource.name, m.resource.target.type, m.resource.target.average_utilization) == (
        "Resource", "cpu", "Utilization", 80)


def test_burst_annotation_turns_burst_mode_on():
    spec = parse_hpa(v2({"maxReplicas": 3}, annotations={"autoscaling.tidal.dev/burst": "true"}))
    assert spec.burst.enabled and spec.burst.panic_window_seconds == 6.0


# -- quantities ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("10", Decimal("10")),
    ("500m", Decimal("0.5")),
    ("1.5", Decimal("1.5")),
    ("2k", Decimal("2000")),
    ("1Ki", Decimal("1024")),
    ("1Gi", Decimal(2**30)),
    ("1e3", Decimal("1000")),
    ("250u", Decimal("0.00025")),
    (10, Decimal("10")),
    (0.1, Decimal("0.1")),
], ids=["int-string", "milli", "decimal", "kilo", "kibi", "gibi", "exponent", "micro", "yaml-int", "yaml-float"])
def test_quantities(text, expected):
    assert parse_quantity(text) == expected


def test_milli_values_round_up_like_resource_quantity():
    # 23.4 QPS is 23400m exactly; 0.0001 is a tenth of a milli and rounds up to 1m.
    assert milli_of(23.4) == 23400
    assert milli_of(0.0001) == 1
    assert milli_of(7) == 7000


# -- bad documents ------------------------------------------------------------------------------

@pytest.mark.parametrize("doc,message", [
    ({"apiVersion": "autoscaling/v3", "kind": "HorizontalPodAutoscaler", "spec": {}}, "unsupported 'autoscaling/v3'"),
    ({"apiVersion": "autoscaling/v2", "kind": "Deployment", "spec": {}}, "expected HorizontalPodAutoscaler"),
    (v2({"minReplicas": 5, "maxReplicas": 2}), "maxReplicas (2) must be greater than or equal to minReplicas (5)"),
    (v2({}), "spec.maxReplicas: Field required"),
    (v2({"maxReplicas": 3, "metrics": [{"type": "External", "external": {
        "metric": {"name": "q"}, "target": {"type": "AverageValue", "averageValue": "ten"}}}]}),
     "spec.metrics.0.external.target.averageValue: quantities must match"),
    (v2({"maxReplicas": 3, "metrics": [{"type": "External", "external": {
        "metric": {"name": "q"}, "target": {"type": "AverageValue", "averageValue": "-5"}}}]}),
     "averageValue must be positive"),
    (v2({"maxReplicas": 3, "metrics": [{"type": "External", "external": {
        "metric": {"name": "q"}, "target": {"type": "Value"}}}]}), "target type Value needs value"),
    (v2({"maxReplicas": 3, "metrics": [{"type": "Pods", "pods": {
        "metric": {"name": "q"}, "target": {"type": "Value", "value": 1}}}]}), "must be of type AverageValue"),
    (v2({"maxReplicas": 3, "metrics": [{"type": "External", "pods": {
        "metric": {"name": "q"}, "target": {"type": "AverageValue", "averageValue": 1}}}]}),
     "must set exactly the field 'external'"),
    (v2({"maxReplicas": 3, "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 4, "periodSeconds": 1801}]}}}),
     "spec.behavior.scaleUp.policies.0.periodSeconds"),
    (v2({"maxReplicas": 3, "behavior": {"scaleUp": {"policies": []}}}), "must specify at least one Policy"),
    (v2({"maxReplicas": 3, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 3601}}}),
     "stabilizationWindowSeconds"),
    (v2({"maxReplicas": 3, "behavior": {"scaleDown": {"selectPolicy": "Fastest"}}}), "selectPolicy"),
    (v2({"maxReplicas": 3, "maxReplica": 4}), "spec.maxReplica: Extra inputs are not permitted"),
    (v2({"minReplicas": 0, "maxReplicas": 3}), "minReplicas may be 0 only with at least one Object or External"),
    (v2({"maxReplicas": 3, "behavior": {"scaleUp": {}}}, api="autoscaling/v2beta1"), "not part of autoscaling/v2beta1"),
    (v2({"maxReplicas": 3, "metrics": [{"type": "External", "external": {"metricName": "q"}}]},
        api="autoscaling/v2beta1"), "must set targetValue or targetAverageValue"),
    (v2({"maxReplicas": 3, "metrics": [{"type": "ContainerResource", "containerResource": {}}]},
        api="autoscaling/v2beta1"), "unsupported metric type 'ContainerResource'"),
    ("just a string", "must be a mapping"),
], ids=["api-version", "kind", "max-below-min", "max-missing", "quantity-garbage", "quantity-negative",
        "value-target-without-value", "pods-value-target", "wrong-source-field", "period-too-long",
        "empty-policies", "window-too-long", "select-policy", "unknown-field", "min-zero-without-external",
        "behavior-in-v2beta1", "v2beta1-no-target", "v2beta1-container-resource", "not-a-mapping"])
def test_bad_documents_are_refused_with_the_field(doc, message):
    with pytest.raises(InvalidArgument) as e:
        parse_hpa(doc)
    assert message in str(e.value)


# -- metric names -------------------------------------------------------------------------------

@pytest.mark.parametrize("metric,expected", [
    (MetricIdentifier(name="sls_ingress_qps", selector=LabelSelector(match_labels={"sls.ingress.route": ROUTE})),
     "bert-tfserving-202107141745-tensorflow-serving"),
    (MetricIdentifier(name="tidal_service_qps"), "target-svc"),
    (MetricIdentifier(name="tidal_service_qps", selector=LabelSelector(match_labels={"tidal.dev/service": "bert"})),
     "bert"),
    (MetricIdentifier(name="sls_ingress_qps"), "target-svc"),
    (MetricIdentifier(name="queue_depth"), None),
], ids=["seed-route-label", "tidal-name", "tidal-service-label", "seed-name-no-selector", "not-qps"])
def test_qps_metric_names_resolve_to_a_service(metric, expected):
    assert qps_service(metric, "default", "target-svc") == expected


def test_seed_metric_resolves_to_its_route_service():
    spec: HPASpec = parse_hpa(load("hpa.yaml"))
    assert qps_service(spec.metrics[0].external.metric, spec.namespace, spec.scale_target_ref.name) == \
        "bert-tfserving-202107141745-tensorflow-serving"
