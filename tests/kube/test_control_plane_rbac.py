"""The exported RBAC is what the control plane really needs: `tidal up` on a Kubernetes context whose credentials
are the exported ServiceAccount's drives a service through its life (serve with volume credentials, scale, a
spot Node interrupted, a restart that adopts, a canary rolled back, delete) without one refusal, and that
account still may not read Secrets, delete Nodes or touch another namespace."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from tests.kube.cluster import CAPACITY_TYPE
from tests.kube.test_control_plane import GPU_TYPE, REPO_ROOT, Tidal, gpu_node, use_context, wait_for
from tidal.backends.kubernetes.contexts import Context, ContextKind

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

# One GPU each: 3 replicas, a replacement for the interrupted one, and the canary beside them.
NODES = [(f"rbac-spot-a-{i}", "zone-a", "spot") for i in (1, 2, 3, 4)] + [("rbac-od-a-1", "zone-a", "on-demand")]
SECRET = "SeCrEtRbAc0123456789"


@pytest.fixture
def account(kube_cluster, namespace, tmp_path, monkeypatch, capsys):
    """The export's ServiceAccount and RBAC applied as an administrator would; a kubeconfig with its token."""
    from kubernetes import client, dynamic

    from tests.kube.accounts import service_account_client
    from tidal.backends.kubernetes.controlplane import NAME
    from tidal.cli import main

    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "export-home"))
    assert main(["export", "kubernetes", "--control-plane", "-n", namespace]) == 0
    objects = [o for o in yaml.safe_load_all(capsys.readouterr().out)
               if o["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    monkeypatch.delenv("TIDAL_HOME")
    dyn = dynamic.DynamicClient(kube_cluster.api)
    for obj in objects:
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        resource.create(body=obj, namespace=namespace if resource.namespaced else None)
    core = client.CoreV1Api(kube_cluster.api)
    for name, zone, billing in NODES:
        body = gpu_node(name, zone, billing)
        body["metadata"]["labels"]["inference"] = "rbac"
        core.create_node(body)
    api = service_account_client(kube_cluster, namespace, NAME, create=False)
    token = api.configuration.api_key["authorization"].removeprefix("Bearer ")
    config = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": token}
    path = tmp_path / "control-plane.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    try:
        yield path, api
    finally:
        api.close()
        for name, _, _ in NODES:
            try:
                core.delete_node(name)
            except client.ApiException:
                pass
        for obj in objects:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).delete(obj["metadata"]["name"])


def refusals(home: Path) -> list[str]:
    """Lines of the control plane's log where the API refused it."""
    log = home / "logs" / "control-plane.log"
    text = log.read_text() if log.exists() else ""
    return [line for line in text.splitlines() if ": 403 " in line or "forbidden" in line.lower()]


def test_a_service_s_life_with_the_exported_rbac(kube_cluster, namespace, account, tmp_path):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    kubeconfig, sa_api = account
    core, apps = client.CoreV1Api(kube_cluster.api), client.AppsV1Api(kube_cluster.api)
    tidal = Tidal(tmp_path / "home")
    use_context(tidal.home, Context(name="sa", kind=ContextKind.KUBERNETES, kubeconfig=str(kubeconfig),
                                    namespace=namespace))
    up = ("up", "--port", "0", "--gateway-port", "0", "--time-factor", "0.05")
    tidal(*up, timeout=90)
    try:
        tidal("nodepool", "create", "rbac-pool", "--label", "inference=rbac", "--spot", "--on-demand-percentage",
              "0", "--compensate-with-on-demand", "--instance-types", GPU_TYPE, "--zones", "zone-a", "--max", "5",
              "--notice", "120")
        # the volume's keys become a Secret the control plane writes (and may never read back)
        pvc = (REPO_ROOT / "examples" / "reference-procedure" / "pvc.yaml").read_text()
        pvc = (pvc.replace("<Your Bucket>", "rbac-bucket").replace("<Your oss url>", "oss-cn-hangzhou.aliyuncs.com")
               .replace("<Your Access Key Id>", "LTAIrbac0123456789").replace("<Your Access Key Secret>", SECRET)
               .replace("name: model-pvc", "name: rbac-pvc").replace("claimName: model-pvc", "claimName: rbac-pvc"))
        pv, claim = yaml.safe_load_all(pvc)
        pv["metadata"]["name"] = f"rbac-pv-{namespace}"
        claim["spec"]["volumeName"] = pv["metadata"]["name"]
        (tmp_path / "pvc.yaml").write_text(yaml.safe_dump_all([pv, claim]))
        core.create_persistent_volume(pv)
        core.create_namespaced_persistent_volume_claim(namespace, claim)
        tidal("apply", "-f", str(tmp_path / "pvc.yaml"))
        volume = claim["metadata"]["name"]
        tidal("serve", "tensorflow", "--name=rbac", "--model-name=rbac", "--selector=inference=rbac", "--gpus=1",
              "--image=tensorflow/serving:2.16.1", f"--data={volume}:/models", "--model-path=/models/rbac")
        wait_for("one replica available", lambda: tidal.json("serve", "get", "rbac")["available"] >= 1, 60)
        secrets = core.list_namespaced_secret(namespace, label_selector="serviceName=rbac").items
        assert secrets and all(SECRET not in str(d.to_dict()) for d in apps.list_namespaced_deployment(namespace).items)

        tidal("autoscale", "rbac", "--min", "3", "--max", "4", "--target-qps", "10")

        def ready_pods():
            return [p for p in core.list_namespaced_pod(namespace, label_selector="serviceName=rbac").items
                    if p.metadata.deletion_timestamp is None
                    and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())]
        wait_for("3 replicas ready", lambda: len(ready_pods()) == 3
                 and tidal.json("serve", "get", "rbac")["available"] == 3, 90)

        # a spot Node is interrupted: its replica is replaced elsewhere before it goes
        victim = next(p.spec.node_name for p in ready_pods()
                      if core.read_node(p.spec.node_name).metadata.labels[CAPACITY_TYPE] == "spot")
        core.patch_node(victim, {"spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}})
        wait_for("the victim's replica replaced", lambda: len(ready_pods()) == 3
                 and victim not in {p.spec.node_name for p in ready_pods()}, 90)

        # a restart adopts what runs (the state ConfigMap is read back, Deployments listed)
        address = json.loads((tidal.home / "address.json").read_text())
        os.kill(address["pid"], signal.SIGKILL)
        wait_for("the control plane is gone", lambda: not Path(f"/proc/{address['pid']}").exists(), 10)
        tidal(*up, timeout=90)
        wait_for("the restarted control plane adopted the replicas",
                 lambda: tidal.json("serve", "get", "rbac")["available"] == 3, 30)

        # a canary release: Deployments and a Service of its own, removed by the rollback
        tidal("serve", "update", "rbac", "--canary-traffic-percent", "10", "--version", "v2",
              "--image", "tensorflow/serving:2.17.0")
        canary = "rbac-v2-tensorflow-serving"
        wait_for("the canary's pod ready", lambda: any(p.metadata.labels["release"] == "rbac-v2"
                                                       for p in ready_pods()), 60)
        tidal("serve", "rollback", "rbac")
        wait_for("the canary's objects gone", lambda: not [
            d for d in apps.list_namespaced_deployment(namespace).items if d.metadata.name.startswith(canary)]
            and canary not in {x.metadata.name for x in core.list_namespaced_service(namespace).items}, 60)

        tidal("serve", "delete", "rbac")
        wait_for("the service's Deployments gone", lambda: not apps.list_namespaced_deployment(namespace).items, 60)
        refused_events = [e for e in tidal.events() if ": 403 " in e["message"] or "forbidden" in e["message"].lower()]
        assert refused_events == []
    finally:
        tidal("down", check=False, timeout=60)
    assert refusals(tidal.home) == []

    # and nothing more than it needs
    as_sa, apps_sa = client.CoreV1Api(sa_api), client.AppsV1Api(sa_api)
    refused = {
        "read a Secret": lambda: as_sa.read_namespaced_secret(secrets[0].metadata.name, namespace),
        "list Secrets": lambda: as_sa.list_namespaced_secret(namespace),
        "delete a Node": lambda: as_sa.delete_node(NODES[0][0]),
        "patch a Node": lambda: as_sa.patch_node(NODES[0][0], {"metadata": {"labels": {"x": "y"}}}),
        "another namespace's Pods": lambda: as_sa.list_namespaced_pod("default"),
        "another ConfigMap": lambda: as_sa.read_namespaced_config_map("kube-root-ca.crt", namespace),
        "delete the state": lambda: as_sa.delete_namespaced_config_map("tidal-state", namespace),
        "delete a Deployment": lambda: apps_sa.delete_namespaced_deployment("x", namespace),
        "create a Pod": lambda: as_sa.create_namespaced_pod(namespace, {
            "metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}),
    }
    for what, call in refused.items():
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 403, f"{what}: {err.value.status}"
