"""`tidal export kubernetes --control-plane` on a real API server: accepted by its strict dry run, and its RBAC
is enough for everything the backend and the Lease do while refusing what they never need."""

from __future__ import annotations

import pytest
import yaml

from tidal.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def strict_dry_run(api, obj: dict, namespace: str | None) -> dict:
    """POST with dryRun=All and fieldValidation=Strict (an unknown field is an error, not a dropped warning)."""
    from kubernetes import dynamic
    resource = dynamic.DynamicClient(api).resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    return api.call_api(
        resource.path(namespace=namespace if resource.namespaced else None), "POST", body=obj,
        auth_settings=["BearerToken"], query_params=[("dryRun", "All"), ("fieldValidation", "Strict")],
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        response_types_map={200: "object", 201: "object"}, _return_http_data_only=True)


def export_control_plane(namespace: str, capsys, *extra: str) -> list[dict]:
    assert main(["export", "kubernetes", "--control-plane", "-n", namespace, *extra]) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


def test_control_plane_passes_server_side_dry_run(kube_cluster, namespace, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    objects = export_control_plane(namespace, capsys, "--image", "registry.example.com/tidal:1.0", "--replicas", "2")
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                            "ClusterRoleBinding", "ConfigMap", "Deployment", "Service", "Service"]
    for obj in objects:
        out = strict_dry_run(kube_cluster.api, obj, namespace)
        assert out["metadata"]["name"] == obj["metadata"]["name"]
    deployment = objects[6]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/tidal:1.0"
    assert "--leader-elect" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def _apply_rbac(kube_cluster, objects: list[dict], namespace: str) -> None:
    from kubernetes import dynamic
    client = dynamic.DynamicClient(kube_cluster.api)
    for obj in objects:
        if obj["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
            resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            resource.create(body=obj, namespace=namespace if resource.namespaced else None)


def _delete_cluster_objects(kube_cluster, objects: list[dict]) -> None:
    from kubernetes import dynamic
    client = dynamic.DynamicClient(kube_cluster.api)
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).delete(obj["metadata"]["name"])


def test_least_privilege_is_enough_for_the_backend_and_the_lease(kube_cluster, namespace, tmp_path, monkeypatch,
                                                                   capsys):
    """Act as the exported ServiceAccount: a service's whole life on the cluster and leader election succeed;
    what the backend never does (read Secrets, create Pods, delete Deployments or Nodes) is refused."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from tests.kube.accounts import service_account_client
    from tests.kube.test_backend_kubernetes import Harness
    from tidal.backends.base import ReplicaPhase
    from tidal.backends.kubernetes.backend import KubernetesBackend
    from tidal.backends.kubernetes.controlplane import NAME
    from tidal.backends.kubernetes.lease import LeaderElection, LeaseElector
    from tidal.backends.kubernetes.render import RenderOptions

    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    objects = export_control_plane(namespace, capsys)
    _apply_rbac(kube_cluster, objects, namespace)
    api = service_account_client(kube_cluster, namespace, NAME, create=False)
    h = Harness(kube_cluster, namespace)
    backend = KubernetesBackend(api, namespace, h.specs.__getitem__, RenderOptions(namespace=namespace))
    try:
        # a replica with credentials (a Secret), on a node it reads for its placement, until ready
        refs = {"r1": backend.start_replica(h.launch("r1", "spot-a-1", env={"TOKEN": "t0ken"})).ref}
        refs["r2"] = backend.start_replica(h.launch("r2", "spot-a-1")).ref

        def ready() -> bool:
            return all(s.phase is ReplicaPhase.READY for s in backend.observe(refs).values())

        h.until("two replicas ready", ready, backend)
        backend.stop_replica("r2", refs.pop("r2"), grace_seconds=0)          # claim, scale, delete a pod
        assert backend.adopt(refs).running == frozenset({"r1"})             # list Deployments after a restart
        backend.delete_service("bert")                                       # the Service owns the rest

        candidate = LeaseElector(api, namespace, LeaderElection(lease_seconds=3))
        assert candidate.try_once() and candidate.try_once() and candidate.release()

        # and nothing more
        as_sa = (client.CoreV1Api(api), client.AppsV1Api(api), client.CoordinationV1Api(api))
        refused = {
            "read a Secret": lambda: as_sa[0].read_namespaced_secret("bert-v1-tensorflow-serving-env", namespace),
            "list Secrets": lambda: as_sa[0].list_namespaced_secret(namespace),
            "create a Pod": lambda: as_sa[0].create_namespaced_pod(namespace, {
                "metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}),
            "delete a Deployment": lambda: as_sa[1].delete_namespaced_deployment("x", namespace),
            "delete a Node": lambda: as_sa[0].delete_node("spot-a-1"),
            "another namespace's Pods": lambda: as_sa[0].list_namespaced_pod("default"),
            "another Lease": lambda: as_sa[2].read_namespaced_lease("other", namespace),
        }
        for what, call in refused.items():
            with pytest.raises(ApiException) as err:
                call()
            assert err.value.status == 403, f"{what}: {err.value.status}"
    finally:
        backend.close()
        api.close()
        _delete_cluster_objects(kube_cluster, objects)


def test_the_pod_s_context_and_service_account_work(kube_cluster, namespace, tmp_path, monkeypatch, capsys):
    """What the control plane's pod does at start, here in-process: its contexts.json from the ConfigMap, no
    kubeconfig, the service account's token and CA where a pod has them (the API server's address in the
    environment), then the cluster check and a round for the Lease."""
    from kubernetes.config import incluster_config
    from urllib.parse import urlparse

    from tests.kube.accounts import service_account_client
    from tidal.backends.kubernetes.client import check_access
    from tidal.backends.kubernetes.contexts import ContextStore
    from tidal.backends.kubernetes.controlplane import NAME
    from tidal.backends.kubernetes.lease import LeaderElection, elector_for_context

    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "export-home"))
    objects = export_control_plane(namespace, capsys)
    _apply_rbac(kube_cluster, objects, namespace)
    try:
        token_api = service_account_client(kube_cluster, namespace, NAME, create=False)
        token = token_api.configuration.api_key["authorization"].removeprefix("Bearer ")
        token_api.close()
        secrets = tmp_path / "serviceaccount"
        secrets.mkdir()
        (secrets / "token").write_text(token)
        (secrets / "ca.crt").write_bytes((kube_cluster.work_dir / "pki" / "apiserver.crt").read_bytes())
        monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(secrets / "token"))
        monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(secrets / "ca.crt"))
        server = urlparse(kube_cluster.server)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", server.hostname)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        monkeypatch.delenv("KUBECONFIG", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "pod-home"))  # no ~/.kube/config in a pod
        home = tmp_path / "var-lib-tidal"
        home.mkdir()
        config_map = next(o for o in objects if o["kind"] == "ConfigMap")
        (home / "contexts.json").write_text(config_map["data"]["contexts.json"])
        monkeypatch.setenv("TIDAL_HOME", str(home))
        monkeypatch.delenv("TIDAL_CONTEXT", raising=False)

        context = ContextStore.from_env().current()
        assert (context.name, context.namespace, context.kubeconfig) == ("cluster", namespace, "")
        from tidal.backends.kubernetes.client import api_client
        api = api_client(context)
        try:
            assert check_access(context, api).startswith("v1.")
        finally:
            api.close()
        elector = elector_for_context(LeaderElection(lease_seconds=3))
        try:
            assert elector.try_once() and elector.release()
        finally:
            elector.close()
    finally:
        _delete_cluster_objects(kube_cluster, objects)
