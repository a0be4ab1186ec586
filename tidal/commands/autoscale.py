"""`tidal autoscale`: an HPA on the gateway's QPS for a service, without writing hpa.yaml."""

from __future__ import annotations

import argparse

from tidal.commands.common import client
from tidal.errors import UserError

EXAMPLE = """example (the reference procedure's HPA):
  tidal autoscale bert-tfserving --min 1 --max 10 --target-qps 10
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLE
    parser.add_argument("name", help="the service")
    parser.add_argument("--min", type=int, default=1, dest="min_replicas", help="fewest replicas")
    parser.add_argument("--max", type=int, required=True, dest="max_replicas", help="most replicas")
    parser.add_argument("--target-qps", type=float, required=True, help="requests per second per replica")
    parser.add_argument("--burst", action="store_true", help="Tidal's burst mode (Knative-style panic window)")
    parser.add_argument("--delete", action="store_true", help="remove the service's autoscaler")


def hpa_document(service: str, min_replicas: int, max_replicas: int, target_qps: float, burst: bool) -> dict:
    """The same autoscaler as an autoscaling/v2 document, so one parser reads every autoscaler."""
    if target_qps <= 0:
        raise UserError("--target-qps must be positive")
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{service}-hpa",
                     "annotations": {"autoscaling.tidal.dev/burst": "true" if burst else "false"}},
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
    doc = hpa_document(args.name, args.min_replicas, args.max_replicas, args.target_qps, args.burst)
    api.put(f"/services/{args.name}/autoscaler", {"document": doc})
    print(f"{args.name}: {args.min_replicas} to {args.max_replicas} replicas at {args.target_qps:g} QPS per replica")
    return 0
