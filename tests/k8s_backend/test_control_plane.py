"""The control plane's objects (`tidal export kubernetes --control-plane`): what its pod runs, what its RBAC allows,
and the one-line refusals of the command."""

from __future__ import annotations

import json

import pytest
import yaml

from tidal.backends.kubernetes import controlplane, render
from tidal.backends.kubernetes.contexts import ContextStore
from tidal.backends.kubernetes.controlplane import ControlPlaneOptions, manifests
from tidal.cli import build_parser, main


def by_kind(objects: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for o in objects:
        out.setdefault(o["kind"], o)
    return out


def test_the_pod_runs_tidal_up_with_leader_election():
    objs = by_kind(manifests(ControlPlaneOptions(namespace="serving", lease_name="my-lease", lease_seconds=20)))
    container = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    # the args are the real CLI's: parsed by it, they ask for a foreground control plane with a Lease
    args = build_parser("up").parse_args(container["args"])
    assert (args.command, args.foreground, args.leader_elect, args.lease_name, args.lease_seconds) == (
        "up", True, True, "my-lease", 20.0)
    assert (args.host, args.port, args.gateway_port) == ("0.0.0.0", controlplane.API_PORT, controlplane.GATEWAY_PORT)
    assert objs["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/healthz", "port": "http"}
    assert "livenessProbe" not in container  # a standby listens on nothing; it must not be restarted for that


def test_the_pod_s_context_is_a_valid_contexts_file(tmp_path):
    objs = by_kind(manifests(ControlPlaneOptions(namespace="serving", image="r.example.com/tidal:1", provider="eks")))
    (tmp_path / "contexts.json").write_text(objs["ConfigMap"]["data"]["contexts.json"])
    context = ContextStore(tmp_path, env={}).current()
    assert (context.name, context.is_kubernetes, context.kubeconfig, context.namespace, context.image,
            context.provider) == ("cluster", True, "", "serving", "r.example.com/tidal:1", "eks")
    mounts = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "context", "mountPath": f"{controlplane.HOME}/contexts.json", "subPath": "contexts.json",
            "readOnly": True} in mounts


def test_rbac_names_every_resource_and_verb():
    objs = manifests(ControlPlaneOptions(namespace="serving"))
    rules = by_kind(objs)["Role"]["rules"] + by_kind(objs)["ClusterRole"]["rules"]
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
    # Secrets are written, never read back
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert all(not {"get", "list", "watch"} & set(r["verbs"]) for r in secrets)
    # the Lease is read and written by name only
    lease = [r for r in rules if "leases" in r["resources"] and {"get", "update"} & set(r["verbs"])]
    assert lease and all(r.get("resourceNames") == ["tidal-control-plane"] for r in lease)
    # nodes are the only cluster-wide resource, read-only
    cluster_role = by_kind(objs)["ClusterRole"]
    assert cluster_role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
    assert cluster_role["metadata"]["name"] == "tidal-control-plane-serving-nodes"
    assert "namespace" not in cluster_role["metadata"]


def test_not_labelled_as_a_served_model():
    """The backend watches Deployments labelled managed-by=tidal as its services' slices: not this one."""
    for obj in manifests(ControlPlaneOptions()):
        assert obj["metadata"]["labels"].get(render.MANAGED_BY) != "tidal", obj["kind"]


def test_gateway_service_selects_the_control_plane_pod():
    objs = manifests(ControlPlaneOptions(gateway_service_type="LoadBalancer"))
    gateway = next(o for o in objs if o["metadata"]["name"] == controlplane.GATEWAY)
    pod_labels = by_kind(objs)["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert gateway["spec"]["selector"].items() <= pod_labels.items()
    assert gateway["spec"]["type"] == "LoadBalancer"
    assert [(p["port"], p["targetPort"]) for p in gateway["spec"]["ports"]] == [(8501, "http")]


def test_export_uses_the_current_context(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path))
    monkeypatch.delenv("TIDAL_CONTEXT", raising=False)
    (tmp_path / "contexts.json").write_text(json.dumps({"current": "prod", "contexts": [{
        "name": "prod", "kind": "kubernetes", "namespace": "serving", "image": "r.example.com/tidal:2",
        "provider": "aks"}]}))
    assert main(["export", "kubernetes", "--control-plane"]) == 0
    objs = by_kind(list(yaml.safe_load_all(capsys.readouterr().out)))
    assert objs["Deployment"]["metadata"]["namespace"] == "serving"
    context = json.loads(objs["ConfigMap"]["data"]["contexts.json"])["contexts"][0]
    assert (context["image"], context["provider"]) == ("r.example.com/tidal:2", "aks")


@pytest.mark.parametrize("argv, message", [
    (["bert", "--control-plane"], "give no service NAME"),
    (["--control-plane", "--replicas", "0"], "--replicas 0"),
    (["--control-plane", "--kubernetes-version", "latest"], "expected X.Y"),
])
def test_export_refusals_are_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path))
    assert main(["export", "kubernetes", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_up_leader_elect_refusals(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path))
    monkeypatch.delenv("TIDAL_CONTEXT", raising=False)
    assert main(["up", "--leader-elect"]) == 2  # a candidate may wait for ever: only in the foreground
    assert "--foreground" in capsys.readouterr().err
    assert main(["up", "--foreground", "--leader-elect", "--lease-seconds", "0.5"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # on this machine (the local context) there is no cluster to hold a Lease in
    assert main(["up", "--foreground", "--leader-elect"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a Kubernetes context" in err, err
    assert not (tmp_path / "address.json").exists()


def test_the_api_answers_to_its_service_s_names():
    """Bound to every address, the API answers IP literals and the names TIDAL_ALLOWED_HOSTS adds: its Service's."""
    from tidal.http.hosts import HostAllowList
    objs = by_kind(manifests(ControlPlaneOptions(namespace="serving")))
    env = {e["name"]: e["value"] for e in objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    allowed = HostAllowList.for_bind("0.0.0.0", env=env)
    for host in ("tidal-control-plane:8470", "tidal-control-plane.serving.svc:8470",
                 "tidal-control-plane.serving.svc.cluster.local", "10.244.0.7:8470", "localhost:8470"):
        assert allowed.allows(host), host
    assert not allowed.allows("evil.example.com:8470")


def test_export_carries_a_custom_provider_s_labels(tmp_path, monkeypatch, capsys):
    """`tidal export kubernetes --control-plane` from a custom context: the pod's context has the same labels."""
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TIDAL_CONTEXT", raising=False)
    assert main(["context", "add", "c", "--kubernetes", "-n", "serving", "--no-check", "--provider", "custom",
                 "--capacity-label", "example.com/lifecycle", "--spot-value", "spot",
                 "--spot-taint", "example.com/lifecycle=spot:NoSchedule"]) == 0
    assert main(["context", "use", "c"]) == 0
    capsys.readouterr()
    assert main(["export", "kubernetes", "--control-plane"]) == 0
    objs = by_kind(list(yaml.safe_load_all(capsys.readouterr().out)))
    (tmp_path / "contexts.json").write_text(objs["ConfigMap"]["data"]["contexts.json"])
    context = ContextStore(tmp_path, env={}).current()
    assert context.node_labels() == ContextStore.from_env().get("c").node_labels()
    assert context.node_labels().spot_taints[0]["key"] == "example.com/lifecycle"
