"""Two policies in the fuller model on the same services, run by run: where a cheaper policy loses ready ticks.

Usage: .venv/bin/python benchmarks/sim/fleet_pair.py [--policies spothedge,tidal] [--services 20] [--hours 24]
           [--tick 30] [--profile diurnal|bursts] [--rate-scale 1] [--trace-speed 1]
The scale run's world (benchmarks/sim/scale.py: a synthetic 10-zone trace with 8 nodes per zone when up, 120 s
notices, 2% of launches refused, 1-20 replicas at 10 requests/s each). `--tick 10 --rate-scale 3
--trace-speed 3` is the stress case of docs/capacity-policy.md: three times the requests (most services pinned
at 20 replicas) and capacity changing three times as often. Prints, per policy, the ready service-ticks,
availability and cost against an on-demand pool of the desired replicas, and how many services were less
available or dearer than the first.
"""

from __future__ import annotations

import argparse

import numpy as np

from scale import world  # this folder is on the path when the script runs

from tidal.capacity.policies import POLICIES
from tidal.sim import traces, workload
from tidal.sim.fleet import FleetSettings, run_service


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policies", default="spothedge,tidal")
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--tick", type=float, default=30.0)
    parser.add_argument("--profile", choices=("diurnal", "bursts"), default="diurnal")
    parser.add_argument("--rate-scale", type=float, default=1.0)
    parser.add_argument("--trace-speed", type=float, default=1.0, help="capacity changes this many times as often")
    args = parser.parse_args()
    names = args.policies.split(",")
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        parser.error(f"--policies: unknown {', '.join(unknown)} (known: {', '.join(POLICIES)})")
    if min(args.services, args.hours, args.tick, args.rate_scale, args.trace_speed) <= 0:
        parser.error("--services, --hours, --tick, --rate-scale and --trace-speed must be positive")
    trace = world()
    expanded = traces.expand(trace, args.tick * args.trace_speed)
    ticks = int(args.hours * 3600 / args.tick)
    settings = FleetSettings(tick_seconds=args.tick, notice_seconds=120.0, launch_failure_rate=0.02,
                             max_replicas=20)
    seconds = int(ticks * args.tick)
    rates = workload.diurnal(60, 0.5, seconds) if args.profile == "diurnal" else \
        workload.bursts(20, 120, 3600, 600, seconds)
    totals = {n: [0, 0, 0.0, 0.0] for n in names}
    less = {n: 0 for n in names}
    dearer = {n: 0 for n in names}
    for i, offset in enumerate(traces.offsets(expanded, ticks, args.services, 0)):
        arrivals = workload.arrivals(rates * args.rate_scale, args.tick, ticks, np.random.default_rng(i))
        runs = {n: run_service(traces.window(expanded, offset, ticks), trace.zones, arrivals, POLICIES[n],
                               POLICIES[n].params(), settings, i) for n in names}
        ready = {n: int((r.ready >= r.desired).sum()) for n, r in runs.items()}
        base = names[0]
        for n, r in runs.items():
            t = totals[n]
            t[0] += ready[n]
            t[1] += ticks
            t[2] += r.cost
            t[3] += float(r.desired.sum()) * settings.on_demand_price
            less[n] += ready[n] < ready[base]
            dearer[n] += r.cost > runs[base].cost
    print(f"{args.services} services x {args.hours:g} h, {args.tick:g} s ticks, {args.profile} x {args.rate_scale:g}, "
          f"capacity {args.trace_speed:g}x as fast")
    for n, (ok, all_, cost, od) in totals.items():
        print(f"{n:12s} ready {ok}/{all_} service-ticks ({100 * ok / all_:.3f}%), cost {100 * cost / od:.2f}% of an "
              f"on-demand pool; services less available than {names[0]}: {less[n]}, dearer: {dearer[n]}")


if __name__ == "__main__":
    main()
