"""`tidal autoscale`: an HPA for a service without writing hpa.yaml: QPS, concurrency, p90 latency, the gateway's
queue, a replica's Prometheus metric, cron windows and a forecast."""

from __future__ import annotations

import argparse

from tidal.commands.common import client
from tidal.errors import InvalidArgument, UserError

EXAMPLE = """examples:
  tidal autoscale bert-tfserving --min 1 --max 10 --target-qps 10     # the reference procedure's HPA
  tidal autoscale bert-tfserving --max 10 --target-concurrency 4 --target-p90-ms 200
  tidal autoscale bert-tfserving --max 10 --target-metric tidal_requests_total=8
  tidal autoscale bert-tfserving --max 10 --target-qps 10 --schedule "0 9 * * 1-5 min=4 for=9h" --predictive
  tidal autoscale rare-model --min 0 --max 4 --target-qps 10 --idle 300 --queue-size 100 --queue-wait 30

Several targets at once follow the HPA's rule: the largest recommendation wins.
--schedule windows (cron, UTC unless tz=...) and --predictive only raise the minimum.
With --min 0 the service goes to zero replicas after --idle seconds without a request; the
gateway then holds requests (at most --queue-size, each up to --queue-wait seconds) while one
replica starts.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLE
    parser.add_argument("name", help="the service")
    parser.add_argument("--min", type=int, default=1, dest="min_replicas", help="fewest replicas")
    parser.add_argument("--max", type=int, dest="max_replicas", help="most replicas (required unless --delete)")
    parser.add_argument("--target-qps", type=float, help="requests per second per replica")
    parser.add_argument("--target-concurrency", type=float, metavar="N",
                        help="requests in flight per replica (measured at the gateway)")
    parser.add_argument("--target-p90-ms", type=float, metavar="MS",
                        help="a p90 latency target: replicas grow in proportion when the gateway's p90 is above it")
    parser.add_argument("--target-queue", type=float, metavar="N",
                        help="requests waiting at the gateway per replica to start")
    parser.add_argument("--target-metric", action="append", default=[], metavar="NAME=VALUE",
                        help="a metric each replica exposes on /metrics, averaged per replica (a counter as its rate)")
    parser.add_argument("--schedule", action="append", default=[], metavar="'CRON min=N [for=9h] [tz=ZONE]'",
                        help="a cron window that raises the minimum (repeatable)")
    parser.add_argument("--predictive", action="store_true",
                        help="raise the minimum ahead of the rate forecast from the service's daily and weekly history "
                             "(needs --target-qps)")
    parser.add_argument("--burst", action="store_true", help="Tidal's burst mode (Knative-style panic window)")
    parser.add_argument("--delete", action="store_true", help="remove the service's autoscaler")
    parser.add_argument("--idle", type=float, metavar="SECONDS",
                        help="with --min 0: seconds without a request before going to zero (default 300)")
    parser.add_argument("--queue-size", type=int, metavar="N",
                        help="with --min 0: requests the gateway holds while a replica starts (default 100)")
    parser.add_argument("--queue-wait", type=float, metavar="SECONDS",
                        help="with --min 0: how long a held request waits for a replica (default 30)")


def _target(value: float, flag: str) -> str:
    if not value > 0:
        raise UserError(f"{flag} must be positive")
    return f"{value:g}"


def metric_specs(service: str, target_qps: float | None, *, concurrency: float | None = None,
                 p90_ms: float | None = None, queue: float | None = None,
                 replica_metrics: list[str] = ()) -> list[dict]:
    """The HPA metrics for the flags given, in autoscaling/v2 form."""
    from tidal.autoscaling.signals import CONCURRENCY, LATENCY_P90, QUEUE_LENGTH
    out = []
    if target_qps is not None:
        out.append({"type": "External", "external": {
            "metric": {"name": "tidal_service_qps", "selector": {"matchLabels": {"service": service}}},
            "target": {"type": "AverageValue", "averageValue": _target(target_qps, "--target-qps")}}})
    if concurrency is not None:
        out.append({"type": "Pods", "pods": {"metric": {"name": CONCURRENCY}, "target": {
            "type": "AverageValue", "averageValue": _target(concurrency, "--target-concurrency")}}})
    if p90_ms is not None:
        out.append({"type": "External", "external": {"metric": {"name": LATENCY_P90}, "target": {
            "type": "Value", "value": _target(p90_ms, "--target-p90-ms") + "m"}}})
    if queue is not None:
        out.append({"type": "External", "external": {"metric": {"name": QUEUE_LENGTH}, "target": {
            "type": "AverageValue", "averageValue": _target(queue, "--target-queue")}}})
    for item in replica_metrics:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None:
            raise UserError(f"--target-metric {item!r}: expected NAME=VALUE, e.g. tidal_requests_total=8")
        out.append({"type": "Pods", "pods": {"metric": {"name": name.strip()}, "target": {
            "type": "AverageValue", "averageValue": _target(number, f"--target-metric {name.strip()}")}}})
    if not out:
        raise UserError("give at least one target: --target-qps, --target-concurrency, --target-p90-ms, "
                        "--target-queue or --target-metric")
    return out


def hpa_document(service: str, min_replicas: int, max_replicas: int, target_qps: float | None, burst: bool,
                 zero: dict[str, float | int | None] | None = None, *, metrics: list[dict] | None = None,
                 schedule: list[str] = (), predictive: bool = False) -> dict:
    """The same autoscaler as an autoscaling/v2 document, so one parser reads every autoscaler.
    `zero`: ZeroSettings' fields (idle_seconds, queue_size, queue_wait_seconds) given, as annotations;
    `metrics`: from `metric_specs` (default: the QPS target alone)."""
    from tidal.autoscaling.schedule import parse_schedule
    from tidal.autoscaling.spec import PREDICTIVE_ANNOTATION, SCHEDULE_ANNOTATION, ZERO_ANNOTATIONS
    if metrics is None:
        if target_qps is None or target_qps <= 0:
            raise UserError("--target-qps must be positive")
        metrics = metric_specs(service, target_qps)
    annotations = {"autoscaling.tidal.dev/burst": "true" if burst else "false"}
    given = {k: v for k, v in (zero or {}).items() if v is not None}
    if given and min_replicas != 0:
        raise UserError("--idle, --queue-size and --queue-wait apply only with --min 0")
    annotations.update({ZERO_ANNOTATIONS[k]: f"{v:g}" if isinstance(v, float) else str(v) for k, v in given.items()})
    if schedule:
        text = "; ".join(s.strip() for s in schedule)
        try:
            parse_schedule(text)
        except InvalidArgument as exc:
            raise UserError(exc.message) from None
        annotations[SCHEDULE_ANNOTATION] = text
    if predictive:
        if target_qps is None:
            raise UserError("--predictive needs --target-qps (the forecast is a request rate)")
        annotations[PREDICTIVE_ANNOTATION] = "true"
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{service}-hpa", "annotations": annotations},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service},
                 "minReplicas": min_replicas, "maxReplicas": max_replicas, "metrics": metrics},
    }


def run(args) -> int:
    api = client()
    if args.delete:
        api.delete(f"/services/{args.name}/autoscaler")
        print(f"autoscaler of {args.name} removed")
        return 0
    if args.max_replicas is None:
        raise UserError("--max is required")
    metrics = metric_specs(args.name, args.target_qps, concurrency=args.target_concurrency,
                           p90_ms=args.target_p90_ms, queue=args.target_queue, replica_metrics=args.target_metric)
    doc = hpa_document(args.name, args.min_replicas, args.max_replicas, args.target_qps, args.burst,
                       {"idle_seconds": args.idle, "queue_size": args.queue_size,
                        "queue_wait_seconds": args.queue_wait}, metrics=metrics, schedule=args.schedule,
                       predictive=args.predictive)
    api.put(f"/services/{args.name}/autoscaler", {"document": doc})
    targets = []
    if args.target_qps is not None:
        targets.append(f"{args.target_qps:g} QPS")
    if args.target_concurrency is not None:
        targets.append(f"{args.target_concurrency:g} in flight")
    if args.target_p90_ms is not None:
        targets.append(f"p90 {args.target_p90_ms:g} ms")
    if args.target_queue is not None:
        targets.append(f"{args.target_queue:g} queued")
    targets += [m.strip() for m in args.target_metric]
    extra = ""
    if args.min_replicas == 0:
        extra = f"; to zero after {args.idle if args.idle is not None else 300:g}s without a request"
    if args.schedule:
        extra += f"; {len(args.schedule)} schedule window(s)"
    if args.predictive:
        extra += "; predictive"
    print(f"{args.name}: {args.min_replicas} to {args.max_replicas} replicas at {', '.join(targets)} per replica"
          f"{extra}")
    return 0
