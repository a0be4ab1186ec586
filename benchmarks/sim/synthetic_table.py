"""SpotHedge against Tidal's policy on synthetic traces of the protocol's format (traces nobody tuned on).

Usage: .venv/bin/python benchmarks/sim/synthetic_table.py [--repeats 10]
Zones alternate up/down with geometric lengths (points of 5 minutes), optionally with partial capacity,
shared shocks (correlated zones), 2 zones, 16 nodes per zone; plus always and never available.
"""

from __future__ import annotations

import argparse

from tidal.capacity.policies import POLICIES
from tidal.sim import synthetic, traces
from tidal.sim.protocol import ProtocolSettings, run_trace

M = synthetic.MarkovZones
CASES = {
    "on/off, up 100 / down 30": (M(mean_up_points=100, mean_down_points=30), 1),
    "on/off 30/30, 10% partial": (M(mean_up_points=30, mean_down_points=30, partial=0.1), 2),
    "200/20 + shared shocks": (M(mean_up_points=200, mean_down_points=20, shock=0.01), 3),
    "2 zones, 80/40": (M(zones=2, mean_up_points=80, mean_down_points=40), 4),
    "16 per zone, 50/50, 30% partial": (M(up_capacity=16, mean_up_points=50, mean_down_points=50, partial=0.3), 5),
    "always available": None,
    "never available": None,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print("| synthetic trace (3 zones unless said) | SpotHedge cost % / avail % | tidal cost % / avail % |")
    print("|---|---|---|")
    for name, case in CASES.items():
        if case is None:
            trace = synthetic.constant_trace(3, synthetic.UNLIMITED if name.startswith("always") else 0)
        else:
            trace = synthetic.markov_trace(*case)
        expanded = traces.expand(trace, 30)
        caps = [traces.window(expanded, o, 2880) for o in traces.offsets(expanded, 2880, args.repeats, 0)]
        cells = []
        for policy_name in ("spothedge", "tidal"):
            policy = POLICIES[policy_name]
            r = run_trace(caps, trace.zones, policy, policy.params(), ProtocolSettings())
            cells.append(f"{r.relative_cost.mean() * 100:.1f} / {r.availability.mean() * 100:.2f}")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
