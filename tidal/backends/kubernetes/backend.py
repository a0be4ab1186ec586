"""The Kubernetes backend: replicas are pods of one Deployment per placement slice (service x billing x zone).

Why a Deployment per slice rather than one per service or bare pods: Tidal's capacity policy decides how many
replicas run on spot and on-demand capacity in which zone, and a slice's Deployment says exactly that with node
affinity and tolerations, while Kubernetes keeps doing what it already does well (recreating a pod that dies,
rolling out a new template, garbage-collecting). Tidal counts a slice's replicas and server-side applies the
count; which pod a Tidal replica is stays Tidal's own bookkeeping (a claim on a pod of its slice), and a replica
that stops is the pod the ReplicaSet deletes, steered there with the pod-deletion-cost annotation.

Every object of a release is owned by its Kubernetes Service (owner references, the arena-named workload
`{name}-{version}-tensorflow-serving`), so deleting that one object lets the cluster's garbage collector remove
the rest. During a rollout a service runs two releases, each from its own spec (tidal.control.releases), so each
gets its own Service, Deployments per slice and pods; the gateway weighs them. When the last replica of a release
that is no longer wanted stops (the stable one after a promotion, the canary after a rollback, the old one after
an update), its Service goes and with it its Deployments. Tidal makes no Nodes: the cluster's own provisioner
(Karpenter, a cluster autoscaler) does; under the control plane, node pools claim the cluster's Nodes
(provisioner.py) and the cluster step (tidal.control.decide.cluster) follows them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tidal.backends.base import Adoption, ReplicaLaunch, ReplicaPhase, ReplicaRef, ReplicaStatus, StartedReplica
from tidal.backends.kubernetes import render
from tidal.backends.kubernetes.client import FIELD_MANAGER, TIMEOUT_S, describe_failure
from tidal.backends.kubernetes.informer import Informer, InformerError
from tidal.backends.kubernetes.pods import PodView, assign, pod_view, replica_status
from tidal.backends.kubernetes.render import Placement, RenderOptions
from tidal.control import releases
from tidal.control.decide.cluster import ClusterView
from tidal.errors import NotFound, TidalError
from tidal.spec import ServiceSpec

if TYPE_CHECKING:
    from tidal.backends.kubernetes.provisioner import KubernetesProvisioner

log = logging.getLogger(__name__)

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"  # the ReplicaSet deletes the lowest first
STOPPING_COST = "-1000000"


class KubernetesError(TidalError):
    """The API refused or could not be reached: the message is one line."""


@dataclass
class _Slice:
    deployment: str
    service: str
    placement: Placement
    members: set[str]
    workload: str = ""      # its release's Service (the owner): the Deployment's name without the slice


def _workload(ref: ReplicaRef) -> str:
    deployment, piece = ref.get("deployment", ""), ref.get("slice", "")
    return ref.get("workload") or (deployment[:-(len(piece) + 1)] if piece else deployment)


class KubernetesBackend:

    def __init__(self, api: Any, namespace: str, spec_of: Callable[[str], ServiceSpec],
                 options: RenderOptions | None = None,
                 placement_of: Callable[[ReplicaLaunch], Placement] | None = None, owns_api: bool = False,
                 provisioner: "KubernetesProvisioner | None" = None,
                 changed: threading.Condition | None = None,
                 rollout_of: Callable[[str], "releases.Rollout | None"] | None = None) -> None:
        from kubernetes import client, dynamic
        self.api = api
        self.owns_api = owns_api  # close() closes the client only when it was made for this backend
        self.ns = namespace
        self.spec_of = spec_of
        self.rollout_of = rollout_of or (lambda service: None)  # a service's rollout: which spec each release runs
        self.opts = options or RenderOptions(namespace=namespace)
        if self.opts.namespace != namespace:
            raise ValueError("the render options' namespace must be the backend's")
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.dynamic = dynamic.DynamicClient(api)
        # With a provisioner (the control plane's node pools claim the cluster's Nodes), a replica's slice is its
        # node's; without one (a caller that names cluster Nodes), the Node's own labels say it.
        self.provisioner = provisioner
        self.placement_of = placement_of or (provisioner.placement if provisioner else self.node_placement)
        self._lock = threading.Lock()
        self._slices: dict[str, _Slice] = {}      # deployment name -> its replicas
        self._claims: dict[str, str] = {}         # replica -> pod name
        self._applied: set[str] = set()           # Deployments this backend applied (the watch may lag behind)
        # Watches, not polling: pods and Deployments are followed from the first call that needs them.
        self._changed = changed or threading.Condition(threading.RLock())
        self.pods = Informer(self.core.list_namespaced_pod, namespace, f"app={render.APP},{render.SLICE_LABEL}",
                             "pods", self._changed)
        self.deployments = Informer(self.apps.list_namespaced_deployment, namespace, f"{render.MANAGED_BY}=tidal",
                                    "Deployments", self._changed)

    @classmethod
    def for_context(cls, context, spec_of: Callable[[str], ServiceSpec],
                    options: RenderOptions | None = None) -> "KubernetesBackend":
        """A backend for a Kubernetes context, after checking that the cluster answers and the namespace is usable."""
        from tidal.backends.kubernetes.client import api_client, check_access
        if not context.is_kubernetes:
            raise KubernetesError(f"context {context.name} is not a Kubernetes context")
        api = api_client(context)
        try:
            version = check_access(context, api)
        except BaseException:
            api.close()
            raise
        opts = options or RenderOptions(namespace=context.namespace, image=context.image or RenderOptions.image,
                                        labels=context.node_labels(),
                                        prestop_exec=render.prestop_exec_for(version))
        return cls(api, context.namespace, spec_of, opts, owns_api=True)

    # -- placement --------------------------------------------------------------------------------------------

    def node_placement(self, launch: ReplicaLaunch) -> Placement:
        """The slice of the node the control plane chose: its capacity type and zone (the preset's labels)."""
        node = self._call(f"node {launch.node}", self.core.read_node, launch.node)
        labels = node.metadata.labels or {}
        names = self.opts.labels
        value = labels.get(names.capacity_label)
        if value in names.spot_values:
            billing = "spot"
        elif value == names.on_demand_value or (not names.on_demand_value and value is None):
            billing = "on-demand"
        else:
            raise KubernetesError(f"node {launch.node} has no {names.capacity_label} label of "
                                  f"{names.spot_value!r} or {names.on_demand_value!r} (got {value!r}): "
                                  f"is the provider preset the cluster's?")
        return Placement(billing, labels.get(names.zone_label, ""))

    # -- API helpers ------------------------------------------------------------------------------------------

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, _request_timeout=TIMEOUT_S, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one line, whatever the client raised
            raise KubernetesError(describe_failure(exc, what)) from None

    def _apply(self, body: dict) -> dict:
        """Server-side apply under Tidal's field manager; Tidal is the authority on what it applies."""
        kind = body["kind"]
        name = body["metadata"]["name"]
        try:
            resource = self.dynamic.resources.get(api_version=body["apiVersion"], kind=kind)
            out = self.dynamic.server_side_apply(resource, body=body, namespace=self.ns, field_manager=FIELD_MANAGER,
                                                 force_conflicts=True, _request_timeout=TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            raise KubernetesError(describe_failure(exc, f"applying {kind} {name}")) from None
        return out.to_dict()

    # -- replicas ---------------------------------------------------------------------------------------------

    def _ensure_service(self, spec: ServiceSpec, env: dict[str, str], config_path: str) -> tuple[list[dict], str | None]:
        """The objects every slice shares, applied: the Service (the owner), ConfigMap, env Secret, PDB."""
        owner = self._apply(render.service(spec, self.opts))
        owners = [render.owner_reference(owner)]
        user_config = None
        if config_path:
            try:
                user_config = Path(config_path).read_text()
            except OSError as exc:
                raise KubernetesError(f"cannot read the model config file {config_path}: {exc.strerror}") from None
        config = render.model_config_text(spec, user_config)
        if config is not None:
            self._apply(render.config_map(spec, self.opts, config, owners))
        if env:  # credentials among them: a Secret, never the Deployment's text
            self._apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                         "metadata": {"name": self._env_secret(spec), "namespace": self.ns,
                                      "labels": render.object_labels(spec), "ownerReferences": owners},
                         "stringData": dict(env)})
        self._apply(render.disruption_budget(spec, self.opts, owners))
        return owners, config

    @staticmethod
    def _env_secret(spec: ServiceSpec) -> str:
        return f"{spec.workload}-env"

    def release_spec(self, service: str, release: str) -> ServiceSpec:
        """The spec release `release` of `service` runs: during a rollout the canary's for the canary."""
        return releases.release_spec(self.spec_of(service), self.rollout_of(service), release)

    def _wanted(self, service: str) -> set[str]:
        """The workloads (one per release) `service` runs now: its own, and an active rollout's canary."""
        spec, rollout = self.spec_of(service), self.rollout_of(service)
        return {spec.workload} | ({rollout.canary.workload} if rollout is not None and rollout.active else set())

    def start_replica(self, launch: ReplicaLaunch) -> StartedReplica:
        self._watching()
        spec = self.release_spec(launch.service, launch.release)
        placement = self.placement_of(launch)
        owners, config = self._ensure_service(spec, launch.env, launch.model_config_file)
        name = render.deployment_name(spec, placement)
        with self._lock:
            piece = self._slices.setdefault(name, _Slice(name, spec.name, placement, set(), spec.workload))
            piece.members.add(launch.replica)
            count = len(piece.members)
        opts = self.opts
        if launch.env:
            opts = RenderOptions(**{**vars(self.opts), "env_secret": self._env_secret(spec)})
        # With --data, the model path is inside a PVC mounted in the pod, not where this machine resolved it.
        base_path = None if spec.data else (launch.model_base_path or None)
        try:
            self._apply(render.deployment(spec, opts, count, config, placement, owners, model_base_path=base_path))
        except KubernetesError:
            with self._lock:
                piece.members.discard(launch.replica)
            raise
        with self._lock:
            self._applied.add(name)
        ref = {"namespace": self.ns, "deployment": name, "service": spec.name, "slice": placement.name,
               "billing": placement.billing, "zone": placement.zone, "release": spec.release,
               "workload": spec.workload}
        return StartedReplica(ref=ref, endpoint="")  # the pod's IP comes with observe_replicas

    def _scale(self, deployment: str, count: int) -> None:
        self._call(f"scaling Deployment {deployment}", self.apps.patch_namespaced_deployment_scale, deployment,
                   self.ns, {"spec": {"replicas": count}}, field_manager=FIELD_MANAGER)

    def stop_replica(self, replica: str, ref: ReplicaRef | None, grace_seconds: float) -> None:
        deployment = (ref or {}).get("deployment")
        with self._lock:
            piece = self._slices.get(deployment) if deployment else None
            if piece is not None:
                piece.members.discard(replica)
            pod = self._claims.pop(replica, None)
            count = len(piece.members) if piece else None
        if pod:
            # The ReplicaSet removes the pod with the lowest deletion cost when it scales down: this one.
            try:
                self.core.patch_namespaced_pod(pod, self.ns, {"metadata": {"annotations": {DELETION_COST: STOPPING_COST}}},
                                               _request_timeout=TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - gone already is fine; anything else is logged
                if getattr(exc, "status", None) != 404:
                    log.warning("%s", describe_failure(exc, f"marking pod {pod}"))
        if deployment and count is not None:
            self._scale(deployment, count)
        if pod:
            try:  # the grace Tidal asks for, which may be shorter than the template's
                self.core.delete_namespaced_pod(pod, self.ns, grace_period_seconds=max(int(grace_seconds), 0),
                                                _request_timeout=TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status", None) != 404:
                    log.warning("%s", describe_failure(exc, f"deleting pod {pod}"))
        if ref and deployment:
            self._collect(ref["service"], _workload(ref))

    def _collect(self, service: str, workload: str) -> None:
        """The last replica of a release no longer wanted has stopped (its service deleted, a promoted canary's
        old stable release, a rolled-back canary, the release before an update): its objects go (the Service
        owns the rest, so the garbage collector removes them)."""
        with self._lock:
            if any(s.members for s in self._slices.values() if s.service == service and s.workload == workload):
                return
        try:
            if workload in self._wanted(service):
                return  # still wanted (scaled to zero, or a replica on its way)
        except NotFound:
            pass
        except Exception:  # noqa: BLE001 - unknown: keep the objects
            return
        try:
            self.core.delete_namespaced_service(workload, self.ns, propagation_policy="Background",
                                                _request_timeout=TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) != 404:
                log.warning("%s", describe_failure(exc, f"deleting Service {workload}"))
            return
        with self._lock:
            for dep in [d for d, s in self._slices.items() if s.service == service and s.workload == workload]:
                self._slices.pop(dep)
                self._applied.discard(dep)

    def _watching(self) -> None:
        self.pods.start()
        self.deployments.start()
        if self.provisioner is not None:
            self.provisioner.nodes.start()

    def _list_pods(self) -> tuple[list[PodView], set[str]]:
        """Tidal's pods in the namespace and the Deployments that exist, as the watches see them now."""
        self._watching()
        try:
            pods, _ = self.pods.snapshot()
            deployments, deleted = self.deployments.snapshot()
        except InformerError as exc:
            raise KubernetesError(str(exc)) from None
        with self._lock:
            # one this backend just applied exists, even before its watch event arrives, unless seen deleted
            exists = set(deployments) | (self._applied - deleted)
        return [pod_view(p) for p in pods.values()], exists

    def observe(self, refs: dict[str, ReplicaRef]) -> dict[str, ReplicaStatus]:
        pods, deployments = self._list_pods()
        out: dict[str, ReplicaStatus] = {}
        by_slice: dict[str, list[str]] = {}
        for replica, ref in refs.items():
            if ref.get("deployment") not in deployments:
                out[replica] = ReplicaStatus(ReplicaPhase.EXITED, f"Deployment {ref.get('deployment')} is gone")
            else:
                by_slice.setdefault(ref["deployment"], []).append(replica)
        with self._lock:
            for deployment, replicas in by_slice.items():
                slice_name = refs[replicas[0]]["slice"]
                mine = [p for p in pods if p.slice == slice_name and p.release_of(refs[replicas[0]])]
                claims = assign(sorted(replicas), mine, {r: self._claims.get(r) for r in replicas})
                for replica in replicas:
                    pod = claims.get(replica)
                    if pod is None:
                        self._claims.pop(replica, None)
                    else:
                        self._claims[replica] = pod.name
                    out[replica] = replica_status(pod, self._port(refs[replica]))
        return out

    def cluster_view(self) -> ClusterView | None:
        """What the control plane's cluster step reads: the Nodes (watched), their signals, where pods run."""
        if self.provisioner is None:
            return None
        self._watching()
        try:
            views, deleted = self.provisioner.nodes.snapshot()
            pods, _ = self.pods.snapshot()
        except InformerError as exc:
            raise KubernetesError(str(exc)) from None
        by_name = {name: pod_view(p) for name, p in pods.items()}
        with self._lock:
            claims = {r: by_name[p] for r, p in self._claims.items() if p in by_name}
            provisional = frozenset(n for n, c in self.provisioner.claims.items() if not c.cluster_node)
        return ClusterView(present=frozenset(views), deleted=deleted,
                           signals={n: v.signal for n, v in views.items() if v.signal},
                           provisional=provisional,
                           pod_nodes={r: p.node for r, p in claims.items() if p.node},
                           unschedulable={r: p.unschedulable for r, p in claims.items() if p.unschedulable})

    @property
    def changes(self) -> int:
        """How many changes the watches have seen (to wait for the next with `wait_change`)."""
        return self.pods.changes + self.deployments.changes

    def wait_change(self, after: int, timeout: float) -> int:
        """Block until the watches have seen more than `after` changes, or `timeout` passes; returns the count."""
        self._watching()
        with self._changed:
            self._changed.wait_for(lambda: self.changes > after, timeout)
            return self.changes

    def wait_change_any(self, after: int, nodes, timeout: float) -> int:
        """Like `wait_change`, counting the Nodes' watch too (it shares this backend's condition)."""
        self._watching()
        with self._changed:
            self._changed.wait_for(lambda: self.changes + nodes.changes > after, timeout)
            return self.changes + nodes.changes

    def _port(self, ref: ReplicaRef) -> int:
        try:
            return self.spec_of(ref["service"]).restful_port
        except Exception:  # noqa: BLE001 - a service deleted meanwhile: TF Serving's default
            return 8501

    async def observe_replicas(self, refs: dict[str, ReplicaRef],
                               known_ready: frozenset[str] = frozenset()) -> dict[str, ReplicaStatus]:
        return await asyncio.to_thread(self.observe, refs)

    def adopt(self, refs: dict[str, ReplicaRef]) -> Adoption:
        """Rebuild the slices from the recorded replicas; a Deployment running more than Tidal records shrinks."""
        deployments = self._call("listing Deployments", self.apps.list_namespaced_deployment, self.ns,
                                 label_selector=f"{render.MANAGED_BY}=tidal,{render.SLICE_LABEL}")
        existing = {d.metadata.name: d for d in deployments.items}
        running: set[str] = set()
        with self._lock:
            for replica, ref in refs.items():
                name = ref.get("deployment")
                if name in existing:
                    running.add(replica)
                    piece = self._slices.setdefault(name, _Slice(name, ref["service"],
                                                                 Placement(ref["billing"], ref.get("zone", "")),
                                                                 set(), _workload(ref)))
                    piece.members.add(replica)
            counts = {name: len(s.members) for name, s in self._slices.items()}
        removed: list[tuple[str, str]] = []
        for name, d in existing.items():
            want = counts.get(name, 0)
            if (d.spec.replicas or 0) > want:
                self._scale(name, want)
                removed.append((name, f"Deployment {name} scaled from {d.spec.replicas} to {want} "
                                      f"(replicas Tidal has no record of)"))
        return Adoption(running=frozenset(running), removed=tuple(removed))

    def logs(self, replica: str, tail: int = 100) -> str:
        pod = self._claims.get(replica)
        if pod is None:
            return ""
        try:
            return self.core.read_namespaced_pod_log(pod, self.ns, container="serving", tail_lines=tail,
                                                     _request_timeout=TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - e.g. a node whose kubelet serves no logs
            raise KubernetesError(describe_failure(exc, f"logs of pod {pod}")) from None

    def delete_service(self, name: str) -> None:
        """Delete the Kubernetes Service of each of the service's releases; the garbage collector removes what
        they own."""
        workloads = self._wanted(name)
        with self._lock:
            workloads |= {s.workload for s in self._slices.values() if s.service == name and s.workload}
        for workload in sorted(workloads):
            try:
                self.core.delete_namespaced_service(workload, self.ns, propagation_policy="Background",
                                                    _request_timeout=TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status", None) != 404:
                    raise KubernetesError(describe_failure(exc, f"deleting Service {workload}")) from None
        with self._lock:
            self._applied -= {d for d, s in self._slices.items() if s.service == name}
            for dep in [d for d, s in self._slices.items() if s.service == name]:
                for replica in self._slices.pop(dep).members:
                    self._claims.pop(replica, None)

    def close(self) -> None:
        self.pods.stop()
        self.deployments.stop()
        if self.provisioner is not None:
            self.provisioner.nodes.stop()
        if self.owns_api:
            self.api.close()
