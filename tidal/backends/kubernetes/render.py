"""A ServiceSpec as Kubernetes objects, named and labelled as `arena serve tensorflow` names them (pure: no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tidal.spec import ServiceSpec

CHART = "tensorflow-serving-0.2.0"  # arena's charts/tfserving: dashboards and selectors key on it
APP = "tensorflow-serving"
HERITAGE = "Tidal"
GRPC_PORT_NAME = "serving"
REST_PORT_NAME = "http-serving"
CONFIG_KEY = "modelConfigFileContent"
CONFIG_MOUNT = "/etc/tidal/model-config"
TF_SERVING_BINARY = "tensorflow_model_server"
GPU_RESOURCE = "nvidia.com/gpu"
# Tidal's own labels: which placement slice a Deployment realises, and which installation manages it.
SLICE_LABEL = "tidal.dev/slice"
BILLING_LABEL = "tidal.dev/billing"
ZONE_LABEL_TIDAL = "tidal.dev/zone"
MANAGED_BY = "app.kubernetes.io/managed-by"
ZONE_LABEL = "topology.kubernetes.io/zone"
# Kubernetes releases whose objects differ in what Tidal uses: before 1.30 a preStop hook cannot sleep by itself.
PRESTOP_SLEEP_SINCE = (1, 30)


@dataclass(frozen=True)
class NodeLabels:
    """How the cluster marks spot and on-demand nodes (a provider preset; Karpenter's by default)."""
    capacity_label: str = "karpenter.sh/capacity-type"
    spot_value: str = "spot"
    on_demand_value: str = "on-demand"     # "": on-demand nodes carry no such label (matched as "not spot")
    zone_label: str = ZONE_LABEL
    spot_taints: tuple[dict, ...] = ()  # tolerations spot pods need, e.g. AKS's scalesetpriority=spot:NoSchedule
    also_spot: tuple[str, ...] = ()     # further values that mean spot (ACK has two spot strategies)

    @property
    def spot_values(self) -> tuple[str, ...]:
        return (self.spot_value, *self.also_spot)


@dataclass(frozen=True)
class Placement:
    """One placement slice of a service: its billing (spot or on-demand) and zone ('' for any zone)."""
    billing: str
    zone: str = ""

    @property
    def name(self) -> str:
        return f"{self.billing}-{self.zone}" if self.zone else self.billing


@dataclass(frozen=True)
class RenderOptions:
    namespace: str = "default"
    image: str = "tidal:latest"             # the image that runs `tidal model-server` when the service names none
    prestop_seconds: int = 5                # endpoints controllers and gateways stop routing before SIGTERM
    # Kubernetes before 1.30 has no preStop sleep action: the image's own `sleep` instead (stock images have it).
    prestop_exec: bool = False
    drain_seconds: int = 30                 # requests in flight get this long after SIGTERM
    service_type: str = "ClusterIP"
    labels: NodeLabels = field(default_factory=NodeLabels)
    env_secret: str = ""                    # a Secret whose keys become the container's environment
    ingress_class: str = ""
    ingress_host: str = ""


def release_labels(spec: ServiceSpec) -> dict[str, str]:
    """The pod template's labels (arena's, minus servingName/servingType)."""
    return {"heritage": HERITAGE, "release": spec.release, "chart": CHART, "app": APP,
            "serviceName": spec.name, "serviceVersion": spec.version}


def object_labels(spec: ServiceSpec) -> dict[str, str]:
    return {**spec.labels, **release_labels(spec), "servingName": spec.name, "servingType": "tf-serving",
            MANAGED_BY: "tidal"}


def selector(spec: ServiceSpec) -> dict[str, str]:
    return {"release": spec.release, "app": APP}


def selector_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def deployment_name(spec: ServiceSpec, placement: Placement | None = None) -> str:
    return spec.workload if placement is None else f"{spec.workload}-{placement.name}"


def config_map_name(spec: ServiceSpec) -> str:
    return f"{spec.workload}-cm"


def _meta(name: str, spec: ServiceSpec, opts: RenderOptions, owners: list[dict] | None,
          extra_labels: dict[str, str] | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": opts.namespace,
                            "labels": {**object_labels(spec), **(extra_labels or {})}}
    if spec.annotations:
        meta["annotations"] = dict(spec.annotations)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def owner_reference(obj: dict) -> dict:
    """An owner reference to an object the API server returned (its uid is needed): deleting it deletes ours."""
    meta = obj["metadata"]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"], "uid": meta["uid"],
            "blockOwnerDeletion": True}


def _quantity(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{int(round(x * 1000))}m"


def resources(spec: ServiceSpec) -> dict:
    limits: dict[str, str] = {}
    if spec.cpu:
        limits["cpu"] = _quantity(spec.cpu)
    if spec.memory_mib:
        limits["memory"] = f"{int(round(spec.memory_mib))}Mi"
    if spec.gpus:
        limits[GPU_RESOURCE] = str(spec.gpus)
    return {"limits": limits} if limits else {}


_TOLERATION_RE = re.compile(r"^(?P<key>[^=:]+)(=(?P<value>[^:]*))?(:(?P<effect>NoSchedule|PreferNoSchedule|NoExecute))?$")


def toleration(text: str) -> dict:
    """arena's --toleration: `all`, `KEY`, or `KEY=VALUE[:EFFECT]` / `KEY:EFFECT`."""
    if text == "all":
        return {"operator": "Exists"}
    m = _TOLERATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"invalid toleration {text!r}: expected all, KEY, or KEY=VALUE[:EFFECT]")
    out: dict[str, str] = {"key": m["key"]}
    if m["value"] is not None:
        out.update(operator="Equal", value=m["value"])
    else:
        out["operator"] = "Exists"
    if m["effect"]:
        out["effect"] = m["effect"]
    return out


def version_policy_config(spec: ServiceSpec, base_path: str) -> str:
    """A TF Serving model config for a version policy other than `latest` (a flag cannot say it)."""
    vp = spec.version_policy
    if vp.kind == "all":
        policy = "all {}"
    elif vp.kind == "specific":
        policy = "specific { " + " ".join(f"versions: {v}" for v in vp.versions) + " }"
    else:
        policy = f"latest {{ num_versions: {vp.num_versions} }}"
    return (f'model_config_list {{\n  config {{\n    name: "{spec.model_name}"\n    base_path: "{base_path}"\n'
            f'    model_platform: "tensorflow"\n    model_version_policy {{ {policy} }}\n  }}\n}}\n')


def model_config_text(spec: ServiceSpec, user_config: str | None) -> str | None:
    """What goes into the ConfigMap: the user's model config file, or one for a non-default version policy."""
    if user_config is not None:
        return user_config
    if spec.model_path and str(spec.version_policy) != "latest":
        return version_policy_config(spec, spec.model_path)
    return None


def server_command(spec: ServiceSpec, opts: RenderOptions, config: str | None,
                   model_base_path: str | None = None) -> tuple[str, list[str], list[str]]:
    """(image, command, args): the user's image runs TF Serving's own binary, Tidal's image `tidal model-server`."""
    args = [f"--port={spec.port}", f"--rest_api_port={spec.restful_port}"]
    if config is not None:
        args.append(f"--model_config_file={CONFIG_MOUNT}/{CONFIG_KEY}")
    else:
        args += [f"--model_name={spec.model_name}", f"--model_base_path={model_base_path or spec.model_path}"]
    if spec.image:
        return spec.image, [TF_SERVING_BINARY], args
    return opts.image, ["tidal", "model-server"], args + [f"--drain_seconds={opts.drain_seconds}"]


def pod_spec(spec: ServiceSpec, opts: RenderOptions, config: str | None, placement: Placement | None = None,
             model_base_path: str | None = None) -> dict:
    image, command, args = server_command(spec, opts, config, model_base_path)
    readiness: dict[str, Any]
    if config is None and spec.model_name:
        # TF Serving answers 200 here once a version of the model is AVAILABLE (a TCP probe would be too early).
        readiness = {"httpGet": {"path": f"/v1/models/{spec.model_name}", "port": REST_PORT_NAME}}
    else:
        readiness = {"tcpSocket": {"port": REST_PORT_NAME}}
    container: dict[str, Any] = {
        "name": "serving",
        "image": image,
        "command": command,
        "args": args,
        "ports": [{"name": GRPC_PORT_NAME, "containerPort": spec.port, "protocol": "TCP"},
                  {"name": REST_PORT_NAME, "containerPort": spec.restful_port, "protocol": "TCP"}],
        "readinessProbe": {**readiness, "initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 3},
        # Generous: a large model loads for minutes, and a restart would only start the load again.
        "livenessProbe": {"tcpSocket": {"port": REST_PORT_NAME}, "initialDelaySeconds": 30, "periodSeconds": 10,
                          "failureThreshold": 6},
        # Routing stops (endpoints are removed) while the pod still serves; then SIGTERM drains what is in flight.
        "lifecycle": {"preStop": ({"exec": {"command": ["sleep", str(opts.prestop_seconds)]}} if opts.prestop_exec
                                  else {"sleep": {"seconds": opts.prestop_seconds}})},
        "resources": resources(spec),
    }
    if spec.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    if opts.env_secret:
        container["envFrom"] = [{"secretRef": {"name": opts.env_secret}}]
    volumes: list[dict] = []
    mounts: list[dict] = []
    for m in spec.data:
        if not any(v["name"] == m.volume for v in volumes):
            volumes.append({"name": m.volume, "persistentVolumeClaim": {"claimName": m.volume}})
        mounts.append({"name": m.volume, "mountPath": m.mount})
    if config is not None:
        volumes.append({"name": "model-config", "configMap": {"name": config_map_name(spec)}})
        mounts.append({"name": "model-config", "mountPath": CONFIG_MOUNT, "readOnly": True})
    if mounts:
        container["volumeMounts"] = mounts
    pod: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": opts.prestop_seconds + opts.drain_seconds + 5,
    }
    if volumes:
        pod["volumes"] = volumes
    if spec.selector:
        pod["nodeSelector"] = dict(spec.selector)
    tolerations = [toleration(t) for t in spec.tolerations]
    if placement is not None:
        pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": placement_terms(placement, opts.labels)}]}}}
        if placement.billing == "spot":
            tolerations += [dict(t) for t in opts.labels.spot_taints]
    if tolerations:
        pod["tolerations"] = tolerations
    return pod


def placement_terms(placement: Placement, labels: NodeLabels) -> list[dict]:
    if placement.billing == "spot":
        terms = [{"key": labels.capacity_label, "operator": "In", "values": list(labels.spot_values)}]
    elif labels.on_demand_value:
        terms = [{"key": labels.capacity_label, "operator": "In", "values": [labels.on_demand_value]}]
    else:  # NotIn also matches nodes without the label, which is how these providers mark on-demand ones
        terms = [{"key": labels.capacity_label, "operator": "NotIn", "values": list(labels.spot_values)}]
    if placement.zone:
        terms.append({"key": labels.zone_label, "operator": "In", "values": [placement.zone]})
    return terms


def deployment(spec: ServiceSpec, opts: RenderOptions, replicas: int, config: str | None,
               placement: Placement | None = None, owners: list[dict] | None = None,
               model_base_path: str | None = None) -> dict:
    """The Deployment; with a placement, one slice of the service (its own selector, so slices never overlap)."""
    pod_labels = release_labels(spec)
    match = selector(spec)
    extra: dict[str, str] = {}
    if placement is not None:
        extra = {SLICE_LABEL: placement.name, BILLING_LABEL: placement.billing}
        if placement.zone:
            extra[ZONE_LABEL_TIDAL] = placement.zone
        pod_labels = {**pod_labels, **extra}
        match = {**match, SLICE_LABEL: placement.name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(deployment_name(spec, placement), spec, opts, owners, extra),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": match},
            # a new pod must be ready before an old one goes: a rollout never drops below the replicas asked for
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec(spec, opts, config, placement,
                                                                                 model_base_path)},
        },
    }


def service(spec: ServiceSpec, opts: RenderOptions, owners: list[dict] | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(spec.workload, spec, opts, owners),
        "spec": {"type": opts.service_type, "selector": selector(spec),
                 "ports": [{"name": GRPC_PORT_NAME, "port": spec.port, "targetPort": GRPC_PORT_NAME, "protocol": "TCP"},
                           {"name": REST_PORT_NAME, "port": spec.restful_port, "targetPort": REST_PORT_NAME,
                            "protocol": "TCP"}]},
    }


def config_map(spec: ServiceSpec, opts: RenderOptions, config: str, owners: list[dict] | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(config_map_name(spec), spec, opts, owners),
            "data": {CONFIG_KEY: config}}


def disruption_budget(spec: ServiceSpec, opts: RenderOptions, owners: list[dict] | None = None) -> dict:
    """At most one replica evicted at a time by a node drain (a spot reclaim does not ask: Tidal replaces first)."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(spec.workload, spec, opts, owners),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(spec)}}}


def autoscaler(spec: ServiceSpec, opts: RenderOptions, hpa, owners: list[dict] | None = None) -> dict:
    """An autoscaling/v2 HPA from the service's autoscaler (an HPASpec), aimed at the arena-named Deployment."""
    body: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.workload},
        "minReplicas": hpa.min_replicas, "maxReplicas": hpa.max_replicas,
        "metrics": [m.model_dump(by_alias=True, exclude_none=True) for m in hpa.metrics],
    }
    if hpa.behavior is not None:
        body["behavior"] = hpa.behavior.model_dump(by_alias=True, exclude_none=True)
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(hpa.name or f"{spec.workload}-hpa", spec, opts, owners), "spec": body}


def ingress(spec: ServiceSpec, opts: RenderOptions, owners: list[dict] | None = None) -> dict:
    """The REST API from outside the cluster (the route the reference procedure's QPS metric is read from)."""
    rule: dict[str, Any] = {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
        "service": {"name": spec.workload, "port": {"name": REST_PORT_NAME}}}}]}}
    if opts.ingress_host:
        rule["host"] = opts.ingress_host
    body: dict[str, Any] = {"rules": [rule]}
    if opts.ingress_class:
        body["ingressClassName"] = opts.ingress_class
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": _meta(spec.workload, spec, opts, owners), "spec": body}


CANARY_HEADER = "x-tidal-release"  # the header Tidal's gateway routes a request to a release by
NGINX = "nginx.ingress.kubernetes.io/"


def canary_ingress(canary: ServiceSpec, opts: RenderOptions, weight: int) -> dict:
    """ingress-nginx's canary: a second Ingress for the same host and path, to the canary release's Service,
    taking `weight` percent of the requests, and every request whose x-tidal-release header names the canary
    (as Tidal's own gateway routes them)."""
    body = ingress(canary, opts)
    body["metadata"]["annotations"] = {**body["metadata"].get("annotations", {}),
                                       NGINX + "canary": "true", NGINX + "canary-weight": str(weight),
                                       NGINX + "canary-by-header": CANARY_HEADER,
                                       NGINX + "canary-by-header-value": canary.release}
    return body


def canary_manifests(canary: ServiceSpec, opts: RenderOptions, replicas: int, weight: int, *,
                     user_config: str | None = None) -> list[dict]:
    """A canary release's own objects beside the stable release's: its ConfigMap, Deployment (arena's name, with
    the canary's version), Service and PodDisruptionBudget, and the canary Ingress. No HPA: the stable release's
    autoscaler sizes the service, and the canary keeps its share of it."""
    config = model_config_text(canary, user_config)
    out = [config_map(canary, opts, config)] if config is not None else []
    return out + [deployment(canary, opts, replicas, config), service(canary, opts), disruption_budget(canary, opts),
                  canary_ingress(canary, opts, weight)]


def manifests(spec: ServiceSpec, opts: RenderOptions, *, user_config: str | None = None, hpa=None,
              with_ingress: bool = False) -> list[dict]:
    """Everything `tidal export kubernetes` prints for one service, in the order to apply it."""
    config = model_config_text(spec, user_config)
    out = []
    if config is not None:
        out.append(config_map(spec, opts, config))
    out += [deployment(spec, opts, spec.replicas if hpa is None else max(hpa.min_replicas, 1), config),
            service(spec, opts), disruption_budget(spec, opts)]
    if hpa is not None:
        out.append(autoscaler(spec, opts, hpa))
    if with_ingress:
        out.append(ingress(spec, opts))
    return out


def prestop_exec_for(server_version: str) -> bool:
    """Whether a cluster whose API server reports `server_version` ("v1.29.3", "v1.28.5-eks-5e0fdde") needs the
    exec form of the preStop sleep; an unreadable version is taken as a current release."""
    m = re.match(r"v?(\d+)\.(\d+)", server_version or "")
    return bool(m) and (int(m[1]), int(m[2])) < PRESTOP_SLEEP_SINCE
