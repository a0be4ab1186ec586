"""`tidal serve`: arena's serve commands (tensorflow, onnx) and list/get/delete/update of inference services."""

from __future__ import annotations

import argparse
import sys
import time

from tidal.commands import rollout
from tidal.commands.common import add_output, client, emit, key_values, labels_text, table
from tidal.errors import UserError
from tidal.states import ReplicaState

EXAMPLE = """example (the reference procedure's command):
  tidal serve tensorflow --name=bert-tfserving --model-name=chnsenticorp \\
    --selector=inference=tensorflow --gpus=1 --image=tensorflow/serving:1.15.0-gpu \\
    --data=model-pvc:/models --model-path=/models/tensorflow --version-policy=specific:1623831335
  tidal serve list
  tidal serve get bert-tfserving -o json
"""

RUNTIMES = ("tensorflow", "onnx")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLE
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    for runtime in RUNTIMES:
        p = sub.add_parser(runtime, help=f"serve a model with {runtime} serving's flags",
                           epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
        _serve_flags(p, runtime)
    p = sub.add_parser("list", help="list inference services")
    add_output(p, ("table", "json", "yaml", "wide"))
    p = sub.add_parser("get", help="show one inference service (its endpoint, replicas and nodes)")
    p.add_argument("name", help="the service")
    add_output(p)
    p = sub.add_parser("delete", help="delete an inference service (its replicas drain, then stop)")
    p.add_argument("name", help="the service")
    p = sub.add_parser("update", help="change a service: replicas, resources, image, model, version policy")
    p.add_argument("name", help="the service")
    p.add_argument("--replicas", type=int, help="replicas wanted now")
    p.add_argument("--image", help="container image")
    p.add_argument("--gpus", type=int, help="GPUs per replica")
    p.add_argument("--cpu", type=float, help="CPUs per replica")
    p.add_argument("--memory", help="memory per replica, e.g. 2Gi")
    p.add_argument("--model-path", "--modelPath", dest="model_path",
                   help="the model's base path, inside a --data mount")
    p.add_argument("--version-policy", "--versionPolicy", dest="version_policy",
                   help="latest, latest:N, specific:N[,M] or all")
    p.add_argument("-e", "--env", action="append", help="K=V (repeatable)")
    rollout.add_update_flags(p)
    add_output(p)
    rollout.add_actions(sub)


def _serve_flags(p: argparse.ArgumentParser, runtime: str) -> None:
    p.add_argument("--name", required=True, help="the service's name")
    p.add_argument("--version", help="its version (default: now, as YYYYMMDDhhmm)")
    p.add_argument("--image", default="", help="container image (used by the Kubernetes backend; recorded locally)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per replica (pinned with CUDA_VISIBLE_DEVICES)")
    p.add_argument("--cpu", type=float, default=0.0, help="CPUs per replica")
    p.add_argument("--memory", default="", help="memory per replica, e.g. 2Gi")
    p.add_argument("--replicas", type=int, default=1, help="replicas to start with (an autoscaler changes it)")
    p.add_argument("-d", "--data", action="append", default=[], help="VOLUME:MOUNT_PATH, e.g. model-pvc:/models")
    p.add_argument("--selector", action="append", default=[], help="node label K=V (repeatable)")
    p.add_argument("--toleration", action="append", default=[], help="a node taint the replicas tolerate (repeatable)")
    p.add_argument("-e", "--env", action="append", default=[],
                   help="K=V (repeatable); variables that change how code loads (LD_*, PYTHON*, DYLD_*, ...) "
                        "need the operator's TIDAL_ALLOW_ENV=NAME,... in the control plane's environment")
    p.add_argument("-a", "--annotation", action="append", default=[], help="K=V recorded on the service (repeatable)")
    p.add_argument("-l", "--label", action="append", default=[], help="K=V label of the service (repeatable)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    p.add_argument("--restful-port", "--restfulPort", dest="restful_port", type=int, default=8501,
                   help="REST port (default 8501)")
    p.add_argument("--model-name", "--modelName", dest="model_name", default="",
                   help="the name clients call the model by (default: the service's name)")
    p.add_argument("--model-path", "--modelPath", dest="model_path", default="",
                   help="the model's base path, inside a --data mount")
    p.add_argument("--model-config-file", "--modelConfigFile", dest="model_config_file", default="",
                   help="a TF Serving model config file serving several models (instead of --model-path)")
    p.add_argument("--version-policy", "--versionPolicy", dest="version_policy", default="latest",
                   help="latest, latest:N, specific:N[,M] or all")
    add_output(p)
    p.set_defaults(runtime=runtime)


def _spec_from_args(args) -> dict:
    from tidal.models.config import VersionPolicy
    from tidal.spec import VolumeMount, parse_memory_mib
    try:
        data = [VolumeMount.parse(d).model_dump() for d in args.data]
        memory = parse_memory_mib(args.memory)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not args.model_path and not args.model_config_file:
        raise UserError("--model-path is required without --model-config-file")
    return {
        "name": args.name, "version": args.version or time.strftime("%Y%m%d%H%M"), "type": args.runtime,
        "image": args.image, "gpus": args.gpus, "cpu": args.cpu, "memory_mib": memory, "replicas": args.replicas,
        "data": data, "selector": key_values(args.selector, "--selector"), "tolerations": args.toleration,
        "env": key_values(args.env, "--env"), "annotations": key_values(args.annotation, "--annotation"),
        "labels": key_values(args.label, "--label"), "port": args.port, "restful_port": args.restful_port,
        "model_name": args.model_name, "model_path": args.model_path, "model_config_file": args.model_config_file,
        "version_policy": VersionPolicy.parse(args.version_policy).model_dump(mode="json"),
    }


# A replica in these states has a model server listening on its port; before (pending, starting) and after
# (stopped, failed) a port in the record is only reserved or stale.
LISTENING = {ReplicaState.READY, ReplicaState.NOTIFIED, ReplicaState.DRAINING}


def replica_port(r: dict) -> str:
    return str(r["port"]) if r.get("port") and r.get("state") in LISTENING else "-"


def _ports(s: dict) -> str:
    return f"GRPC:{s['ports']['grpc']},RESTFUL:{s['ports']['rest']}"


def run(args) -> int:
    api = client()
    if args.action in RUNTIMES:
        created = api.post("/services", _spec_from_args(args))
        if emit(created, args.output):
            return 0
        print(f"service {created['name']} created: release {created['release']}, workload {created['workload']}")
        if created.get("runtime_note"):
            print(created["runtime_note"])
        for warning in created.get("warnings") or ():
            print(warning, file=sys.stderr)
        print(f"endpoint: {created['endpoint']}  (e.g. {created['endpoint']}/v1/models/{created['model_name']}:predict)")
        print(f"watch it: tidal serve get {created['name']}")
        return 0
    if args.action == "list":
        services = api.get("/services")
        if emit(services, args.output):
            return 0
        headers = ["NAME", "TYPE", "VERSION", "DESIRED", "AVAILABLE", "ADDRESS", "PORTS"]
        rows = [[s["name"], s["type"], s["version"], s["desired"], s["available"], s["endpoint"], _ports(s)]
                for s in services]
        if args.output == "wide":
            headers += ["WORKLOAD", "SELECTOR", "GPUS"]
            for r, s in zip(rows, services):
                r += [s["workload"], labels_text(s["selector"]), s["gpus"]]
        table(headers, rows)
        return 0
    if args.action == "get":
        s = api.get(f"/services/{args.name}")
        if emit(s, args.output):
            return 0
        for k in ("name", "version", "type", "workload", "endpoint", "desired", "available", "model_name",
                  "model_path", "version_policy", "image", "gpus"):
            print(f"{k.upper().replace('_', ' ')}: {s[k]}")
        if s.get("autoscaler"):
            last = s["autoscaler"].get("last") or {}
            print(f"AUTOSCALER: {last.get('reason', 'waiting for its first sync')}"
                  + (f" (QPS {last['qps']:.1f})" if last.get("qps") is not None else ""))
        rollout.show(s)
        print()
        table(["REPLICA", "NODE", "STATE", "PORT"], [[r["name"], r["node"] or "-", r["state"], replica_port(r)]
                                                     for r in s["replicas"]])
        if s.get("failures"):
            print("\nRECENT FAILURES:")
            for f in s["failures"]:
                print(f"  {f['name']}: {f['reason'] or 'failed'}")
        return 0
    if args.action == "delete":
        api.delete(f"/services/{args.name}")
        print(f"service {args.name} deleted (its replicas drain, then stop)")
        return 0
    if args.action in rollout.ACTIONS:
        return rollout.run(api, args)
    if args.action == "update" and args.canary_traffic_percent is not None:
        s = rollout.start(api, args)
        if not emit(s, args.output):
            print(s["message"])
            rollout.show(s)
        return 0
    if args.action == "update":
        for flag in ("steps", "bake", "mirror_percent", "max_error_rate", "max_p90", "max_p90_ratio",
                     "max_class_shift", "min_requests"):
            if getattr(args, flag) is not None:
                raise UserError(f"--{flag.replace('_', '-')} belongs to a rollout: give --canary-traffic-percent too")
        body: dict = {}
        for k in ("replicas", "image", "gpus", "cpu", "model_path", "version"):
            if getattr(args, k) is not None:
                body[k] = getattr(args, k)
        if args.memory is not None:
            from tidal.spec import parse_memory_mib
            try:
                body["memory_mib"] = parse_memory_mib(args.memory)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        if args.version_policy is not None:
            from tidal.models.config import VersionPolicy
            body["version_policy"] = VersionPolicy.parse(args.version_policy).model_dump(mode="json")
        if args.env:
            body["env"] = key_values(args.env, "--env")
        if not body:
            raise UserError("nothing to update (give --replicas, --image, --model-path, --version-policy, ...)")
        s = api.patch(f"/services/{args.name}", body)
        if not emit(s, args.output):
            print(f"service {args.name} updated: desired {s['desired']}")
        return 0
    raise UserError(f"unknown action {args.action!r}")
