"""Rendering a ServiceSpec as arena-shaped Kubernetes objects: names, labels, commands, probes, resources, volumes."""

from __future__ import annotations

import pytest
import yaml

from tidal.autoscaling.hpafile import parse_hpa
from tidal.backends.kubernetes import render
from tidal.backends.kubernetes.render import NodeLabels, Placement, RenderOptions
from tidal.spec import ServiceSpec

BASE = {"name": "bert-tfserving", "version": "202107141745", "model_path": "/models/bert"}
WORKLOAD = "bert-tfserving-202107141745-tensorflow-serving"


def spec(**changes) -> ServiceSpec:
    return ServiceSpec(**{**BASE, **changes})


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_names_and_labels_are_arenas():
    objs = by_kind(render.manifests(spec(), RenderOptions(namespace="serving")))
    assert set(objs) == {"Deployment", "Service", "PodDisruptionBudget"}
    dep, svc = objs["Deployment"], objs["Service"]
    assert dep["metadata"]["name"] == svc["metadata"]["name"] == WORKLOAD
    assert dep["metadata"]["namespace"] == "serving"
    labels = dep["metadata"]["labels"]
    assert {k: labels[k] for k in ("release", "app", "servingName", "servingType", "serviceName", "serviceVersion",
                                   "chart", "heritage")} == {
        "release": "bert-tfserving-202107141745", "app": "tensorflow-serving", "servingName": "bert-tfserving",
        "servingType": "tf-serving", "serviceName": "bert-tfserving", "serviceVersion": "202107141745",
        "chart": "tensorflow-serving-0.2.0", "heritage": "Tidal"}
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert "servingName" not in pod_labels and "servingType" not in pod_labels
    match = {"release": "bert-tfserving-202107141745", "app": "tensorflow-serving"}
    assert dep["spec"]["selector"]["matchLabels"] == match == svc["spec"]["selector"]
    assert objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == match
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("serving", 8500), ("http-serving", 8501)]


@pytest.mark.parametrize("image, command, first_args, last_arg", [
    ("", ["tidal", "model-server"], ["--port=8500", "--rest_api_port=8501"], "--drain_seconds=30"),
    ("tensorflow/serving:2.16.1", ["tensorflow_model_server"], ["--port=8500", "--rest_api_port=8501"],
     "--model_base_path=/models/bert"),
])
def test_command_is_tidal_or_tf_serving(image, command, first_args, last_arg):
    c = container(render.deployment(spec(image=image), RenderOptions(image="registry/tidal:1"), 1, None))
    assert c["name"] == "serving"
    assert c["image"] == (image or "registry/tidal:1")
    assert c["command"] == command
    assert c["args"][:2] == first_args and c["args"][-1] == last_arg
    assert "--model_name=bert-tfserving" in c["args"]


def test_probes_prestop_and_grace():
    opts = RenderOptions(prestop_seconds=7, drain_seconds=20)
    dep = render.deployment(spec(), opts, 2, None)
    c = container(dep)
    assert c["readinessProbe"]["httpGet"] == {"path": "/v1/models/bert-tfserving", "port": "http-serving"}
    assert c["livenessProbe"]["tcpSocket"] == {"port": "http-serving"}
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 7}}
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 7 + 20 + 5
    assert dep["spec"]["replicas"] == 2


@pytest.mark.parametrize("changes, limits", [
    ({}, None),
    ({"cpu": 2, "memory_mib": 4096}, {"cpu": "2", "memory": "4096Mi"}),
    ({"cpu": 0.5, "gpus": 1}, {"cpu": "500m", "nvidia.com/gpu": "1"}),
])
def test_resources_are_limits(changes, limits):
    c = container(render.deployment(spec(**changes), RenderOptions(), 1, None))
    assert c["resources"] == ({"limits": limits} if limits else {})


def test_volumes_from_data_mounts():
    s = spec(data=[{"volume": "model-pvc", "mount": "/models"}, {"volume": "model-pvc", "mount": "/extra"},
                   {"volume": "other", "mount": "/other"}])
    pod = render.deployment(s, RenderOptions(), 1, None)["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "model-pvc", "persistentVolumeClaim": {"claimName": "model-pvc"}},
                              {"name": "other", "persistentVolumeClaim": {"claimName": "other"}}]
    assert [(m["name"], m["mountPath"]) for m in pod["containers"][0]["volumeMounts"]] == [
        ("model-pvc", "/models"), ("model-pvc", "/extra"), ("other", "/other")]


@pytest.mark.parametrize("changes, user_config, has_config", [
    ({}, None, False),
    ({"version_policy": "latest:2"}, None, True),
    ({"model_path": "", "model_config_file": "/etc/models.config"}, "model_config_list {}\n", True),
])
def test_config_map_for_a_model_config(changes, user_config, has_config):
    objs = by_kind(render.manifests(spec(**changes), RenderOptions(), user_config=user_config))
    assert ("ConfigMap" in objs) == has_config
    args = container(objs["Deployment"])["args"]
    if has_config:
        cm = objs["ConfigMap"]
        assert cm["metadata"]["name"] == WORKLOAD + "-cm"
        text = cm["data"]["modelConfigFileContent"]
        assert text == user_config if user_config else "num_versions: 2" in text
        assert "--model_config_file=/etc/tidal/model-config/modelConfigFileContent" in args
        volumes = objs["Deployment"]["spec"]["template"]["spec"]["volumes"]
        assert {"name": "model-config", "configMap": {"name": WORKLOAD + "-cm"}} in volumes
    else:
        assert not any(a.startswith("--model_config_file") for a in args)


@pytest.mark.parametrize("text, expected", [
    ("all", {"operator": "Exists"}),
    ("gpu", {"key": "gpu", "operator": "Exists"}),
    ("spot=true:NoSchedule", {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}),
    ("dedicated:NoExecute", {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}),
])
def test_tolerations(text, expected):
    assert render.toleration(text) == expected


def test_bad_toleration_is_one_line():
    with pytest.raises(ValueError, match="invalid toleration"):
        render.toleration("a:Sometimes")


@pytest.mark.parametrize("placement, labels, terms, tolerations", [
    (Placement("spot", "zone-a"), NodeLabels(),
     [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
      {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a"]}], None),
    (Placement("on-demand"), NodeLabels(),
     [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}], None),
    (Placement("spot", "eastus-1"),
     NodeLabels(capacity_label="kubernetes.azure.com/scalesetpriority", spot_value="spot", on_demand_value="regular",
                spot_taints=({"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot",
                              "effect": "NoSchedule"},)),
     [{"key": "kubernetes.azure.com/scalesetpriority", "operator": "In", "values": ["spot"]},
      {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eastus-1"]}],
     [{"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}]),
])
def test_placement_slice(placement, labels, terms, tolerations):
    dep = render.deployment(spec(), RenderOptions(labels=labels), 1, None, placement=placement)
    assert dep["metadata"]["name"] == f"{WORKLOAD}-{placement.name}"
    pod = dep["spec"]["template"]["spec"]
    got = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert got == [{"matchExpressions": terms}]
    assert pod.get("tolerations") == tolerations
    # slices of one service never share pods; the Service still selects them all
    assert dep["spec"]["selector"]["matchLabels"][render.SLICE_LABEL] == placement.name
    template_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(template_labels[k] == v for k, v in render.selector(spec()).items())


def test_hpa_and_ingress_target_the_deployment():
    hpa = parse_hpa(yaml.safe_load("""
apiVersion: autoscaling/v2beta1
kind: HorizontalPodAutoscaler
metadata: {name: bert-tfserving-hpa}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: bert-tfserving-202107141745-tensorflow-serving}
  minReplicas: 2
  maxReplicas: 10
  metrics:
  - type: External
    external: {metricName: sls_ingress_qps, targetAverageValue: 10}
"""))
    objs = by_kind(render.manifests(spec(), RenderOptions(ingress_host="bert.example.com"), hpa=hpa,
                                    with_ingress=True))
    h = objs["HorizontalPodAutoscaler"]
    assert h["apiVersion"] == "autoscaling/v2"
    assert h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": WORKLOAD}
    assert (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (2, 10)
    assert h["spec"]["metrics"] == [{"type": "External", "external": {
        "metric": {"name": "sls_ingress_qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]
    assert objs["Deployment"]["spec"]["replicas"] == 2
    rule = objs["Ingress"]["spec"]["rules"][0]
    assert rule["host"] == "bert.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": WORKLOAD, "port": {"name": "http-serving"}}


def test_owner_references():
    owner = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": WORKLOAD, "uid": "u-1"}}
    ref = render.owner_reference(owner)
    dep = render.deployment(spec(), RenderOptions(), 1, None, owners=[ref])
    assert dep["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Service", "name": WORKLOAD, "uid": "u-1", "blockOwnerDeletion": True}]


@pytest.mark.parametrize("server, exec_form", [
    ("v1.29.3", True), ("v1.28.5-eks-5e0fdde", True), ("1.25", True),
    ("v1.30.0", False), ("v1.36.3", False), ("v2.0.0", False), ("", False), ("unknown", False),
])
def test_prestop_form_from_the_server_version(server, exec_form):
    """What a backend for a context renders: the exec form of the preStop sleep before Kubernetes 1.30."""
    from tidal.backends.kubernetes.render import prestop_exec_for
    assert prestop_exec_for(server) is exec_form
