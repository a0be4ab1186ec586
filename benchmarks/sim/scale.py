"""Scale of the fuller model: 100 services x 10 zones (1,000 zones-by-services) over 24 h, timed.

Usage: .venv/bin/python benchmarks/sim/scale.py [--services 100] [--zones 10] [--hours 24] [--policy tidal]
Each service gets its own offset into a synthetic 10-zone on/off trace (8 spot nodes per zone when up), a
diurnal Poisson request stream (mean 60 requests/s, +-50%), the autoscaler (10 requests/s per replica, 1 to
20 replicas), 120 s preemption notices, 2% of launches refused on top of capacity, and M/M/c latency.
The simulator's work grows as ticks x zones x replicas: the time is reported per service-day and per
zone-service-tick.
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
    parser.add_argument("--policy", default="tidal")
    args = parser.parse_args()
    trace = world(args.zones)
    with tempfile.TemporaryDirectory() as directory:
        synthetic.write_trace(trace, directory)
        sim_args = argparse.Namespace(
            traces=directory, policy=args.policy, requests=None, rate=None, burst=None, diurnal="60,0.5", services=args.services,
            hours=args.hours, tick=args.tick, cold_start=120.0, notice=120.0, launch_failure_rate=0.02,
            service_time=0.05, concurrency=1, slo=0.25, target_qps=10.0, min_replicas=1, max_replicas=20,
            on_demand_price=3.0, seed=0, output="json")
        started = time.perf_counter()
        results, seconds = simulate(sim_args)
        wall = time.perf_counter() - started
        doc = summary(results, seconds, sim_args)
    ticks = int(args.hours * 3600 / args.tick)
    doc.update({"zones": args.zones, "zone_services": args.zones * args.services, "ticks": ticks,
                "wall_seconds": wall, "seconds_per_service_day": seconds / args.services / (args.hours / 24),
                "microseconds_per_zone_service_tick": seconds / (args.services * args.zones * ticks) * 1e6,
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                           f"Python {platform.python_version()}"})
    doc.pop("trace")
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
