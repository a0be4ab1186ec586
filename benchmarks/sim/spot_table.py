"""All capacity policies on the published spot traces under the SpotHedge protocol: the table for RESULTS.md.

Usage: .venv/bin/python benchmarks/sim/spot_table.py [--sets AWS1,AWS2] [--traces DIR] [--repeats 10]
The sets are the published traces shipped with Tidal, loaded by name (`aws1`, `aws2`); `--traces DIR` reads
`DIR/<set>` folders instead. Prints a Markdown table (relative cost % / availability %, mean ± std over the repeats) and writes the raw
numbers as JSON next to this script (spot_table.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from tidal.sim.cli import as_json
from tidal.sim.spot import NAMES, SpotRun, capacities, evaluate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", default=None, metavar="DIR",
                        help="a folder holding one trace folder per set (default: the published sets, by name)")
    parser.add_argument("--sets", default="AWS1,AWS2")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--policies", default=",".join(NAMES))
    args = parser.parse_args()
    run = SpotRun(repeats=args.repeats)
    sets = args.sets.split(",")
    names = args.policies.split(",")
    results: dict[str, dict[str, dict]] = {}
    timing: dict[str, float] = {}
    for trace_set in sets:
        # By name, the results say "aws1" rather than where the package happens to be installed.
        directory = os.path.join(args.traces, trace_set) if args.traces else trace_set.lower()
        loaded = capacities(directory, run)
        for name in names:
            started = time.perf_counter()
            results.setdefault(name, {})[trace_set] = as_json(evaluate(directory, name, run, loaded))
            timing[f"{name}/{trace_set}"] = time.perf_counter() - started
    print(f"| policy | " + " | ".join(f"{s}: cost % | {s}: availability %" for s in sets) + " |")
    print("|---|" + "---|---|" * len(sets))
    for name in names:
        cells = []
        for s in sets:
            r = results[name][s]
            cells.append(f"{r['relative_cost'] * 100:.1f} ± {r['relative_cost_std'] * 100:.1f}")
            cells.append(f"{r['availability'] * 100:.2f} ± {r['availability_std'] * 100:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if "optimal" in results and "tidal" in results:
        for s in sets:
            ratio = results["tidal"][s]["relative_cost"] / results["optimal"][s]["relative_cost"]
            print(f"\ntidal / optimal cost on {s}: {ratio:.2f}x")
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "spot_table.json"), "w") as f:
        json.dump({"results": results, "seconds": timing}, f, indent=1)


if __name__ == "__main__":
    main()
