"""The Kubernetes backend against a real control plane: replicas become pods of per-slice Deployments on kwok's
spot and on-demand nodes, are observed ready, scale, stop, are adopted after a restart, and go with their service."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.kube.cluster import CAPACITY_TYPE, ZONE
from tidal.backends.base import ReplicaLaunch, ReplicaPhase
from tidal.backends.kubernetes.backend import KubernetesBackend, KubernetesError
from tidal.backends.kubernetes.render import RenderOptions
from tidal.spec import ServiceSpec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT_S = 60


class Harness:
    def __init__(self, kube_cluster, namespace: str) -> None:
        from kubernetes import client
        self.ns = namespace
        self.core = client.CoreV1Api(kube_cluster.api)
        self.apps = client.AppsV1Api(kube_cluster.api)
        self.spec = ServiceSpec(name="bert", version="v1", model_path="/models/bert", cpu=0.5, memory_mib=512,
                                image="tensorflow/serving:2.16.1", env={"MODEL_LOG": "info"})
        self.specs = {self.spec.name: self.spec}
        self.api = kube_cluster.api

    def backend(self) -> KubernetesBackend:
        return KubernetesBackend(self.api, self.ns, self.specs.__getitem__, RenderOptions(namespace=self.ns))

    def launch(self, replica: str, node: str, env: dict | None = None) -> ReplicaLaunch:
        return ReplicaLaunch(replica=replica, service="bert", node=node, model_name="bert",
                             model_base_path="s3://models/bert", version_policy="latest", gpus=0, env=env or {})

    def until(self, what: str, done: Callable[[], bool], backend: KubernetesBackend | None = None) -> None:
        """Check `done` after every change a watch sees (the backend's own, or the namespace's pods) until it holds."""
        import time

        from kubernetes import watch
        if backend is not None:
            deadline = time.monotonic() + WAIT_S
            seen = backend.changes
            while not done():
                if time.monotonic() > deadline:
                    pytest.fail(f"timed out after {WAIT_S} s waiting for {what}")
                seen = backend.wait_change(seen, deadline - time.monotonic())
            return
        # Watch from the version listed before the check, so a change between the two is not missed.
        version = self.core.list_namespaced_pod(self.ns).metadata.resource_version
        if done():
            return
        watcher = watch.Watch()
        for _ in watcher.stream(self.core.list_namespaced_pod, self.ns, resource_version=version,
                                timeout_seconds=WAIT_S):
            if done():
                watcher.stop()
                return
        if not done():
            pytest.fail(f"timed out after {WAIT_S} s waiting for {what}")

    def pod_node(self, name: str):
        pod = self.core.read_namespaced_pod(name, self.ns)
        return self.core.read_node(pod.spec.node_name).metadata.labels


@pytest.fixture
def h(kube_cluster, namespace) -> Harness:
    return Harness(kube_cluster, namespace)


def test_replicas_on_spot_and_on_demand_slices(h):
    backend = h.backend()
    refs = {}
    started = backend.start_replica(h.launch("r1", "ondemand-a-1", env={"SECRET_KEY": "s3cr3t"}))
    refs["r1"] = started.ref
    assert started.ref["deployment"] == "bert-v1-tensorflow-serving-on-demand-zone-a"

    def all_ready() -> bool:
        status = backend.observe(refs)
        return all(s.phase is ReplicaPhase.READY for s in status.values())

    h.until("r1 ready", all_ready, backend)
    status = backend.observe(refs)["r1"]
    assert status.endpoint and status.endpoint.endswith(":8501")
    pod = backend._claims["r1"]
    assert h.pod_node(pod)[CAPACITY_TYPE] == "on-demand" and h.pod_node(pod)[ZONE] == "zone-a"
    # credentials went to a Secret, not into the Deployment's text
    dep = h.apps.read_namespaced_deployment(refs["r1"]["deployment"], h.ns)
    assert "s3cr3t" not in str(dep.to_dict())
    assert dep.spec.template.spec.containers[0].env_from[0].secret_ref.name == "bert-v1-tensorflow-serving-env"
    # the path the control plane resolved (no PVC here), given to TF Serving's own binary in the user's image
    container = dep.spec.template.spec.containers[0]
    assert container.command == ["tensorflow_model_server"] and "--model_base_path=s3://models/bert" in container.args

    # scale to 3: two more on spot, one per zone
    refs["r2"] = backend.start_replica(h.launch("r2", "spot-a-1")).ref
    refs["r3"] = backend.start_replica(h.launch("r3", "spot-b-1")).ref
    h.until("3 replicas ready", all_ready, backend)
    for replica, zone in (("r2", "zone-a"), ("r3", "zone-b")):
        labels = h.pod_node(backend._claims[replica])
        assert labels[CAPACITY_TYPE] == "spot" and labels[ZONE] == zone
    assert len({backend._claims[r] for r in refs}) == 3
    endpoints = {s.endpoint for s in backend.observe(refs).values()}
    assert len(endpoints) == 3

    # a second replica in a slice shares its Deployment
    refs["r4"] = backend.start_replica(h.launch("r4", "spot-a-1")).ref
    assert refs["r4"]["deployment"] == refs["r2"]["deployment"]
    h.until("4 replicas ready", all_ready, backend)
    assert h.apps.read_namespaced_deployment(refs["r2"]["deployment"], h.ns).spec.replicas == 2

    # kwok's kubelets serve no logs: one line, no traceback
    with pytest.raises(KubernetesError) as err:
        backend.logs("r1")
    assert "\n" not in str(err.value) and backend._claims["r1"] in str(err.value), str(err.value)

    # stop r2: exactly its pod goes, r4 keeps its own
    r2_pod, r4_pod = backend._claims["r2"], backend._claims["r4"]
    backend.stop_replica("r2", refs.pop("r2"), grace_seconds=0)

    def r2_gone() -> bool:
        names = {p.metadata.name for p in h.core.list_namespaced_pod(h.ns).items}
        return r2_pod not in names
    h.until("r2's pod deleted", r2_gone)
    assert h.apps.read_namespaced_deployment(refs["r4"]["deployment"], h.ns).spec.replicas == 1
    assert backend.observe(refs)["r4"].phase is ReplicaPhase.READY and backend._claims["r4"] == r4_pod

    # a restarted control plane adopts what runs, and shrinks what it has no record of
    h.apps.patch_namespaced_deployment_scale(refs["r3"]["deployment"], h.ns, {"spec": {"replicas": 2}})
    again = h.backend()
    adoption = again.adopt(refs)
    assert adoption.running == frozenset(refs)
    assert [name for name, _ in adoption.removed] == [refs["r3"]["deployment"]]
    assert h.apps.read_namespaced_deployment(refs["r3"]["deployment"], h.ns).spec.replicas == 1
    h.until("adopted replicas observed ready", lambda: all(
        s.phase is ReplicaPhase.READY for s in again.observe(refs).values()), again)

    # deleting the service deletes everything it owns (the garbage collector follows the owner references)
    again.delete_service("bert")

    def all_gone() -> bool:
        return (not h.apps.list_namespaced_deployment(h.ns).items and not h.core.list_namespaced_pod(h.ns).items
                and not [s for s in h.core.list_namespaced_secret(h.ns).items if s.metadata.name.startswith("bert")])
    h.until("the service's objects deleted", all_gone)
    h.until("the replicas observed exited", lambda: {s.phase for s in again.observe(refs).values()}
            == {ReplicaPhase.EXITED}, again)
    again.close()
    backend.close()


def test_unschedulable_and_bad_nodes_are_one_line(h):
    backend = h.backend()
    with pytest.raises(KubernetesError, match="node no-such-node: not found"):
        backend.start_replica(h.launch("r1", "no-such-node"))
    big = h.spec.model_copy(update={"cpu": 64.0})  # no kwok node has 64 CPUs
    h.specs["bert"] = big
    ref = backend.start_replica(h.launch("r1", "spot-a-1")).ref
    h.until("r1 unschedulable", lambda: "unschedulable" in backend.observe({"r1": ref})["r1"].reason, backend)
    status = backend.observe({"r1": ref})["r1"]
    assert status.phase is ReplicaPhase.STARTING and "Insufficient cpu" in status.reason
    backend.close()
