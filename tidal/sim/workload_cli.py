"""`tidal simulate serve`: the fuller model (notices, launch failures, requests, autoscaler, latency) for K services."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import orjson

from tidal.capacity.policies import POLICIES
from tidal.errors import UserError
from tidal.sim import traces, workload
from tidal.sim.fleet import FleetResult, FleetSettings, run_service

EXAMPLES = """examples:
  tidal simulate serve --traces aws1 --policy tidal --diurnal 60,0.5 --hours 24
  tidal simulate serve --traces aws2 --policy ess --rate 40 --services 10 -o json
  tidal simulate serve --traces aws1 --policy spothedge --requests rates.csv --slo 0.5
"""


def add_parser(sub, parser_class) -> None:
    p = sub.add_parser("serve", help="the fuller model: requests, autoscaler, notices, latency and cost",
                       description="Simulate services served on spot and on-demand nodes chosen by a capacity "
                                   "policy, with preemption notices, launch failures, an autoscaler driven by a "
                                   "request trace, and per-request latency from an M/M/c model of the replicas.")
    p.add_argument("--traces", required=True, metavar="DIR|NAME",
                   help="directory of per-zone spot traces, or a published set: aws1, aws2")
    p.add_argument("--policy", required=True, metavar="NAME", help=", ".join(POLICIES))
    load = p.add_mutually_exclusive_group()
    load.add_argument("--requests", metavar="CSV", help="per-second request rates, one per row")
    load.add_argument("--rate", type=float, help="a constant Poisson rate (requests/s)")
    load.add_argument("--burst", metavar="BASE,PEAK,EVERY,SECONDS", help="periodic bursts (default 20,80,3600,300)")
    load.add_argument("--diurnal", metavar="MEAN,AMPLITUDE",
                      help="a daily sine around MEAN requests/s, +-AMPLITUDE as a share of MEAN (e.g. 60,0.5)")
    p.add_argument("--services", type=int, default=1, help="independent services, each on its own trace offset")
    p.add_argument("--hours", type=float, default=24.0, help="simulated time")
    p.add_argument("--tick", type=float, default=10.0, metavar="SECONDS", help="one decision period")
    p.add_argument("--cold-start", type=float, default=120.0, metavar="SECONDS",
                   help="from a launch to a ready replica")
    p.add_argument("--notice", type=float, default=120.0, metavar="SECONDS", help="preemption notice")
    p.add_argument("--launch-failure-rate", type=float, default=0.0,
                   help="share of launches refused on top of the trace's capacity (0 to 1)")
    p.add_argument("--service-time", type=float, default=0.05, metavar="SECONDS",
                   help="mean time a replica spends on one request")
    p.add_argument("--concurrency", type=int, default=1, help="requests one replica serves at once")
    p.add_argument("--slo", type=float, default=0.25, metavar="SECONDS", help="latency objective per request")
    p.add_argument("--target-qps", type=float, default=10.0, help="the autoscaler's QPS per replica")
    p.add_argument("--min", type=int, default=1, dest="min_replicas", help="the autoscaler's fewest replicas")
    p.add_argument("--max", type=int, default=10, dest="max_replicas", help="the autoscaler's most replicas")
    p.add_argument("--on-demand-price", type=float, default=3.0, help="per node-tick; spot costs 1")
    p.add_argument("--seed", type=int, default=0, help="random seed of the offsets, arrivals and policies")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="summary format")
    p.epilog = EXAMPLES


def _rates(args: argparse.Namespace, seconds: int) -> np.ndarray:
    if args.requests:
        return workload.from_csv(args.requests)
    if args.rate is not None:
        if args.rate < 0:
            raise UserError("--rate must be non-negative")
        return workload.constant(args.rate, seconds)
    if args.diurnal:
        try:
            mean, amplitude = (float(x) for x in args.diurnal.split(","))
        except ValueError:
            raise UserError(f"bad --diurnal {args.diurnal!r}: expected MEAN,AMPLITUDE") from None
        return workload.diurnal(mean, amplitude, seconds)
    try:
        base, peak, every, length = (float(x) for x in (args.burst or "20,80,3600,300").split(","))
    except ValueError:
        raise UserError(f"bad --burst {args.burst!r}: expected BASE,PEAK,EVERY,SECONDS") from None
    return workload.bursts(base, peak, int(every), int(length), seconds)


def simulate(args: argparse.Namespace, progress=None) -> tuple[list[FleetResult], float]:
    """Run the services one after another; `progress(text)`, when given, hears which one is running."""
    if args.policy not in POLICIES:
        raise UserError(f"unknown policy {args.policy!r} (choose from {', '.join(POLICIES)})")
    if args.services < 1 or args.hours <= 0 or args.tick <= 0:
        raise UserError("--services, --hours and --tick must be positive")
    settings = FleetSettings(tick_seconds=args.tick, cold_start_seconds=args.cold_start, notice_seconds=args.notice,
                             launch_failure_rate=args.launch_failure_rate, service_seconds=args.service_time,
                             concurrency=args.concurrency, slo_seconds=args.slo, target_qps_per_replica=args.target_qps,
                             min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                             on_demand_price=args.on_demand_price)
    trace = traces.load_spot_traces(args.traces)
    expanded = traces.expand(trace, args.tick)
    ticks = int(round(args.hours * 3600 / args.tick))
    offsets = traces.offsets(expanded, ticks, args.services, args.seed)
    rates = _rates(args, int(ticks * args.tick))
    policy = POLICIES[args.policy]
    fields = policy.params.model_fields
    params = policy.params(**{k: v for k, v in (("cold_start_seconds", args.cold_start),
                                                 ("decision_seconds", args.tick),
                                                 ("notice_seconds", args.notice)) if k in fields})
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    results = []
    for i, o in enumerate(offsets):
        if progress:
            progress(f"service {i + 1}/{len(offsets)}, {time.perf_counter() - started:.0f} s")
        results.append(run_service(traces.window(expanded, o, ticks), trace.zones,
                                   workload.arrivals(rates, args.tick, ticks, rng), policy, params, settings,
                                   args.seed + i))
    return results, time.perf_counter() - started


def summary(results: list[FleetResult], seconds: float, args: argparse.Namespace) -> dict:
    requests = sum(r.requests for r in results)
    cost = sum(r.cost for r in results)
    od = sum(r.on_demand_cost for r in results)
    served = [r for r in results if np.isfinite(r.mean_latency_seconds)]
    return {"trace": args.traces, "policy": args.policy, "services": len(results), "hours": args.hours,
            "requests": requests,
            "slo_attainment": sum(r.slo_attainment * r.requests for r in results) / requests if requests else 1.0,
            "failed_requests": sum(r.failed_requests for r in results),
            "mean_latency_seconds": (sum(r.mean_latency_seconds * r.requests for r in served)
                                     / max(1, sum(r.requests for r in served))),
            "availability": float(np.mean([r.availability for r in results])),
            "cost": cost, "relative_cost": cost / od if od else 0.0,
            "cost_vs_on_demand_policy": cost / sum(float(r.desired.sum()) * r.on_demand_price for r in results),
            "preemptions": sum(r.preemptions for r in results),
            "launch_failures": sum(r.launch_failures for r in results),
            "service_ticks": int(sum(r.ready.size for r in results)), "elapsed_seconds": seconds}


def progress_display(args: argparse.Namespace):
    """A one-line progress display on a terminal (long runs say where they are); None elsewhere."""
    if not sys.stderr.isatty() or getattr(args, "no_progress", False):
        return None

    def show(text: str) -> None:
        sys.stderr.write("\r\x1b[K" + text)
        sys.stderr.flush()
    return show


def run(args: argparse.Namespace) -> int:
    results, seconds = simulate(args, progress=progress_display(args))
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
    doc = summary(results, seconds, args)
    if args.output == "json":
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return 0
    print(f"{doc['services']} service(s), {doc['hours']:g} h on {args.traces}, policy {args.policy}")
    print(f"  requests          {doc['requests']}  (failed: {doc['failed_requests']})")
    print(f"  SLO attainment    {doc['slo_attainment'] * 100:.2f}% within {args.slo:g} s, "
          f"mean latency {doc['mean_latency_seconds'] * 1000:.1f} ms")
    print(f"  availability      {doc['availability'] * 100:.2f}% of ticks with the desired replicas ready")
    print(f"  cost              {doc['relative_cost'] * 100:.1f}% of the same node-hours on demand, "
          f"{doc['cost_vs_on_demand_policy'] * 100:.1f}% of an on-demand pool of the desired replicas")
    print(f"  preemptions       {doc['preemptions']}, launch failures {doc['launch_failures']}")
    print(f"  simulated in      {seconds:.1f} s")
    return 0
