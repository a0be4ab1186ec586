"""`tidal simulate`: capacity policies on spot-availability traces (`spot`), and the fuller model with requests (`serve`)."""

from __future__ import annotations

import argparse
import sys

import orjson

from tidal.errors import UserError
from tidal.sim.protocol import TraceResult
from tidal.capacity.catalog import NOTICE_SECONDS
from tidal.sim.spot import MODELS, NAMES, SpotRun, capacities, check_params, evaluate


SPOT_EXAMPLES = """examples:
  tidal simulate spot --traces aws1 --policy spothedge
  tidal simulate spot --traces aws2 --policy all -o json
  tidal simulate spot --traces aws1 --policy tidal-hedge --param outage_value=40 --repeats 30
  tidal simulate spot --traces ./my-traces --policy tidal --target 4 --cold-start 180
  tidal simulate spot --traces aws1 --model fuller --provider gcp --policy tidal-notice
  tidal simulate spot --traces ./typed-traces --model fuller --notice 90 --launch-failure-rate 0.02 --policy all
"""

EXAMPLES = SPOT_EXAMPLES + """  tidal simulate serve --traces aws1 --policy tidal --diurnal 60,0.5 --hours 24
  tidal simulate serve --traces aws2 --policy ess --requests rates.csv --services 10 -o json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    sub = parser.add_subparsers(dest="sim_command", metavar="KIND", parser_class=type(parser))
    spot = sub.add_parser("spot", help="the SpotHedge protocol: availability and cost of a capacity policy",
                          description="Run a capacity policy on a directory of spot-availability traces "
                                      "(or a published set: aws1, aws2) under the SpotHedge protocol "
                                      "(spot-simulation.md).")
    spot.add_argument("--traces", required=True, metavar="DIR|NAME",
                      help="directory of per-zone JSON traces, or a published set: aws1, aws2")
    spot.add_argument("--policy", required=True, metavar="NAME", help=f"one of {', '.join(NAMES)}, or all")
    spot.add_argument("--target", type=int, default=3, help="replicas that must be ready (N)")
    spot.add_argument("--overprovision", type=int, default=None, metavar="K",
                      help="extra spot replicas (default: each policy's own; SpotHedge's is 1)")
    spot.add_argument("--cold-start", type=float, default=120.0, metavar="SECONDS",
                      help="from a launch to a ready replica")
    spot.add_argument("--tick", type=float, default=30.0, metavar="SECONDS", help="one decision period")
    spot.add_argument("--ticks", type=int, default=2880, help="ticks per repeat (2880 x 30 s: a day)")
    spot.add_argument("--repeats", type=int, default=10, help="windows of the trace, each a repeat")
    spot.add_argument("--seed", type=int, default=0, help="random seed of the windows' offsets and the policies")
    spot.add_argument("--on-demand-price", type=float, default=3.0, help="per replica-tick; spot costs 1")
    spot.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="a policy parameter, e.g. outage_value=40 for tidal-hedge (repeatable)")
    spot.add_argument("--model", choices=MODELS, default="protocol",
                      help="protocol: SpotHedge's (no notices, one type); fuller: reclaim notices, (type, zone) "
                           "pools, refused launches, moving prices")
    spot.add_argument("--provider", choices=sorted(NOTICE_SECONDS), default="aws",
                      help="the fuller model's notice lead: aws 120 s, gcp 30 s, alibaba 300 s")
    spot.add_argument("--notice", type=float, default=None, metavar="SECONDS",
                      help="the fuller model's notice lead, instead of the provider's")
    spot.add_argument("--launch-failure-rate", type=float, default=0.0, metavar="SHARE",
                      help="the fuller model's spot launches refused at random, on top of capacity (0 to 1)")
    spot.add_argument("-o", "--output", choices=("table", "json"), default="table",
                      help="json: one object per policy (a list of them with --policy all)")
    spot.epilog = SPOT_EXAMPLES
    from tidal.sim import workload_cli  # the fuller model's options live with it
    workload_cli.add_parser(sub, type(parser))


def as_json(result: TraceResult) -> dict:
    a, c = result.availability, result.relative_cost
    return {"trace": result.trace, "policy": result.policy,
            "availability": float(a.mean()), "availability_std": float(a.std()),
            "relative_cost": float(c.mean()), "relative_cost_std": float(c.std()),
            "repeats": [{"availability": r.availability, "relative_cost": r.relative_cost} for r in result.repeats]}


def table(results: list[TraceResult]) -> str:
    lines = [f"{'policy':<12} {'availability %':>18} {'relative cost %':>18}"]
    for r in results:
        a, c = r.availability * 100, r.relative_cost * 100
        lines.append(f"{r.policy:<12} {a.mean():>10.2f} ± {a.std():<5.2f} {c.mean():>10.1f} ± {c.std():<5.1f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.sim_command == "serve":
        from tidal.sim import workload_cli
        return workload_cli.run(args)
    if args.sim_command != "spot":
        raise UserError("say what to simulate: `tidal simulate spot ...` or `tidal simulate serve ...`")
    names = list(NAMES) if args.policy == "all" else [args.policy]
    if args.policy != "all" and args.policy not in NAMES:
        raise UserError(f"unknown policy {args.policy!r} (choose from {', '.join(NAMES)}, or all)")
    params = []
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param {item!r}: expected KEY=VALUE, e.g. outage_value=40")
        params.append((key.strip(), value.strip()))
    run_ = SpotRun(args.target, args.overprovision, args.cold_start, args.tick, args.ticks, args.repeats,
                   args.seed, args.on_demand_price, tuple(params), args.model, args.provider, args.notice,
                   args.launch_failure_rate)
    run_.fuller() if args.model == "fuller" else run_.settings()
    check_params(names, run_)
    loaded = capacities(args.traces, run_)
    from tidal.sim.workload_cli import progress_display
    show = progress_display(args)
    results = []
    for i, name in enumerate(names):
        if show:
            show(f"policy {name} ({i + 1}/{len(names)})")
        results.append(evaluate(args.traces, name, run_, loaded))
    if show:
        sys.stderr.write("\r\x1b[K")
    if args.output == "json":
        doc = as_json(results[0]) if len(results) == 1 else [as_json(r) for r in results]
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        model = "" if args.model == "protocol" else \
            f", fuller model: {run_.fuller().notice_seconds:g} s notices, {args.launch_failure_rate:g} launches refused"
        print(f"trace {args.traces}: {len(loaded[0].zones)} {'pools' if loaded[0].instance_types else 'zones'}, "
              f"N={args.target}, {args.ticks} ticks of {args.tick:g} s, cold start {args.cold_start:g} s, "
              f"{args.repeats} repeats{model}")
        print(table(results))
    return 0


__all__ = ["add_arguments", "run", "as_json", "table"]
