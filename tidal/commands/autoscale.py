"""`tidal autoscale`: an HPA on the gateway's QPS for a service, without writing hpa.yaml."""

from __future__ import annotations

import argparse

from tidal.commands.common import client
from tidal.errors import UserError

EXAMPLE = """examples:
  tidal autoscale bert-tfserving --min 1 --max 10 --target-qps 10     # the reference procedure's HPA
  tidal autoscale rare-model --min 0 --max 4 --target-qps 10 --idle 300 --queue-size 100 --queue-wait 30

With --min 0 the service goes to zero replicas after --idle seconds without a request; the
gateway then holds requests (at most --queue-size, each up to --queue-wait seconds) while one
replica starts.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLE
    parser.add_argument("name", help="the service")
    parser.add_argument("--min", type=int, default=1, dest="min_replicas", help="fewest replicas")
    parser.add_argument("--max", type=int, required=True, dest="max_replicas", help="most replicas")
    parser.add_argument("--target-qps", type=float, required=True, help="requests per second per replica")
    parser.add_argument("--burst", action="store_true", help="Tidal's burst mode (Knative-style panic window)")
    parser.add_argument("--delete", action="store_true", help="remove the service's autoscaler")
    parser.add_argument("--idle", type=float, metavar="SECONDS",
                        help="with --min 0: seconds without a request before going to zero (default 300)")
    parser.add_argument("--queue-size", type=int, metavar="N",
                        help="with --min 0: requests the gateway holds while a replica starts (default 100)")
    parser.add_argument("--queue-wait", type=float, metavar="SECONDS",
                        help="with --min 0: how long a held request waits for a replica (default 30)")


def hpa_document(service: str, min_replicas: int, max_replicas: int, target_qps: float, burst: bool,
                 zero: dict[str, float | int | None] | None = None) -> dict:
    """The same autoscaler as an autoscaling/v2 document, so one parser reads every autoscaler.
    `zero`: ZeroSettings' fields (idle_seconds, queue_size, queue_wait_seconds) given, as annotations."""
    from tidal.autoscaling.spec import ZERO_ANNOTATIONS
    if target_qps <= 0:
        raise UserError("--target-qps must be positive")
    annotations = {"autoscaling.tidal.dev/burst": "true" if burst else "false"}
    given = {k: v for k, v in (zero or {}).items() if v is not None}
    if given and min_replicas != 0:
        raise UserError("--idle, --queue-size and --queue-wait apply only with --min 0")
    annotations.update({ZERO_ANNOTATIONS[k]: f"{v:g}" if isinstance(v, float) else str(v) for k, v in given.items()})
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{service}-hpa", "annotations": annotations},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service},
                 "minReplicas": min_replicas, "maxReplicas": max_replicas,
                 "metrics": [{"type": "External", "external": {
                     "metric": {"name": "tidal_service_qps", "selector": {"matchLabels": {"service": service}}},
                     "target": {"type": "AverageValue", "averageValue": str(target_qps)}}}]},
    }


def run(args) -> int:
    api = client()
    if args.delete:
        api.delete(f"/services/{args.name}/autoscaler")
        print(f"autoscaler of {args.name} removed")
        return 0
    doc = hpa_document(args.name, args.min_replicas, args.max_replicas, args.target_qps, args.burst,
                       {"idle_seconds": args.idle, "queue_size": args.queue_size,
                        "queue_wait_seconds": args.queue_wait})
    api.put(f"/services/{args.name}/autoscaler", {"document": doc})
    extra = ""
    if args.min_replicas == 0:
        extra = f"; to zero after {args.idle if args.idle is not None else 300:g}s without a request"
    print(f"{args.name}: {args.min_replicas} to {args.max_replicas} replicas at {args.target_qps:g} QPS per replica"
          f"{extra}")
    return 0
