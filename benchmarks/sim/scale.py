"""Scale of the fuller model: 100 services x 10 zones (1,000 zones-by-services) over 24 h, timed.

Usage: .venv/bin/python benchmarks/sim/scale.py [--services 100] [--zones 10] [--hours 24]
           [--policies tidal,spothedge,tidal-notice]
Each service gets its own offset into a synthetic 10-zone on/off trace (8 spot nodes per zone when up), a
diurnal Poisson request stream (mean 60 requests/s, +-50%), the autoscaler (10 requests/s per replica, 1 to
20 replicas), 120 s preemption notices, 2% of launches refused on top of capacity, and M/M/c latency.
The simulator's work grows as ticks x zones x replicas: the time is reported per service-day and per
zone-service-tick; the CPU time beside the wall time is what the run itself used (on a shared machine the wall
time also counts other work), and the load average at its end. With several policies, each runs on the same services, one after another, and a table
compares them side by side (JSON per policy follows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from tidal.sim import synthetic
from tidal.sim.traces import SpotTrace
from tidal.sim.workload_cli import simulate, summary


def world(zones: int = 10) -> SpotTrace:
    """The scale run's synthetic trace: zones flipping on/off (100/30 points of 5 min), 8 nodes each when up."""
    return synthetic.markov_trace(synthetic.MarkovZones(zones=zones, points=1200, mean_up_points=100,
                                                        mean_down_points=30, up_capacity=8, partial=0.1), 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--zones", type=int, default=10)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--tick", type=float, default=30.0)
    parser.add_argument("--policies", "--policy", default="tidal,spothedge,tidal-notice")
    args = parser.parse_args()
    docs = [run(args, policy) for policy in args.policies.split(",")]
    print(f"| policy | wall s | CPU s | s per service-day | us per zone-service-tick | availability % | "
          f"relative cost % |")
    print("|---|---|---|---|---|---|---|")
    for d in docs:
        print(f"| {d['policy']} | {d['wall_seconds']:.1f} | {d['cpu_seconds']:.1f} | {d['seconds_per_service_day']:.2f} | "
              f"{d['microseconds_per_zone_service_tick']:.0f} | {d['availability'] * 100:.2f} | "
              f"{d['relative_cost'] * 100:.1f} |")
    print(f"\n{args.services} services x {args.zones} zones, {args.hours:g} h at {args.tick:g} s ticks on "
          f"{docs[0]['machine']}")
    print(json.dumps(docs, indent=1))


def run(args: argparse.Namespace, policy: str) -> dict:
    trace = world(args.zones)
    with tempfile.TemporaryDirectory() as directory:
        synthetic.write_trace(trace, directory)
        sim_args = argparse.Namespace(
            traces=directory, policy=policy, requests=None, rate=None, burst=None, diurnal="60,0.5",
            services=args.services, hours=args.hours, tick=args.tick, cold_start=120.0, notice=120.0,
            launch_failure_rate=0.02, service_time=0.05, concurrency=1, slo=0.25, target_qps=10.0, min_replicas=1,
            max_replicas=20, on_demand_price=3.0, seed=0, output="json")
        started, cpu = time.perf_counter(), time.process_time()
        results, seconds = simulate(sim_args)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        doc = summary(results, seconds, sim_args)
    ticks = int(args.hours * 3600 / args.tick)
    doc.update({"zones": args.zones, "zone_services": args.zones * args.services, "ticks": ticks,
                "wall_seconds": wall, "cpu_seconds": cpu, "load_average": os.getloadavg(),
                "seconds_per_service_day": seconds / args.services / (args.hours / 24),
                "microseconds_per_zone_service_tick": seconds / (args.services * args.zones * ticks) * 1e6,
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                           f"Python {platform.python_version()}"})
    doc.pop("trace")
    return doc


if __name__ == "__main__":
    main()
