"""The control plane and its gateway as Kubernetes objects, with the least RBAC the backend needs (pure: no I/O).

One pod runs `tidal up --foreground --leader-elect`: the control plane, and the gateway as its supervised process
(it takes its routes from the control plane over the pod's loopback with the control plane's token, so the
route table has one writer). The gateway's Service sends traffic to the pod whose gateway is ready: the leader's.
A second replica waits for the Lease and takes over when the leader stops or its Lease expires; it is not ready
until then. The pod reads its context (namespace, provider preset, image) from a ConfigMap and talks to the API
as its ServiceAccount.

`deploy/helm/tidal` renders the same objects from its values; a test holds the two equal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tidal.backends.kubernetes.lease import DEFAULT_LEASE
from tidal.backends.kubernetes.state import CONFIG_MAP as STATE_CONFIG_MAP

NAME = "tidal-control-plane"
GATEWAY = "tidal-gateway"
HOME = "/var/lib/tidal"
CONTEXT = "cluster"     # the context the pod runs in, from its ConfigMap
API_PORT = 8470
GATEWAY_PORT = 8501
USER_ID = 10001         # the image's user (Dockerfile)

# What the backend does, and nothing more: each rule names the calls that need it.
RULES: tuple[dict, ...] = (
    # Pods of the slices: the informer's list and watch (never one by name), a replica's claim (deletion cost) and
    # its stop.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},               # tidal logs
    # A service's objects, server-side applied: a patch, and a create the first time. The Service owns the rest,
    # so deleting it is the only delete the garbage collector needs.
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "patch", "delete"]},
    # A service's model config and the Secret with its env (the volume's keys among them) are written, never read
    # back: no get, no list. Tidal's state ConfigMap is created here too (create cannot name its object).
    {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["create", "patch"]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["create", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch", "create", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
    # The Lease: created once (create cannot name its object), then read and written by name only.
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
)
# Nodes are cluster-wide: read-only, for which capacity type and zone a node is and whether it is going away.
NODE_RULES: tuple[dict, ...] = (
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
)


@dataclass(frozen=True)
class ControlPlaneOptions:
    namespace: str = "default"
    image: str = "tidal:latest"
    image_pull_policy: str = "IfNotPresent"
    provider: str = "karpenter"
    # provider custom: the context's capacity_label, spot_value, on_demand_value and spot_taint
    custom_labels: dict[str, str] = field(default_factory=dict)
    replicas: int = 1                         # 2: a warm standby that waits for the Lease
    lease_name: str = DEFAULT_LEASE
    lease_seconds: float = 15.0
    resources: dict[str, Any] = field(default_factory=lambda: {
        "requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}})
    gateway_service_type: str = "ClusterIP"


def labels(component: str) -> dict[str, str]:
    # Not app.kubernetes.io/managed-by=tidal: that marks the objects of served models, which the backend watches.
    return {"app.kubernetes.io/name": "tidal", "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "tidal"}


def _meta(name: str, opts: ControlPlaneOptions | None, component: str = "control-plane") -> dict:
    meta: dict[str, Any] = {"name": name}
    if opts is not None:
        meta["namespace"] = opts.namespace
    meta["labels"] = labels(component)
    return meta


def node_role_name(namespace: str) -> str:
    """Cluster-wide, so one per installation: the namespace is in the name."""
    return f"{NAME}-{namespace}-nodes"


def service_names(service: str, namespace: str) -> list[str]:
    """The names a Service answers to inside the cluster."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def rules(opts: ControlPlaneOptions) -> list[dict]:
    """RULES, and what is read and written by name only: Tidal's state (read at start, replaced on every change,
    so a restarted control plane picks up where it was) and the Lease."""
    state = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [STATE_CONFIG_MAP],
             "verbs": ["get", "update"]}
    lease = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [opts.lease_name],
             "verbs": ["get", "update"]}
    return [dict(r) for r in RULES] + [state, lease]


def contexts_file(opts: ControlPlaneOptions) -> str:
    """contexts.json as `tidal context` writes it: one Kubernetes context, no kubeconfig (the service account)."""
    return json.dumps({"current": CONTEXT, "contexts": [{
        "name": CONTEXT, "kind": "kubernetes", "kubeconfig": "", "kube_context": "", "namespace": opts.namespace,
        "image": opts.image, "provider": opts.provider, **opts.custom_labels}]}, indent=2) + "\n"


def deployment(opts: ControlPlaneOptions) -> dict:
    args = ["up", "--foreground", "--host", "0.0.0.0", "--port", str(API_PORT), "--gateway-port", str(GATEWAY_PORT),
            "--leader-elect", "--lease-name", opts.lease_name, "--lease-seconds", f"{opts.lease_seconds:g}"]
    container = {
        "name": "tidal",
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "args": args,
        "env": [{"name": "TIDAL_HOME", "value": HOME},
                # the API answers only to names it knows (a guard against DNS rebinding): its Service's too
                {"name": "TIDAL_ALLOWED_HOSTS", "value": ",".join(service_names(NAME, opts.namespace))}],
        "ports": [{"name": "api", "containerPort": API_PORT, "protocol": "TCP"},
                  {"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        # Ready only while this pod's gateway serves, i.e. while it leads: the Service sends traffic nowhere else.
        # No liveness probe: a standby listens on nothing, and a leader that loses the Lease exits on its own.
        "readinessProbe": {"httpGet": {"path": "/-/healthz", "port": "http"}, "periodSeconds": 2,
                           "failureThreshold": 2},
        "resources": opts.resources,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "home", "mountPath": HOME},
                         {"name": "context", "mountPath": f"{HOME}/contexts.json", "subPath": "contexts.json",
                          "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(NAME, opts),
        "spec": {
            "replicas": opts.replicas,
            "selector": {"matchLabels": labels("control-plane")},
            # The old pod stops (and releases the Lease) before the new one starts: a rolling update would wait
            # forever for a new pod to be ready while the old one holds the Lease.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": labels("control-plane")},
                "spec": {
                    "serviceAccountName": NAME,
                    # requests in flight at the gateway drain before the pod goes
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
                                        "fsGroup": USER_ID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "home", "emptyDir": {}},
                                {"name": "context", "configMap": {"name": NAME}},
                                {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def manifests(opts: ControlPlaneOptions) -> list[dict]:
    """Everything `tidal export kubernetes --control-plane` prints, in the order to apply it."""
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME}
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": opts.namespace}]
    node_role = node_role_name(opts.namespace)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, opts)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(NAME, opts),
         "rules": rules(opts)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(NAME, opts),
         "roleRef": role_ref, "subjects": subject},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(node_role, None),
         "rules": [dict(r) for r in NODE_RULES]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta(node_role, None),
         "roleRef": {**role_ref, "kind": "ClusterRole", "name": node_role}, "subjects": subject},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(NAME, opts),
         "data": {"contexts.json": contexts_file(opts)}},
        deployment(opts),
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(NAME, opts),
         "spec": {"type": "ClusterIP", "selector": labels("control-plane"),
                  "ports": [{"name": "api", "port": API_PORT, "targetPort": "api", "protocol": "TCP"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(GATEWAY, opts, "gateway"),
         "spec": {"type": opts.gateway_service_type, "selector": labels("control-plane"),
                  "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"}]}},
    ]
