"""Capacity policies in the fuller spot model, paired, on every trace family of synthetic_table.py, AWS1/AWS2 and
correlated (instance type, zone) pools, with AWS, GCP and Alibaba notice lengths: the table for RESULTS.md.

Usage: .venv/bin/python benchmarks/sim/fuller_table.py [--repeats 3] [--jobs 2] [--providers aws,gcp,alibaba]
           [--policies spothedge,ess,tidal-notice] [--families SUBSTRING] [--launch-failure-rate 0.02]
Every policy runs on the same windows (the protocol's offsets, `--seed`) with the same seeds, so runs pair one to
one; the offline optimum (tidal.sim.fuller.optimal_repeat) runs on the same windows. For each family and notice
length the table gives each policy's relative cost % / availability %, and for the last policy its cost over
SpotHedge's and over the optimum's (mean of the per-run ratios), the optimum's cost over SpotHedge's (what any
policy could reach at full availability) and the last policy's availability minus SpotHedge's (paired, 95%
band). Writes fuller_table.json next to this script.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from multiprocessing import Pool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from synthetic_table import _policy, cases  # noqa: E402  (the same families, by the same names)

from tidal.capacity.catalog import NOTICE_SECONDS  # noqa: E402
from tidal.errors import TidalError  # noqa: E402
from tidal.sim import compare, fuller, synthetic  # noqa: E402
from tidal.sim.protocol import RepeatResult  # noqa: E402

CP = synthetic.CorrelatedPools
OPTIMAL_GAP = 0.005  # the optimum's integer program stops within 0.5% of the best bound (the ratios say so)


@functools.lru_cache(maxsize=1)
def families() -> dict:
    out = dict(cases())
    out.update({
        "3 types x 3 zones, correlated by (type, zone)": synthetic.correlated_trace(CP(), 21),
        "3 types x 3 zones, frequent zone shocks": synthetic.correlated_trace(CP(zone_shock=0.02, type_shock=0.005), 22),
        "2 types x 4 zones, short pools (2 each), volatile prices": synthetic.correlated_trace(
            CP(types=("t1", "t2"), zones=4, up_capacity=2, mean_up_points=60, volatility=0.08), 23),
    })
    return out


def _optimal(capacity, prices, settings):
    """The optimum of one window; a program that found no solution in its time (a busy machine) gets four times
    as long once more, then counts as not measured (NaN)."""
    for limit in (90.0, 360.0):
        try:
            return fuller.optimal_repeat(capacity, prices, settings, limit, OPTIMAL_GAP)
        except TidalError:
            continue
    nan = float("nan")
    return RepeatResult(nan, nan, None, None, None)


def _run(job: tuple) -> tuple:
    family, policy_spec, provider, repeats, seed, rate = job
    trace = families()[family]
    windows = fuller.windows(trace, 30.0, 2880, repeats, seed)
    settings = fuller.FullerSettings(notice_seconds=NOTICE_SECONDS[provider], launch_failure_rate=rate,
                                     on_demand_price=trace.on_demand_price or 3.0)
    started = time.perf_counter()
    if policy_spec == "optimal":
        results = [_optimal(c, p, settings) for c, p in windows]
    else:
        policy, params = _policy(policy_spec)
        if "notice_seconds" in policy.params.model_fields:
            params = params.model_copy(update={"notice_seconds": settings.notice_seconds})
        results = fuller.run_trace(windows, fuller.offers_of(trace), policy, params, settings, seed)
    return (family, policy_spec, provider, [r.relative_cost for r in results], [r.availability for r in results],
            time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--providers", default="aws,gcp,alibaba")
    parser.add_argument("--policies", default="spothedge,ess,tidal-notice")
    parser.add_argument("--families", default="", help="only families whose name contains this")
    parser.add_argument("--launch-failure-rate", type=float, default=0.02)
    parser.add_argument("--json", default="fuller_table.json", help="where the numbers go, next to this script")
    parser.add_argument("--no-optimal", action="store_true", help="leave the offline optimum out (its integer "
                                                                   "programs are most of the time)")
    parser.add_argument("--optimal-cache", metavar="JSONL", help="keep each family's optimum in this file next to "
                        "this script as it is solved, and reuse what it holds (a long run can be resumed)")
    parser.add_argument("--optimal-from", metavar="JSON", help="the optimum's runs from an earlier output of this "
                        "script with the same --repeats and --seed (it does not depend on the policies)")
    args = parser.parse_args()
    names = [n for n in families() if args.families.lower() in n.lower()]
    policies = args.policies.split(",")
    providers = args.providers.split(",")
    for spec in policies:
        try:
            _policy(spec)
        except ValueError as exc:
            parser.error(f"--policies {spec!r}: {exc}")
    started = time.time()
    solved = [] if args.no_optimal else ["optimal"]
    earlier = {}
    if args.optimal_from:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.path.basename(args.optimal_from))) as f:
            doc = json.load(f)
        if doc["repeats"] != args.repeats or doc["seed"] != args.seed:
            parser.error("--optimal-from: that run had other --repeats or --seed")
        earlier = {(r["trace"], "optimal", r["provider"]): (r["policies"]["optimal"]["runs"]["cost"],
                                                             r["policies"]["optimal"]["runs"]["availability"], 0.0)
                   for r in doc["rows"] if "optimal" in r["policies"]}
    cache = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.path.basename(args.optimal_cache)) \
        if args.optimal_cache else None
    key = [args.repeats, args.seed, args.launch_failure_rate]
    if cache and os.path.exists(cache):
        with open(cache) as f:
            for line in f:
                r = json.loads(line)
                if r["key"] == key:
                    earlier[(r["trace"], "optimal", r["provider"])] = (r["cost"], r["availability"], 0.0)
    jobs = [(n, p, v, args.repeats, args.seed, args.launch_failure_rate)
            for v in providers for n in names for p in policies + solved if (n, p, v) not in earlier]
    rows = []
    with Pool(args.jobs) as pool:
        for row in pool.imap_unordered(_run, jobs, chunksize=1):
            rows.append(row)
            if cache and row[1] == "optimal":
                with open(cache, "a") as f:
                    f.write(json.dumps({"key": key, "trace": row[0], "provider": row[2], "cost": row[3],
                                        "availability": row[4]}) + "\n")
    runs = {(f, p, v): (c, a, s) for f, p, v, c, a, s in rows}
    runs.update(earlier)
    last, base = policies[-1], policies[0]
    out = []
    for v in providers:
        print(f"\n### {v.upper() if v != 'alibaba' else 'Alibaba'}: {NOTICE_SECONDS[v]:g} s notices\n")
        print("| trace (3 zones unless said) | " + " | ".join(f"{p} cost % / avail %" for p in policies + solved)
              + f" | {last} / {base} cost | {last} / optimal cost | optimal / {base} cost"
              f" | {last} - {base} avail points (95% band) |")
        print("|---|" + "---|" * (len(policies) + len(solved) + 4))
        ratios_base, ratios_opt, opt_base, avail = [], [], [], []
        for n in names:
            cells = [f"{mean(runs[(n, p, v)][0]) * 100:.1f} / {mean(runs[(n, p, v)][1]) * 100:.2f}"
                     for p in policies + solved]
            cost, av, _ = runs[(n, last, v)]
            bcost, bav, _ = runs[(n, base, v)]
            ocost = runs[(n, "optimal", v)][0] if solved else [0.0]
            rb = mean([c / b for c, b in zip(cost, bcost)])
            ro = mean([c / o for c, o in zip(cost, ocost)]) if min(ocost) > 0 else float("nan")
            # What knowing the whole trace ahead costs against the baseline: where even this is above a cost
            # target, no policy reaches that target at full availability.
            ob = mean([o / b for o, b in zip(ocost, bcost)]) if solved else float("nan")
            d = compare.paired(bav, av)
            ratios_base.append(rb)
            if ro == ro:
                ratios_opt.append(ro)
            if ob == ob and n != "never available":
                opt_base.append(ob)
            avail.append(mean(av))
            cells += [f"{rb:.2f}", f"{ro:.2f}" if ro == ro else "n/a", f"{ob:.2f}" if ob == ob else "n/a",
                      f"{d.mean * 100:+.2f} (±{d.band * 100:.2f})"]
            print(f"| {n} | " + " | ".join(cells) + " |")
            out.append({"provider": v, "trace": n, "ratio_to_base": rb, "ratio_to_optimal": ro,
                        "optimal_to_base": ob,
                        "policies": {p: {"relative_cost": mean(runs[(n, p, v)][0]),
                                         "availability": mean(runs[(n, p, v)][1]),
                                         "runs": {"cost": runs[(n, p, v)][0], "availability": runs[(n, p, v)][1]}}
                                     for p in policies + solved}})
        fallback = [a for n, a in zip(names, avail) if n != "never available"]
        print(f"\n{v}: {last} cost / {base}'s, mean over families {mean(ratios_base):.2f}; / optimum's, mean "
              f"{mean(ratios_opt):.2f} (over {len(ratios_opt)} families with a non-zero optimum); availability "
              f">= 99.9% on {sum(a >= 0.999 for a in fallback)} of {len(fallback)} families, lowest "
              f"{min(fallback) * 100:.2f}%")
        if opt_base:
            print(f"{v}: the optimum (knowing every interruption ahead) costs <= 0.85x {base}'s on "
                  f"{sum(r <= 0.85 for r in opt_base)} of {len(opt_base)} families with a fallback (mean "
                  f"{mean(opt_base):.2f}x)")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\n{args.repeats} paired runs per family (seed {args.seed}), {args.launch_failure_rate:g} of spot launches "
          f"refused at random; {time.time() - started:.0f} s with {args.jobs} jobs on {machine}")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.path.basename(args.json))
    with open(path, "w") as f:
        json.dump({"repeats": args.repeats, "seed": args.seed, "launch_failure_rate": args.launch_failure_rate,
                   "rows": out}, f, indent=1)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
