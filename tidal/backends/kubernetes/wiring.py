"""The control plane on a Kubernetes context: its store (a ConfigMap), the watched Nodes, node pools and backend.

`connect` checks everything it can before anything is written: the kubeconfig works, the namespace exists and
its Pods may be listed, and the cluster's Nodes carry the provider preset's labels (capacity type and zone).
Each failure is one line, and nothing is applied in the cluster until all pass.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from tidal.backends.kubernetes.backend import KubernetesBackend
from tidal.backends.kubernetes.client import api_client, check_access
from tidal.backends.kubernetes.contexts import Context
from tidal.backends.kubernetes.informer import InformerError
from tidal.backends.kubernetes.nodes import ClusterNodes, NodeView
from tidal.backends.kubernetes.provisioner import KubernetesProvisioner, cluster_catalog
from tidal.backends.kubernetes.render import NodeLabels, RenderOptions, prestop_exec_for
from tidal.backends.kubernetes.state import ClusterStore, StateError
from tidal.capacity.catalog import Catalog
from tidal.control import releases
from tidal.errors import UserError


def check_labels(context: Context, names: NodeLabels, views: dict[str, NodeView]) -> None:
    """One clear line when the cluster's Nodes do not say spot/on-demand or zone the way the preset expects."""
    where = f"context {context.name}"
    if not views:
        raise UserError(f"{where}: the cluster has no Nodes")
    if names.on_demand_value and not any(v.billing for v in views.values()):
        raise UserError(f"{where}: no Node carries {names.capacity_label}={names.spot_value} or "
                        f"={names.on_demand_value}: is --provider {context.provider} the cluster's provisioner? "
                        f"(tidal context add ... --provider)")
    if not any(v.zone for v in views.values()):
        raise UserError(f"{where}: no Node carries {names.zone_label}: Tidal's node pools place by zone")


@dataclass
class Cluster:
    """What the control plane uses on a Kubernetes context."""
    context: Context
    api: Any
    store: ClusterStore
    nodes: ClusterNodes
    provisioner: KubernetesProvisioner
    backend: KubernetesBackend
    base_catalog: Catalog
    _seen: int = -1
    _stop: threading.Event = field(default_factory=threading.Event)

    def catalog(self) -> Catalog | None:
        """The catalog with the cluster's zones, when the Nodes changed since the last call (else None)."""
        changes = self.nodes.changes
        if changes == self._seen:
            return None
        self._seen = changes
        return cluster_catalog(self.base_catalog, self.nodes.views())

    def follow(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever a watch sees a change (a Node tainted or gone, a pod scheduled or Ready), so the
        control plane reacts at once rather than at its next pass."""
        def run() -> None:
            seen = self.backend.changes + self.nodes.changes
            pods, nodes = self.backend.changes, self._node_key()
            while not self._stop.is_set():
                seen = self.backend.wait_change_any(seen, self.nodes, 5.0)
                # A kubelet's heartbeat changes its Node every few seconds: only a change Tidal acts on wakes it.
                now_pods, now_nodes = self.backend.changes, self._node_key()
                if (now_pods, now_nodes) != (pods, nodes) and not self._stop.is_set():
                    try:
                        wake()
                    except RuntimeError:  # the control plane's loop has closed
                        return
                pods, nodes = now_pods, now_nodes
        self._stop.clear()
        threading.Thread(target=run, name="cluster-changes", daemon=True).start()

    def _node_key(self) -> frozenset | None:
        """What Tidal reads of the Nodes: which exist, their capacity type, zone, readiness and signal."""
        try:
            return frozenset((n, v.billing, v.zone, v.ready, v.signal) for n, v in self.nodes.views().items())
        except InformerError:
            return None

    def close(self) -> None:
        self._stop.set()
        self.backend.close()  # stops the watches and closes the client


def connect(context: Context, base_catalog: Catalog) -> Cluster:
    if not context.is_kubernetes:
        raise UserError(f"context {context.name} is not a Kubernetes context")
    names = context.node_labels()
    try:
        import kubernetes  # noqa: F401 - an optional dependency
    except ImportError:
        raise UserError(f"context {context.name} is a Kubernetes cluster, and the Kubernetes client is not "
                        f"installed: pip install 'tidal[kubernetes]'") from None
    api = api_client(context)
    nodes = None
    try:
        version = check_access(context, api)
        from kubernetes import client
        changed = threading.Condition(threading.RLock())  # one for every watch: the control plane waits on it
        nodes = ClusterNodes(client.CoreV1Api(api), names, changed).start()
        try:
            views = nodes.views(fail_fast=True)  # a namespaced user that may not list Nodes: say so now
        except InformerError as exc:
            raise UserError(f"context {context.name}: {exc}: the control plane follows the cluster's Nodes "
                            f"(it needs get, list and watch on nodes)") from None
        check_labels(context, names, views)
        try:
            store = ClusterStore(api, context.namespace)
        except StateError as exc:
            raise UserError(f"context {context.name}: {exc}") from None
        provisioner = KubernetesProvisioner(nodes, lambda pool: store.get_pool(pool).labels)
        options = RenderOptions(namespace=context.namespace, image=context.image or RenderOptions.image, labels=names,
                                prestop_exec=prestop_exec_for(version))  # before 1.30: exec, not sleep
        backend = KubernetesBackend(api, context.namespace, lambda name: store.get_service(name).spec, options,
                                    owns_api=True, provisioner=provisioner, changed=changed,
                                    rollout_of=lambda name: releases.load(store.get_rollout_record(name), name))
    except BaseException:
        if nodes is not None:
            nodes.stop()
        api.close()
        raise
    return Cluster(context, api, store, nodes, provisioner, backend, base_catalog)
