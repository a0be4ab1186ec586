"""Rollouts on Kubernetes: under `tidal up` on a Kubernetes context, a canary release runs its own spec in its own
Deployment (arena's name, with the canary's version) and pods beside the stable release's; a promotion removes
the old stable release's objects, a rollback the canary's. The weights stay in Tidal's gateway."""

from __future__ import annotations

import pytest

from tests.kube.test_control_plane import GPU_TYPE, Tidal, gpu_node, use_context, wait_for
from tidal.backends.kubernetes.contexts import Context, ContextKind

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

NODES = [(f"roll-od-a-{i}", "zone-a", "on-demand") for i in (1, 2, 3, 4)]


@pytest.fixture
def nodes(kube_cluster):
    from kubernetes import client
    core = client.CoreV1Api(kube_cluster.api)
    for name, zone, billing in NODES:
        body = gpu_node(name, zone, billing)
        body["metadata"]["labels"]["inference"] = "roll"
        core.create_node(body)
    yield
    for name, _, _ in NODES:
        try:
            core.delete_node(name)
        except client.ApiException:
            pass


def deployments(apps, ns: str) -> dict[str, str]:
    """Each Deployment of the service that is not being deleted: its name -> its pods' image."""
    return {d.metadata.name: d.spec.template.spec.containers[0].image
            for d in apps.list_namespaced_deployment(ns, label_selector="serviceName=roll").items
            if d.metadata.deletion_timestamp is None}


def ready_pods(core, ns: str) -> dict[str, str]:
    """Each Ready pod of the service: its name -> its release label."""
    return {p.metadata.name: p.metadata.labels["release"]
            for p in core.list_namespaced_pod(ns, label_selector="serviceName=roll").items
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())}


def releases_of(tidal: Tidal) -> dict[str, int]:
    """Tidal's view of the rollout: each release's ready replicas."""
    rollout = tidal.json("serve", "get", "roll")["rollout"] or {"releases": []}
    return {r["name"]: r["ready"] for r in rollout["releases"]}


def test_a_canary_gets_its_own_deployment_and_promote_or_rollback_removes_the_other(kube_cluster, namespace,
                                                                                   nodes, tmp_path):
    from kubernetes import client
    core, apps = client.CoreV1Api(kube_cluster.api), client.AppsV1Api(kube_cluster.api)
    tidal = Tidal(tmp_path / "home")
    use_context(tidal.home, Context(name="roll", kind=ContextKind.KUBERNETES, kubeconfig=str(kube_cluster.kubeconfig),
                                    namespace=namespace))
    tidal("up", "--port", "0", "--gateway-port", "0", "--time-factor", "0.05", timeout=90)
    v1, v2, v3 = ("roll-v1-tensorflow-serving-on-demand-zone-a", "roll-v2-tensorflow-serving-on-demand-zone-a",
                  "roll-v3-tensorflow-serving-on-demand-zone-a")
    try:
        tidal("nodepool", "create", "roll-pool", "--label", "inference=roll", "--instance-types", GPU_TYPE,
              "--zones", "zone-a", "--max", "4")
        tidal("serve", "tensorflow", "--name=roll", "--version=v1", "--model-name=roll", "--selector=inference=roll",
              "--gpus=1", "--model-path=s3://models/roll/1", "--image=tensorflow/serving:2.16.1")
        wait_for("the stable release ready", lambda: set(ready_pods(core, namespace).values()) == {"roll-v1"}, 60)
        assert deployments(apps, namespace) == {v1: "tensorflow/serving:2.16.1"}

        # a canary: its own spec (another image and model path) in its own Deployment, beside the stable one
        tidal("serve", "update", "roll", "--canary-traffic-percent", "10", "--version", "v2",
              "--image", "tensorflow/serving:2.17.0", "--model-path", "s3://models/roll/2")
        wait_for("the canary's pod ready beside the stable one",
                 lambda: sorted(ready_pods(core, namespace).values()) == ["roll-v1", "roll-v2"], 60)
        assert deployments(apps, namespace) == {v1: "tensorflow/serving:2.16.1", v2: "tensorflow/serving:2.17.0"}
        canary = apps.read_namespaced_deployment(v2, namespace).spec.template.spec.containers[0]
        assert "s3://models/roll/2" in " ".join(canary.command or []) + " ".join(canary.args or [])
        assert core.read_namespaced_service("roll-v2-tensorflow-serving", namespace).spec.selector["release"] == \
            "roll-v2"
        wait_for("Tidal sees both releases ready", lambda: releases_of(tidal) == {"roll-v1": 1, "roll-v2": 1}, 30)
        rollout = tidal.json("serve", "get", "roll")["rollout"]
        assert {r["name"]: r["weight"] for r in rollout["releases"]} == {"roll-v1": 90, "roll-v2": 10}

        # promoted: the canary carries the service, the old stable release's objects go
        tidal("serve", "promote", "roll")
        wait_for("the old stable release's Deployment gone", lambda: deployments(apps, namespace) == {
            v2: "tensorflow/serving:2.17.0"}, 60)
        wait_for("only the promoted release's pods", lambda: set(ready_pods(core, namespace).values()) == {"roll-v2"},
                 60)
        wait_for("the old release's Service gone", lambda: "roll-v1-tensorflow-serving" not in {
            s.metadata.name for s in core.list_namespaced_service(namespace).items}, 30)

        # another canary, rolled back: its objects go, the stable release stays as it was
        stable_pods = set(ready_pods(core, namespace))
        tidal("serve", "update", "roll", "--canary-traffic-percent", "20", "--version", "v3",
              "--image", "tensorflow/serving:2.18.0")
        wait_for("the second canary's Deployment", lambda: v3 in deployments(apps, namespace)
                 and "roll-v3" in ready_pods(core, namespace).values(), 60)
        tidal("serve", "rollback", "roll")
        wait_for("the rolled-back canary's Deployment gone",
                 lambda: deployments(apps, namespace) == {v2: "tensorflow/serving:2.17.0"}, 60)
        wait_for("the rolled-back canary's Service gone", lambda: "roll-v3-tensorflow-serving" not in {
            s.metadata.name for s in core.list_namespaced_service(namespace).items}, 30)
        assert set(ready_pods(core, namespace)) == stable_pods

        tidal("serve", "delete", "roll")
        wait_for("the service's Deployments gone", lambda: not deployments(apps, namespace), 60)
    finally:
        tidal("down", check=False, timeout=60)
