"""SpotHedge against Tidal's policy on traces nobody tuned on: the published traces transformed, and synthetic ones.

Usage: .venv/bin/python benchmarks/sim/synthetic_table.py [--repeats 10] [--seed 0] [--jobs 2] [--policies spothedge,tidal]
Prints a Markdown table (relative cost % / availability %, mean over the repeats, the SpotHedge protocol) and
writes the numbers to synthetic_table.json next to this script. The families:
- the published traces played backwards, reduced to available/unavailable (0 / unlimited, as a source without
  counts gives them), and joined side by side (6 zones);
- zones flipping on/off with geometric (memoryless) or log-normal (heavy-tailed) periods, with partial capacity,
  shared shocks, 2 to 9 zones, 2 to 16 nodes per zone or unlimited;
- capacity that random-walks a node at a time, with crashes;
- always and never available.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from multiprocessing import Pool

from tidal.capacity.policies import POLICIES
from tidal.sim import synthetic, traces
from tidal.sim.protocol import ProtocolSettings, run_trace

TRACES = os.environ.get("TIDAL_TRACES", "/work/shared/traces/spot")
M = synthetic.MarkovZones
U = synthetic.UNLIMITED


def _published(name: str) -> traces.SpotTrace:
    return traces.load_spot_traces(os.path.join(TRACES, name))


def cases() -> dict[str, traces.SpotTrace]:
    aws1, aws2 = _published("AWS1"), _published("AWS2")
    joined = synthetic.joined_trace(aws1, aws2, name="AWS1+AWS2")
    mk = synthetic.markov_trace
    return {
        "AWS1": aws1,
        "AWS2": aws2,
        "AWS1 backwards": synthetic.reversed_trace(aws1),
        "AWS2 backwards": synthetic.reversed_trace(aws2),
        "AWS1 available/unavailable": synthetic.binary_trace(aws1),
        "AWS2 available/unavailable": synthetic.binary_trace(aws2),
        "AWS1 backwards, available/unavailable": synthetic.binary_trace(synthetic.reversed_trace(aws1)),
        "AWS2 backwards, available/unavailable": synthetic.binary_trace(synthetic.reversed_trace(aws2)),
        "AWS1 + AWS2 side by side (6 zones)": joined,
        "AWS1 + AWS2, available/unavailable": synthetic.binary_trace(joined),
        "on/off 100/30 points, 4 per zone": mk(M(mean_up_points=100, mean_down_points=30), 1),
        "on/off 30/30, 10% partial": mk(M(mean_up_points=30, mean_down_points=30, partial=0.1), 2),
        "on/off 200/20 + shared shocks": mk(M(mean_up_points=200, mean_down_points=20, shock=0.01), 3),
        "2 zones, on/off 80/40": mk(M(zones=2, mean_up_points=80, mean_down_points=40), 4),
        "16 per zone, on/off 50/50, 30% partial": mk(M(up_capacity=16, mean_up_points=50, mean_down_points=50,
                                                       partial=0.3), 5),
        "6 zones unlimited, on/off 50/50": mk(M(zones=6, mean_up_points=50, mean_down_points=50, up_capacity=U), 6),
        "9 zones unlimited, on/off 30/10 + shocks": mk(M(zones=9, mean_up_points=30, mean_down_points=10,
                                                         up_capacity=U, shock=0.02), 7),
        "3 zones unlimited, on/off 20/5": mk(M(zones=3, mean_up_points=20, mean_down_points=5, up_capacity=U), 8),
        "2 per zone, on/off 400/100": mk(M(mean_up_points=400, mean_down_points=100, up_capacity=2), 9),
        "log-normal periods 40/10": synthetic.lognormal_trace(3, 40, 10, 1.5, 4, 10),
        "log-normal 20/20, 4 zones, 20% partial": synthetic.lognormal_trace(4, 20, 20, 1.2, 6, 11, partial=0.2),
        "random walk 0-4, slow": synthetic.walk_trace(3, 4, 0.05, 12),
        "random walk 0-8, fast": synthetic.walk_trace(3, 8, 0.2, 13, crash=0.003),
        "random walk 0-3, 5 zones": synthetic.walk_trace(5, 3, 0.1, 14),
        "always available": synthetic.constant_trace(3, U),
        "never available": synthetic.constant_trace(3, 0),
    }


def _run(job: tuple[str, str, int, int]) -> tuple[str, str, float, float]:
    name, policy_name, repeats, seed = job
    trace = cases()[name]
    expanded = traces.expand(trace, 30)
    caps = [traces.window(expanded, o, 2880) for o in traces.offsets(expanded, 2880, repeats, seed)]
    policy = POLICIES[policy_name]
    result = run_trace(caps, trace.zones, policy, policy.params(), ProtocolSettings(), seed=seed)
    return name, policy_name, float(result.relative_cost.mean()), float(result.availability.mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--policies", default="spothedge,tidal")
    args = parser.parse_args()
    names, policies = list(cases()), args.policies.split(",")
    started = time.time()
    with Pool(args.jobs) as pool:
        rows = pool.map(_run, [(n, p, args.repeats, args.seed) for n in names for p in policies], chunksize=1)
    got = {(n, p): (c, a) for n, p, c, a in rows}
    base = policies[0]
    print(f"| trace (3 zones unless said) | " + " | ".join(f"{p} cost % / avail %" for p in policies)
          + f" | {policies[-1]} vs {base} |")
    print("|---|" + "---|" * len(policies) + "---|")
    wins = 0
    for n in names:
        (bc, ba), (tc, ta) = got[(n, base)], got[(n, policies[-1])]
        if tc < bc and ta >= ba:
            verdict, wins = "cheaper, as available or more", wins + 1
        elif tc == bc and ta == ba:
            verdict = "the same"
        else:
            verdict = ("cheaper" if tc < bc else "dearer") + (", less available" if ta < ba else ", more available")
        print(f"| {n} | " + " | ".join(f"{got[(n, p)][0] * 100:.1f} / {got[(n, p)][1] * 100:.2f}" for p in policies)
              + f" | {verdict} |")
    print(f"\n{policies[-1]} cheaper and at least as available as {base} on {wins} of {len(names)} traces; "
          f"{args.repeats} repeats, seed {args.seed}, {time.time() - started:.0f} s with {args.jobs} jobs")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic_table.json")
    with open(out, "w") as f:
        json.dump({"repeats": args.repeats, "seed": args.seed, "results": [
            {"trace": n, "policy": p, "relative_cost": got[(n, p)][0], "availability": got[(n, p)][1]}
            for n in names for p in policies]}, f, indent=1)


if __name__ == "__main__":
    main()
