"""`tidal export kubernetes`: a service as the Kubernetes manifests arena would make, for GitOps without Tidal's controller."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

from tidal.backends.kubernetes.render import PRESTOP_SLEEP_SINCE  # before 1.30 a preStop hook cannot sleep
from tidal.errors import UserError

EXAMPLE = """examples:
  tidal export kubernetes -f service.yaml > bert.yaml      # a file with a Service (and its HPA) document
  tidal export kubernetes bert-tfserving -n serving          # a service of the running control plane (with its
                                                             # canary during a rollout: ingress-nginx's canary)
  tidal export kubernetes --control-plane -n tidal --image registry.example.com/tidal:1.0 > tidal.yaml
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLE
    parser.add_argument("target", choices=["kubernetes"], help="what to export to")
    parser.add_argument("name", nargs="?", help="a service of the running control plane (instead of -f)")
    parser.add_argument("--control-plane", action="store_true",
                        help="the control plane and its gateway instead of a service: Deployment, ServiceAccount, "
                             "least-privilege RBAC, Services (leader election on a Lease)")
    parser.add_argument("-f", "--filename", help="a YAML file with a Service document ('-' for stdin)")
    parser.add_argument("-n", "--namespace", help="namespace of the objects (default: the current context's, "
                                                  "else default)")
    parser.add_argument("--image", help="image that runs `tidal model-server` when the service names none "
                                        "(default: the current context's, else tidal:latest)")
    parser.add_argument("--ingress-host", default="", help="host of the Ingress rule (default: any)")
    parser.add_argument("--ingress-class", default="", help="ingressClassName of the Ingress (default: the cluster's)")
    parser.add_argument("--kubernetes-version", default="", metavar="X.Y",
                        help="the cluster's Kubernetes version, for objects older releases accept (default: 1.30 "
                             "or newer)")
    from tidal.backends.kubernetes.presets import PRESETS
    parser.add_argument("--provider", choices=sorted(PRESETS),
                        help="with --control-plane: how the cluster's nodes say spot or on-demand (default: the "
                             "current context's, else karpenter)")
    parser.add_argument("--replicas", type=int, default=1,
                        help="with --control-plane: 2 keeps a standby that takes over when the leader goes")


def _read_documents(path: str) -> list[dict]:
    import sys
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d:
            raise UserError(f"{path}: every document needs a kind")
    return docs


def _service_spec(data: dict, where: str):
    from pydantic import ValidationError

    from tidal.spec import Admission, ServiceSpec
    try:
        return ServiceSpec.admit(data, Admission())
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise UserError(f"{where}: {loc + ': ' if loc else ''}{first['msg']}") from None


def _hpa(document: dict, where: str):
    from tidal.autoscaling.hpafile import parse_hpa
    from tidal.errors import InvalidArgument
    try:
        return parse_hpa(document)
    except InvalidArgument as exc:
        raise UserError(f"{where}: HorizontalPodAutoscaler: {exc}") from None


def from_file(path: str):
    """(spec, its HPA or None) from a file of Tidal's Service document and, optionally, an HPA aimed at it."""
    docs = _read_documents(path)
    services = [d for d in docs if d["kind"] == "Service"]
    if len(services) != 1:
        raise UserError(f"{path}: expected one Service document, found {len(services)}")
    spec = _service_spec(services[0].get("spec") or {}, path)
    hpa = None
    for d in docs:
        if d["kind"] == "HorizontalPodAutoscaler":
            candidate = _hpa(d, path)
            if candidate.scale_target_ref.name in (spec.workload, spec.name):
                hpa = candidate
    return spec, hpa


@dataclass(frozen=True)
class Canary:
    """A rollout's canary release as exported: its spec, its share of the requests and its replicas."""
    spec: object  # ServiceSpec
    weight: int
    replicas: int


def _view_canary(view: dict, stable, name: str) -> Canary | None:
    """The canary of the service's rollout while one is in progress: the stable spec with what the canary
    changed that the view shows (version, image, model path)."""
    rollout = view.get("rollout") or {}
    if rollout.get("phase") not in ("progressing", "manual"):
        return None
    entry = next((r for r in rollout.get("releases") or () if r.get("name") == rollout.get("canary")), None)
    if entry is None:
        return None
    data = {**stable.model_dump(), "version": entry["version"], "model_path": entry.get("model_path", ""),
            **({"image": entry["image"]} if entry.get("image") else {})}
    return Canary(_service_spec(data, f"service {name}'s canary"), int(rollout.get("weight", 0)),
                  max(int(entry.get("replicas") or 0), 1))


def from_control_plane(name: str):
    """(spec, HPA or None, Canary or None) from the running control plane's view of the service."""
    spec, hpa, view = _control_plane_view(name)
    return spec, hpa, _view_canary(view, spec, name)


def _control_plane_view(name: str):
    from tidal.commands.common import client
    view = client().get(f"/services/{name}")
    if isinstance(view.get("spec"), dict):  # the whole spec, where the control plane gives it
        return _service_spec(view["spec"], f"service {name}"), _view_hpa(view, name), view
    # Otherwise what the service's view shows (resources and env are not in it).
    data = {"name": view["name"], "version": view["version"], "type": view["type"], "image": view.get("image", ""),
            "gpus": view.get("gpus", 0), "selector": view.get("selector") or {}, "replicas": max(view["desired"], 0),
            "data": [{"volume": d.split(":", 1)[0], "mount": d.split(":", 1)[1]} for d in view.get("data") or []],
            "model_name": view.get("model_name", ""), "model_path": view.get("model_path", ""),
            "version_policy": view.get("version_policy", "latest"),
            "port": view["ports"]["grpc"], "restful_port": view["ports"]["rest"]}
    return _service_spec(data, f"service {name}"), _view_hpa(view, name), view


def _view_hpa(view: dict, name: str):
    auto = view.get("autoscaler")
    return _hpa(auto["document"], f"service {name}") if auto and auto.get("document") else None


def kubernetes_version(text: str) -> tuple[int, int] | None:
    """'1.29' or 'v1.29.3' as (1, 29); '' as None (a current release)."""
    import re
    if not text:
        return None
    m = re.fullmatch(r"v?(\d+)\.(\d+)(\.\d+)?", text.strip())
    if not m:
        raise UserError(f"--kubernetes-version {text!r}: expected X.Y, e.g. 1.29")
    return int(m[1]), int(m[2])


def _custom_labels(args, context) -> dict[str, str]:
    """The custom provider's label, values and taint travel with the context the control plane runs in."""
    if args.provider or not context.is_kubernetes or not context.capacity_label:
        return {}
    return {"capacity_label": context.capacity_label, "spot_value": context.spot_value,
            "on_demand_value": context.on_demand_value, "spot_taint": context.spot_taint}


def _control_plane(args, context) -> int:
    from tidal.backends.kubernetes.controlplane import ControlPlaneOptions, manifests
    if args.name or args.filename:
        raise UserError("--control-plane exports the control plane: give no service NAME or -f FILE")
    if not 1 <= args.replicas <= 5:
        raise UserError(f"--replicas {args.replicas}: 1, or 2 to 5 for standbys (one acts at a time)")
    opts = ControlPlaneOptions(namespace=args.namespace or context.namespace or "default",
                               image=args.image or context.image or ControlPlaneOptions.image,
                               provider=args.provider or (context.provider if context.is_kubernetes else "karpenter"),
                               custom_labels=_custom_labels(args, context),
                               replicas=args.replicas)
    print(yaml.safe_dump_all(manifests(opts), sort_keys=False).rstrip())
    return 0


def run(args) -> int:
    from tidal.backends.kubernetes.contexts import ContextStore
    from tidal.backends.kubernetes.render import RenderOptions, canary_manifests, manifests

    version = kubernetes_version(args.kubernetes_version)
    if args.control_plane:
        return _control_plane(args, ContextStore.from_env().current())
    if bool(args.name) == bool(args.filename):
        raise UserError("give a service NAME or -f FILE (one of them)")
    spec, hpa, canary = (*from_file(args.filename), None) if args.filename else from_control_plane(args.name)
    user_config = None
    if spec.model_config_file:
        try:
            user_config = Path(spec.model_config_file).read_text()
        except OSError as exc:
            raise UserError(f"cannot read the model config file {spec.model_config_file}: "
                            f"{exc.strerror or exc}") from None
    context = ContextStore.from_env().current()
    opts = RenderOptions(namespace=args.namespace or context.namespace or "default",
                         image=args.image or context.image or RenderOptions.image,
                         ingress_host=args.ingress_host, ingress_class=args.ingress_class,
                         prestop_exec=version is not None and version < PRESTOP_SLEEP_SINCE)
    objects = manifests(spec, opts, user_config=user_config, hpa=hpa, with_ingress=True)
    if canary is not None:  # a rollout in progress: the canary's own objects, and ingress-nginx's canary Ingress
        objects += canary_manifests(canary.spec, opts, canary.replicas, canary.weight, user_config=user_config)
    print(yaml.safe_dump_all(objects, sort_keys=False).rstrip())
    return 0
