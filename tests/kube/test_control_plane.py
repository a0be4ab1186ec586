"""The reference procedure on Kubernetes: `tidal up` under a Kubernetes context drives the real test cluster
(context, nodepool, apply, serve, autoscale, get, top, events, delete through the control plane).

kwok's simulated kubelets run no processes: a pod is Ready when bound, and its IP answers nothing. So no request
goes through a replica here; the test asserts on the cluster's objects instead (pods Ready on Nodes of the right
capacity type and zone, counts per billing, Tidal's events), and the load the reference procedure applies is
stood in for by the HPA's floor (what 55 QPS at a target of 10 asks: 6 replicas).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.kube.cluster import CAPACITY_TYPE, INSTANCE_TYPE, KWOK_LABEL, ZONE
from tidal.backends.kubernetes.contexts import Context, ContextKind, ContextStore
from tidal.capacity.policies.ess import EssParams, split

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
GPU_TYPE = "ecs.gn6i-c4g1.xlarge"
WORKLOAD = "bert-tfserving-202107141745-tensorflow-serving"
# Spare capacity in both zones: 3 spot and 2 on-demand GPU Nodes in zone-a, 3 spot and 1 on-demand in zone-b.
GPU_NODES = [(f"gpu-spot-{z}-{i}", f"zone-{z}", "spot") for z in "ab" for i in (1, 2, 3)] + [
    ("gpu-od-a-1", "zone-a", "on-demand"), ("gpu-od-a-2", "zone-a", "on-demand"), ("gpu-od-b-1", "zone-b", "on-demand")]


def gpu_node(name: str, zone: str, billing: str) -> dict:
    resources = {"cpu": "4", "memory": "15Gi", "pods": "110", "nvidia.com/gpu": "1"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {KWOK_LABEL[0]: KWOK_LABEL[1], "kubernetes.io/hostname": name, ZONE: zone,
                                    INSTANCE_TYPE: GPU_TYPE, CAPACITY_TYPE: billing, "inference": "tensorflow"}},
            "status": {"allocatable": resources, "capacity": resources}}


class Tidal:
    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("TIDAL_API", "TIDAL_TOKEN", "TIDAL_CONTEXT")}
        env["TIDAL_HOME"] = str(self.home)
        proc = subprocess.run([sys.executable, "-m", "tidal", *argv], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO_ROOT)
        if check and proc.returncode != 0:
            raise AssertionError(f"tidal {' '.join(argv)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
        return proc

    def json(self, *argv: str):
        return json.loads(self(*argv, "-o", "json").stdout)

    def events(self) -> list[dict]:
        return self.json("events", "--limit", "1000")


def use_context(home: Path, context: Context) -> None:
    """What `tidal context add` and `tidal context use` store (the reference test runs those commands)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = ContextStore(home, {})
    store.add(context)
    store.use(context.name)


def wait_for(what: str, cond, timeout: float = 60, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what} (last: {last!r})")


@pytest.fixture(scope="module")
def cluster(kube_cluster):
    """The GPU Nodes and a namespace of this module's own, removed afterwards."""
    from kubernetes import client, watch
    core = client.CoreV1Api(kube_cluster.api)
    ns = "tidal-ref"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    watcher = watch.Watch()
    for event in watcher.stream(core.list_namespaced_service_account, ns, timeout_seconds=30):
        if event["object"].metadata.name == "default":
            watcher.stop()
    for name, zone, billing in GPU_NODES:
        core.create_node(gpu_node(name, zone, billing))
    wait_for("the GPU Nodes are Ready", lambda: all(
        any(c.type == "Ready" and c.status == "True" for c in core.read_node(n).status.conditions or ())
        for n, _, _ in GPU_NODES), 60)
    yield kube_cluster, core, ns
    for name, _, _ in GPU_NODES:
        try:
            core.delete_node(name)
        except client.ApiException:
            pass
    core.delete_namespace(ns)


def pods_by_node(core, ns: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for p in core.list_namespaced_pod(ns, label_selector="serviceName=bert-tfserving").items:
        if p.metadata.deletion_timestamp is None:
            out.setdefault(p.spec.node_name or "", []).append(p)
    return out


def ready_pods(core, ns: str) -> list:
    return [p for pods in pods_by_node(core, ns).values() for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())]


def routed(home: Path) -> set[str]:
    """The hosts the gateway routes bert-tfserving's requests to (ready replicas), from its routes file."""
    from tidal.gateway.control import load_routes
    from tidal.gateway.supervisor import GatewayFiles
    return {r.host for s in load_routes(GatewayFiles.in_home(home).routes_file) if s.name == "bert-tfserving"
            for r in s.replicas if r.state == "ready"}


def billing_counts(core, ns: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in ready_pods(core, ns):
        billing = core.read_node(p.spec.node_name).metadata.labels[CAPACITY_TYPE]
        counts[billing] = counts.get(billing, 0) + 1
    return counts


def test_reference_procedure_on_kubernetes(cluster, tmp_path):
    kube, core, ns = cluster
    from kubernetes import client
    apps = client.AppsV1Api(kube.api)
    tidal = Tidal(tmp_path / "home")
    tidal("context", "add", "ack", "--kubernetes", "--kubeconfig", str(kube.kubeconfig), "--namespace", ns)
    tidal("context", "use", "ack")
    up = ("up", "--port", "0", "--gateway-port", "0", "--time-factor", "0.05")
    tidal(*up, timeout=90)
    try:
        # Step 1: the reference procedure's node pool (its nodes are the cluster's, claimed by the policy).
        tidal("nodepool", "create", "gpu-pool", "--label", "inference=tensorflow", "--spot",
              "--on-demand-percentage", "30", "--compensate-with-on-demand", "--spot-remedy",
              "--multi-zone", "cost-optimized", "--spot-pools", "2", "--instance-types", GPU_TYPE,
              "--max", "10", "--scale-in-after", "60", "--notice", "120")
        # Step 3: pvc.yaml, in the cluster (the PVC the pods mount) and in Tidal (the volume's keys).
        pvc = (REPO_ROOT / "examples" / "reference-procedure" / "pvc.yaml").read_text()
        pvc = (pvc.replace("<Your Bucket>", "seed-bucket").replace("<Your oss url>", "oss-cn-hangzhou.aliyuncs.com")
               .replace("<Your Access Key Id>", "LTAIkeyid0123456789")
               .replace("<Your Access Key Secret>", "SeCrEt0123456789xyz"))
        (tmp_path / "pvc.yaml").write_text(pvc)
        pv, claim = yaml.safe_load_all(pvc)
        core.create_persistent_volume(pv)
        core.create_namespaced_persistent_volume_claim(ns, claim)
        tidal("apply", "-f", str(tmp_path / "pvc.yaml"))
        wait_for("the PVC is bound", lambda: core.read_namespaced_persistent_volume_claim(
            "model-pvc", ns).status.phase == "Bound", 30)

        # Step 4: arena's command, verbatim.
        tidal("serve", "tensorflow", "--name=bert-tfserving", "--model-name=chnsenticorp",
              "--selector=inference=tensorflow", "--gpus=1", "--image=tensorflow/serving:1.15.0-gpu",
              "--data=model-pvc:/models", "--model-path=/models/tensorflow",
              "--version-policy=specific:1623831335")
        wait_for("one replica available", lambda: tidal.json("serve", "get", "bert-tfserving")["available"] >= 1)
        (pod,) = ready_pods(core, ns)
        spec = pod.spec
        assert spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
        assert [v.persistent_volume_claim.claim_name for v in spec.volumes if v.persistent_volume_claim] == \
            ["model-pvc"]
        # the volume's keys went to a Secret, never into the Deployment or Tidal's state
        assert "SeCrEt0123456789xyz" not in str(apps.list_namespaced_deployment(ns).to_dict())
        state = core.read_namespaced_config_map("tidal-state", ns)
        assert "SeCrEt0123456789xyz" not in str(state.to_dict())
        assert not (tmp_path / "home" / "state.db").exists() and not list((tmp_path / "home").glob("*.db"))

        # Step 5: the reference procedure's hpa.yaml, verbatim; then (no load reaches kwok's pods) its floor at
        # what 55 QPS at a target of 10 would ask, with the same autoscaler through `tidal autoscale`.
        tidal("apply", "-f", str(REPO_ROOT / "examples" / "reference-procedure" / "hpa.yaml"))
        tidal("autoscale", "bert-tfserving", "--min", "6", "--max", "10", "--target-qps", "10")
        od, spot = split(6, EssParams(on_demand_percentage=30))
        wait_for("6 pods Ready in the 30% on-demand mix", lambda: billing_counts(core, ns) ==
                 {"on-demand": od, "spot": spot} and tidal.json("serve", "get", "bert-tfserving")["available"] == 6,
                 90)
        top = tidal.json("top")  # Tidal's own view agrees with the cluster's: its nodes are the claimed Nodes
        assert "bert-tfserving" in json.dumps(top["services"])
        assert sorted(n["billing"] for n in top["nodes"] if n["state"] == "ready") == ["on-demand"] * od + ["spot"] * spot
        zones = sorted(core.read_node(p.spec.node_name).metadata.labels[ZONE] for p in ready_pods(core, ns)
                       if core.read_node(p.spec.node_name).metadata.labels[CAPACITY_TYPE] == "spot")
        assert zones == ["zone-a", "zone-a", "zone-b", "zone-b"]  # --spot-pools 2: spread over both zones
        pool = tidal.json("nodepool", "get", "gpu-pool")
        ready = [n for n in pool["nodes"] if n["state"] == "ready"]
        assert {n["name"] for n in ready} <= {n for n, _, _ in GPU_NODES}  # the cluster's own Nodes, claimed
        assert sum(n["billing"] == "spot" for n in ready) == spot

        # Step 8: a spot Node is interrupted: tainted first (Karpenter's disruption), deleted after.
        victim = next(node for node, pods in pods_by_node(core, ns).items()
                      if node and core.read_node(node).metadata.labels[CAPACITY_TYPE] == "spot")
        (old_pod,) = pods_by_node(core, ns)[victim]
        core.patch_node(victim, {"spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}})
        lowest = [6]

        def moved() -> bool:
            now_ready = ready_pods(core, ns)
            lowest[0] = min(lowest[0], len(now_ready))
            return victim not in pods_by_node(core, ns) and len(now_ready) == 6
        wait_for("the victim's pod replaced elsewhere and gone from it", moved, 60, interval=0.1)
        assert lowest[0] >= 5  # never below 5 Ready while it moved: the replacement came first
        # the gateway routes to the 6 Ready pods, and no longer to the one that left the victim
        wait_for("the gateway routes the new pods only", lambda: routed(tidal.home) == {
            p.status.pod_ip for p in ready_pods(core, ns)}, 30)
        assert old_pod.status.pod_ip not in routed(tidal.home)
        events = tidal.events()
        kinds = [(e["kind"], e["object"], e["message"]) for e in events]
        notice = next(i for i, (k, o, _) in enumerate(kinds) if k == "PreemptionNotice" and o == f"node/{victim}")
        assert "Karpenter" in kinds[notice][2]
        assert any(k == "ControlPlaneStarted" and f"Kubernetes context ack (namespace {ns})" in m for k, _, m in kinds)
        drained = next(i for i, (k, _, m) in enumerate(kinds) if i > notice and k in ("ReplicaDraining", "ReplicaDrain",
                                                                                      "ReplicaStopped"))
        assert any(k == "ReplicaReady" for k, _, _ in kinds[notice:drained]), kinds[notice:]
        core.delete_node(victim)
        wait_for("the victim is no longer in the pool", lambda: victim not in {
            n["name"] for n in tidal.json("nodepool", "get", "gpu-pool")["nodes"] if n["state"] != "terminated"}, 30)
        wait_for("the mix holds after the interruption",
                 lambda: billing_counts(core, ns) == {"on-demand": od, "spot": spot}, 60)
        assert old_pod.metadata.name not in {p.metadata.name for p in ready_pods(core, ns)}

        # A restarted control plane picks up where it was: its state is the ConfigMap, nothing is duplicated.
        before = tidal.json("serve", "get", "bert-tfserving")
        pods_before = {p.metadata.name for p in ready_pods(core, ns)}
        address = json.loads((tmp_path / "home" / "address.json").read_text())
        os.kill(address["pid"], signal.SIGKILL)
        wait_for("the control plane is gone", lambda: not Path(f"/proc/{address['pid']}").exists(), 10)
        tidal(*up, timeout=90)
        after = wait_for("the restarted control plane adopted the replicas", lambda: (
            s := tidal.json("serve", "get", "bert-tfserving"))["available"] == 6 and s, 30)
        assert {r["name"] for r in after["replicas"]} == {r["name"] for r in before["replicas"]}
        time.sleep(2)  # several passes at a 0.25 s tick: nothing new may start
        assert {p.metadata.name for p in ready_pods(core, ns)} == pods_before
        assert sum(d.spec.replicas for d in apps.list_namespaced_deployment(ns).items) == 6
        adopted = [e for e in tidal.events() if e["kind"] == "ReplicaAdopted"]
        assert len(adopted) == 6

        # A Node that goes without notice (deleted outright): its replica is replaced as soon as the watch sees it.
        lost = next(node for node, pods in pods_by_node(core, ns).items() if node)
        core.delete_node(lost)
        wait_for("the lost Node's replica replaced", lambda: lost not in pods_by_node(core, ns)
                 and billing_counts(core, ns) == {"on-demand": od, "spot": spot}, 60)
        assert any(e["message"].find(f"{lost} left the cluster") >= 0 or (
            e["object"] == f"node/{lost}" and "left the cluster" in e["message"]) for e in tidal.events())

        # Deleting the service removes its objects from the cluster.
        tidal("serve", "delete", "bert-tfserving")
        wait_for("the service's Deployments gone", lambda: not apps.list_namespaced_deployment(ns).items, 60)
    finally:
        tidal("down", check=False, timeout=60)


def test_unschedulable_spot_pods_fall_back_to_on_demand(cluster, tmp_path):
    """A spot launch the cluster cannot honour (no spot Node with the pool's labels): its pod stays unschedulable,
    which after a bounded time counts as a refused launch, and ESS compensates with on-demand as it does locally."""
    kube, core, ns = cluster
    from kubernetes import client
    fallback = [("fb-od-a-1", "zone-a", "on-demand")]
    for name, zone, billing in fallback:
        body = gpu_node(name, zone, billing)
        body["metadata"]["labels"]["inference"] = "fallback"
        core.create_node(body)
    tidal = Tidal(tmp_path / "home")
    fb_ns = "tidal-fallback"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": fb_ns}})
    wait_for("the namespace's default ServiceAccount", lambda: any(
        a.metadata.name == "default" for a in core.list_namespaced_service_account(fb_ns).items), 30)
    try:
        use_context(tidal.home, Context(name="fb", kind=ContextKind.KUBERNETES, kubeconfig=str(kube.kubeconfig),
                                        namespace=fb_ns))
        tidal("up", "--port", "0", "--gateway-port", "0", "--time-factor", "0.05", timeout=90)
        tidal("nodepool", "create", "fb-pool", "--label", "inference=fallback", "--spot", "--on-demand-percentage",
              "0", "--compensate-with-on-demand", "--instance-types", GPU_TYPE, "--zones", "zone-a", "--max", "4")
        tidal("serve", "tensorflow", "--name=fb", "--model-name=fb", "--selector=inference=fallback", "--gpus=1",
              "--model-path=s3://models/fb", "--image=tensorflow/serving:2.16.1")

        def on_demand_ready():
            for p in core.list_namespaced_pod(fb_ns, label_selector="serviceName=fb").items:
                ready = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())
                if ready and p.spec.node_name == "fb-od-a-1":
                    return p
            return None
        wait_for("the replica runs on on-demand after the spot launch was refused", on_demand_ready, 60)
        events = [(e["kind"], e["message"]) for e in tidal.events()]
        assert any(k == "ReplicaFailed" and "found no spot Node in zone-a" in m for k, m in events), events
        assert any(k == "NodeLaunchFailed" and "no spot capacity" in m for k, m in events), events
        svc = tidal.json("serve", "get", "fb")
        assert svc["available"] == 1
        billing = {n["name"]: n["billing"] for n in tidal.json("nodepool", "get", "fb-pool")["nodes"]
                   if n["state"] == "ready"}
        assert billing.get("fb-od-a-1") == "on-demand"
    finally:
        tidal("down", check=False, timeout=60)
        for name, _, _ in fallback:
            try:
                core.delete_node(name)
            except client.ApiException:
                pass
        core.delete_namespace(fb_ns)


@pytest.fixture
def no_rights_kubeconfig(cluster, tmp_path):
    """A ServiceAccount's token with no RoleBinding: it authenticates, and may do nothing in the namespace."""
    kube, core, ns = cluster
    core.create_namespaced_service_account(ns, {"metadata": {"name": "nobody"}})
    token = core.create_namespaced_service_account_token("nobody", ns, {"spec": {"expirationSeconds": 600}})
    config = yaml.safe_load(kube.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": token.status.token}
    path = tmp_path / "nobody.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield path
    core.delete_namespaced_service_account("nobody", ns)


@pytest.fixture
def namespaced_kubeconfig(cluster, tmp_path):
    """A ServiceAccount that may edit its namespace (a RoleBinding to `edit`) and nothing cluster-wide."""
    from kubernetes import client
    kube, core, ns = cluster
    core.create_namespaced_service_account(ns, {"metadata": {"name": "tenant"}})
    rbac = client.RbacAuthorizationV1Api(kube.api)
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "tenant-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}]})
    token = core.create_namespaced_service_account_token("tenant", ns, {"spec": {"expirationSeconds": 600}})
    config = yaml.safe_load(kube.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": token.status.token}
    path = tmp_path / "tenant.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield path
    rbac.delete_namespaced_role_binding("tenant-edit", ns)
    core.delete_namespaced_service_account("tenant", ns)


@pytest.mark.parametrize("case, message", [
    ("kubeconfig", "does not work"),
    ("rights", "no rights"),
    ("nodes", "needs get, list and watch on nodes"),
    ("provider", "no Node carries eks.amazonaws.com/capacityType"),
])
def test_bad_clusters_are_one_line_and_leave_nothing(cluster, tmp_path, request, case, message):
    kube, core, ns = cluster
    tidal = Tidal(tmp_path / "home")
    kubeconfig, provider = str(kube.kubeconfig), "karpenter"
    if case == "kubeconfig":
        kubeconfig = str(tmp_path / "broken.kubeconfig")
        Path(kubeconfig).write_text("apiVersion: v1\nkind: Config\nclusters: [}\n")
    elif case == "rights":
        kubeconfig = str(request.getfixturevalue("no_rights_kubeconfig"))
    elif case == "nodes":
        kubeconfig = str(request.getfixturevalue("namespaced_kubeconfig"))
    else:
        provider = "eks"
    use_context(tidal.home, Context(name="bad", kind=ContextKind.KUBERNETES, kubeconfig=kubeconfig, namespace=ns,
                                    provider=provider))
    before = {c.metadata.name for c in core.list_namespaced_config_map(ns).items}
    proc = tidal("up", "--port", "0", "--gateway-port", "0", check=False, timeout=90)
    assert proc.returncode != 0
    lines = (proc.stderr + proc.stdout).strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0], proc.stderr + proc.stdout
    # nothing half-applied: no state written, no control plane left running
    assert {c.metadata.name for c in core.list_namespaced_config_map(ns).items} == before
    assert not (tmp_path / "home" / "address.json").exists()
