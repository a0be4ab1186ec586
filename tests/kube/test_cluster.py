"""Smoke tests of the real control plane the Kubernetes backend drives: server-side apply of an arena-shaped
Deployment, scheduling onto kwok's spot and on-demand Nodes, watches, scaling, an interruption taint, and helm."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.kube.cluster import CAPACITY_TYPE, REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIELD_MANAGER = "tidal"
# Karpenter (v1) taints a node it is about to disrupt (spot interruption, drift, consolidation) with
# `karpenter.sh/disrupted:NoSchedule` before draining it: https://karpenter.sh/v1.0/concepts/disruption/
# (before v1 the key was `karpenter.sh/disruption`).
DISRUPTED_TAINT = {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}
WAIT_S = 30


def serving_deployment(name: str, version: str, replicas: int, node_selector: dict | None = None) -> dict:
    """The Deployment `arena serve tensorflow` makes (kubeflow/arena charts/tfserving; see the Kubernetes spec)."""
    release = f"{name}-{version}"
    pod_labels = {
        "heritage": "Tidal", "release": release, "chart": "tensorflow-serving-0.2.0", "app": "tensorflow-serving",
        "serviceName": name, "serviceVersion": version,
    }
    pod_spec = {
        "containers": [{
            "name": "serving",
            "image": "tensorflow/serving:2.16.1",
            "command": ["/usr/bin/tensorflow_model_server"],
            "args": ["--port=8500", "--rest_api_port=8501", f"--model_name={name}", f"--model_base_path=/models/{name}"],
            "ports": [{"name": "serving", "containerPort": 8500}, {"name": "http-serving", "containerPort": 8501}],
            "readinessProbe": {"tcpSocket": {"port": "serving"}, "initialDelaySeconds": 15},
            "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
        }],
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{release}-tensorflow-serving",
            "labels": {**pod_labels, "servingName": name, "servingType": "tf-serving"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"release": release, "app": "tensorflow-serving"}},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def selector_of(deployment: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())


@dataclass(frozen=True)
class PodState:
    node: str | None
    phase: str
    ready: bool


def state_of(pod) -> PodState:
    conditions = {c.type: c.status for c in pod.status.conditions or ()}
    return PodState(node=pod.spec.node_name, phase=pod.status.phase, ready=conditions.get("Ready") == "True")


class Cluster:
    """The typed and dynamic clients a test needs, over the session's control plane."""

    def __init__(self, kube_cluster, namespace: str) -> None:
        from kubernetes import client, dynamic

        self.ns = namespace
        self.core = client.CoreV1Api(kube_cluster.api)
        self.dynamic = dynamic.DynamicClient(kube_cluster.api, cache_file=str(kube_cluster.work_dir / "discovery.json"))
        self.deployments = self.dynamic.resources.get(api_version="apps/v1", kind="Deployment")

    def apply(self, body: dict):
        """Server-side apply under our field manager (the API server merges, and owns conflicts)."""
        return self.dynamic.server_side_apply(
            self.deployments, body=body, namespace=self.ns, field_manager=FIELD_MANAGER, force_conflicts=True)

    def snapshot(self, selector: str) -> tuple[str, dict[str, PodState]]:
        """The Pods now, and the resource version to watch from so that no later change is missed."""
        pods = self.core.list_namespaced_pod(self.ns, label_selector=selector)
        return pods.metadata.resource_version, {p.metadata.name: state_of(p) for p in pods.items}

    def watch_pods(self, selector: str, since: tuple[str, dict[str, PodState]],
                   done: Callable[[dict[str, PodState]], bool]):
        """Follow the Pods from the snapshot `since` until `done(current states)`; returns each Pod's history."""
        from kubernetes import watch

        version, current = since[0], dict(since[1])
        histories: dict[str, list[PodState]] = {name: [state] for name, state in current.items()}
        if done(current):
            return histories, current
        watcher = watch.Watch()
        for event in watcher.stream(self.core.list_namespaced_pod, self.ns, label_selector=selector,
                                    resource_version=version, timeout_seconds=WAIT_S):
            pod = event["object"]
            name = pod.metadata.name
            if event["type"] == "DELETED":
                current.pop(name, None)
            else:
                current[name] = state_of(pod)
                history = histories.setdefault(name, [])
                if not history or history[-1] != current[name]:
                    history.append(current[name])
            if done(current):
                watcher.stop()
                return histories, current
        pytest.fail(f"pods {selector} did not get there in {WAIT_S} s: {current}")


def all_running(count: int) -> Callable[[dict[str, PodState]], bool]:
    return lambda pods: len(pods) == count and all(p.phase == "Running" and p.ready for p in pods.values())


@pytest.fixture
def cluster(kube_cluster, namespace) -> Cluster:
    return Cluster(kube_cluster, namespace)


def test_apply_schedules_pods_onto_kwok_nodes_and_a_watch_sees_them_start(kube_cluster, cluster):
    body = serving_deployment("mnist", "v1", replicas=2)
    since = cluster.snapshot(selector_of(body))

    applied = cluster.apply(body)

    assert applied.metadata.name == "mnist-v1-tensorflow-serving"
    assert applied.metadata.labels["servingType"] == "tf-serving"
    managers = {(m.manager, m.operation) for m in applied.metadata.managedFields}
    assert (FIELD_MANAGER, "Apply") in managers
    histories, pods = cluster.watch_pods(selector_of(body), since, all_running(2))
    node_names = {n.name for n in kube_cluster.nodes}
    for name, history in histories.items():
        # Created by the ReplicaSet unbound, bound by the scheduler, then run by kwok's kubelet.
        assert history[0] == PodState(node=None, phase="Pending", ready=False), (name, history)
        assert history[-1].phase == "Running" and history[-1].ready, (name, history)
        assert history[-1].node in node_names, (name, history)


def test_scaling_the_deployment_adds_pods_and_keeps_the_old_ones(cluster):
    body = serving_deployment("mnist", "v2", replicas=2)
    since = cluster.snapshot(selector_of(body))
    cluster.apply(body)
    _, before = cluster.watch_pods(selector_of(body), since, all_running(2))

    since = cluster.snapshot(selector_of(body))
    cluster.apply(serving_deployment("mnist", "v2", replicas=4))

    _, after = cluster.watch_pods(selector_of(body), since, all_running(4))
    assert set(before) < set(after)


def test_a_spot_node_selector_lands_pods_only_on_spot_nodes(kube_cluster, cluster):
    body = serving_deployment("bert", "1", replicas=4, node_selector={CAPACITY_TYPE: "spot"})
    since = cluster.snapshot(selector_of(body))
    cluster.apply(body)

    _, pods = cluster.watch_pods(selector_of(body), since, all_running(4))

    spot = {n.name for n in kube_cluster.nodes if n.capacity_type == "spot"}
    assert spot and spot != {n.name for n in kube_cluster.nodes}
    assert {p.node for p in pods.values()} <= spot


def test_a_node_tainted_for_interruption_gets_no_new_pods(kube_cluster, cluster):
    spot_nodes = sorted(n.name for n in kube_cluster.nodes if n.capacity_type == "spot")
    doomed, kept = spot_nodes[0], spot_nodes[1:]
    cluster.core.patch_node(doomed, {"spec": {"taints": [DISRUPTED_TAINT]}})
    try:
        spread = serving_deployment("resnet", "1", replicas=3, node_selector={CAPACITY_TYPE: "spot"})
        pinned = serving_deployment("resnet", "2", replicas=1, node_selector={"kubernetes.io/hostname": doomed})
        since = cluster.snapshot(selector_of(spread))
        cluster.apply(spread)
        cluster.apply(pinned)

        _, pods = cluster.watch_pods(selector_of(spread), since, all_running(3))
        assert {p.node for p in pods.values()} <= set(kept)
        # The one Pod that may only go to the tainted node stays Pending, and the scheduler says why.
        reason = _wait_unschedulable(cluster, selector_of(pinned))
        assert "1 node(s) had untolerated taint" in reason, reason
    finally:
        cluster.core.patch_node(doomed, {"spec": {"taints": []}})
    # Lifting the taint lets it in: the taint, and nothing else, kept it out.
    _, pinned_pods = cluster.watch_pods(selector_of(pinned), cluster.snapshot(selector_of(pinned)), all_running(1))
    assert {p.node for p in pinned_pods.values()} == {doomed}


def _wait_unschedulable(cluster: Cluster, selector: str) -> str:
    from kubernetes import watch

    watcher = watch.Watch()
    for event in watcher.stream(cluster.core.list_namespaced_pod, cluster.ns, label_selector=selector,
                                timeout_seconds=WAIT_S):
        pod = event["object"]
        assert pod.spec.node_name is None, f"{pod.metadata.name} was bound to {pod.spec.node_name}"
        for condition in pod.status.conditions or ():
            if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
                watcher.stop()
                return condition.message
    pytest.fail(f"no Unschedulable condition on pods {selector} in {WAIT_S} s")


def module_version(module: str) -> str:
    """The version tools/kube/go.mod pins for `module` (what scripts/kube-binaries.sh built)."""
    for line in (REPO_ROOT / "tools" / "kube" / "go.mod").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == module and fields[1].startswith("v"):
            return fields[1]
    raise AssertionError(f"{module} is not required by tools/kube/go.mod")


def test_helm_runs_and_reaches_the_api_server(kube_cluster, tmp_path):
    env = {**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig), "HELM_CACHE_HOME": str(tmp_path / "cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "config"), "HELM_DATA_HOME": str(tmp_path / "data")}
    helm = str(kube_cluster.tool("helm"))

    version = subprocess.run([helm, "version", "--short"], env=env, capture_output=True, text=True, timeout=30)
    releases = subprocess.run([helm, "list", "--all-namespaces", "-o", "json"], env=env, capture_output=True,
                              text=True, timeout=30)

    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == module_version("helm.sh/helm/v4"), version.stdout
    assert releases.returncode == 0, releases.stderr
    assert releases.stdout.strip() == "[]"


def test_the_api_server_reports_the_release_it_was_built_from(kube_cluster):
    from kubernetes import client

    info = client.VersionApi(kube_cluster.api).get_code()

    assert info.git_version == module_version("k8s.io/kubernetes")
    assert (info.major, info.minor) == ("1", info.git_version.split(".")[1])
