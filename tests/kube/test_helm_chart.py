"""deploy/helm/tidal rendered by the helm binary: the same objects as `tidal export kubernetes --control-plane`,
installed with `helm install` on the real API server (kwok runs its pod), and uninstalled without leftovers."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.kube.cluster import REPO_ROOT
from tidal.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHART = REPO_ROOT / "deploy" / "helm" / "tidal"
HELM_LABELS = {"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/version",
               "helm.sh/chart"}
VALUES = ["--set", "image.repository=registry.example.com/tidal", "--set", "image.tag=1.0", "--set", "provider=gke",
          "--set", "replicas=2", "--set", "leaderElection.leaseSeconds=20", "--set", "resources.limits.memory=2Gi"]


def helm(kube_bin, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the helm binary with a home of its own (its caches and config go there, not to the user's)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="tidal-helm-") as home:
        proc = subprocess.run([str(kube_bin / "helm"), *argv], capture_output=True, text=True, timeout=120,
                              env={"HOME": home, "PATH": "/usr/bin:/bin"})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def comparable(obj: dict) -> dict:
    """An object without Helm's own labels, and a ConfigMap's JSON as data (Go orders keys, Python keeps order)."""
    obj = json.loads(json.dumps(obj))
    labels = obj["metadata"].get("labels", {})
    for key in HELM_LABELS:
        labels.pop(key, None)
    if obj["kind"] == "ConfigMap":
        obj["data"] = {k: json.loads(v) for k, v in obj["data"].items()}
    return obj


def by_key(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): comparable(o) for o in objects if o}


def test_chart_lints(kube_bin):
    out = helm(kube_bin, "lint", str(CHART), "--strict", *VALUES)
    assert "0 chart(s) failed" in out.stdout


def test_chart_renders_what_export_prints(kube_bin, tmp_path, monkeypatch, capsys):
    rendered = list(yaml.safe_load_all(helm(kube_bin, "template", "tidal", str(CHART), "--namespace", "serving",
                                            *VALUES).stdout))
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TIDAL_CONTEXT", raising=False)
    assert main(["export", "kubernetes", "--control-plane", "-n", "serving", "--image",
                 "registry.example.com/tidal:1.0", "--provider", "gke", "--replicas", "2"]) == 0
    exported = list(yaml.safe_load_all(capsys.readouterr().out))
    chart, export = by_key(rendered), by_key(exported)
    assert sorted(chart) == sorted(export)
    # the values that differ from export's defaults show where they should, and nowhere else
    container = chart[("Deployment", "tidal-control-plane")]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--lease-seconds", "20"] and container["resources"]["limits"]["memory"] == "2Gi"
    container["args"][-1] = "15"
    container["resources"]["limits"]["memory"] = "1Gi"
    for key in chart:
        assert chart[key] == export[key], key
    context = chart[("ConfigMap", "tidal-control-plane")]["data"]["contexts.json"]["contexts"][0]
    assert (context["namespace"], context["provider"], context["image"]) == (
        "serving", "gke", "registry.example.com/tidal:1.0")


def chart_context(kube_bin, *values: str) -> dict:
    out = helm(kube_bin, "template", "tidal", str(CHART), "--show-only", "templates/configmap.yaml", *values).stdout
    return json.loads(yaml.safe_load(out)["data"]["contexts.json"])["contexts"][0]


def test_chart_custom_provider_carries_its_labels(kube_bin):
    """The chart's context for ack and custom is one `tidal context` accepts (the control plane loads it)."""
    from tidal.backends.kubernetes.contexts import Context
    assert Context.model_validate(chart_context(kube_bin, "--set", "provider=ack")).node_labels().capacity_label \
        == "node.alibabacloud.com/spot-strategy"
    context = Context.model_validate(chart_context(
        kube_bin, "--set", "provider=custom", "--set", "custom.capacityLabel=example.com/lifecycle",
        "--set", "custom.spotValue=spot", "--set", "custom.spotTaint=example.com/lifecycle=spot:NoSchedule"))
    labels = context.node_labels()
    assert (labels.capacity_label, labels.spot_value, labels.on_demand_value) == ("example.com/lifecycle", "spot", "")
    assert labels.spot_taints == ({"key": "example.com/lifecycle", "operator": "Equal", "value": "spot",
                                   "effect": "NoSchedule"},)
    out = helm(kube_bin, "template", "tidal", str(CHART), "--set", "provider=custom", check=False)
    assert out.returncode != 0 and "provider custom needs custom.capacityLabel" in out.stderr


def test_chart_refuses_an_unknown_provider(kube_bin):
    out = helm(kube_bin, "template", "tidal", str(CHART), "--set", "provider=ack-typo", check=False)
    assert out.returncode != 0 and 'provider "ack-typo" is not one of' in out.stderr


def test_helm_install_on_the_cluster(kube_bin, kube_cluster, namespace):
    from kubernetes import client, watch
    apps, core, rbac = (client.AppsV1Api(kube_cluster.api), client.CoreV1Api(kube_cluster.api),
                        client.RbacAuthorizationV1Api(kube_cluster.api))
    helm(kube_bin, "install", "tidal", str(CHART), "--namespace", namespace, "--kubeconfig",
         str(kube_cluster.kubeconfig), "--set", "image.tag=1.0")
    try:
        deployment = apps.read_namespaced_deployment("tidal-control-plane", namespace)
        assert deployment.spec.template.spec.service_account_name == "tidal-control-plane"
        assert core.read_namespaced_service("tidal-gateway", namespace).spec.ports[0].port == 8501
        assert rbac.read_cluster_role(f"tidal-control-plane-{namespace}-nodes").rules[0].resources == ["nodes"]
        # the Deployment's pod is created, scheduled and (kwok's kubelet) running
        watcher = watch.Watch()
        for event in watcher.stream(core.list_namespaced_pod, namespace, timeout_seconds=60,
                                    label_selector="app.kubernetes.io/component=control-plane"):
            pod = event["object"]
            if pod.status.phase == "Running" and pod.spec.node_name:
                watcher.stop()
                break
        else:
            pytest.fail("the control plane's pod did not run within 60 s")
        assert pod.spec.containers[0].image == "tidal:1.0"
    finally:
        helm(kube_bin, "uninstall", "tidal", "--namespace", namespace, "--kubeconfig", str(kube_cluster.kubeconfig))
    from kubernetes.client.exceptions import ApiException
    with pytest.raises(ApiException) as err:
        rbac.read_cluster_role(f"tidal-control-plane-{namespace}-nodes")
    assert err.value.status == 404  # the cluster-wide role goes with the release
