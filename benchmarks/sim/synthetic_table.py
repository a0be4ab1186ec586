"""SpotHedge against Tidal's policy on traces nobody tuned on: the published traces transformed, and synthetic ones.

Usage: .venv/bin/python benchmarks/sim/synthetic_table.py [--repeats 30] [--policy-seeds 2] [--seed 0]
           [--trace-seed 0] [--jobs 2] [--policies spothedge,tidal,tidal:lone_evidence=3]
Every policy runs on the same windows (`--repeats` offsets drawn as the protocol does, with `--seed`) and with the
same `--policy-seeds` random seeds, so runs pair one to one; the table gives each policy's mean relative cost % /
availability % and, against the first policy, the paired availability difference with its 95% band
(tidal.sim.compare). A row is "cheaper, as available or more" when the mean difference is >= 0 (strict) and
"within noise" when it is below 0 by less than the band. `--trace-seed` draws the synthetic families afresh
(a hold-out set). Writes the numbers to synthetic_table.json next to this script. The families:
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

from tidal.capacity.policies import POLICIES, pool_params
from tidal.sim import compare, synthetic, traces
from tidal.sim.protocol import ProtocolSettings, run_trace

TRACES = os.environ.get("TIDAL_TRACES")  # a folder of AWS1/, AWS2/; unset: the published sets shipped with Tidal
M = synthetic.MarkovZones
U = synthetic.UNLIMITED


def _published(name: str) -> traces.SpotTrace:
    return traces.load_spot_traces(os.path.join(TRACES, name) if TRACES else name.lower())


def cases(shift: int = 0) -> dict[str, traces.SpotTrace]:
    """The traces by name; `shift` moves every synthetic family's random seed (0: the table in RESULTS.md)."""
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
        "on/off 100/30 points, 4 per zone": mk(M(mean_up_points=100, mean_down_points=30), 1 + shift),
        "on/off 30/30, 10% partial": mk(M(mean_up_points=30, mean_down_points=30, partial=0.1), 2 + shift),
        "on/off 200/20 + shared shocks": mk(M(mean_up_points=200, mean_down_points=20, shock=0.01), 3 + shift),
        "2 zones, on/off 80/40": mk(M(zones=2, mean_up_points=80, mean_down_points=40), 4 + shift),
        "16 per zone, on/off 50/50, 30% partial": mk(M(up_capacity=16, mean_up_points=50, mean_down_points=50,
                                                       partial=0.3), 5 + shift),
        "6 zones unlimited, on/off 50/50": mk(M(zones=6, mean_up_points=50, mean_down_points=50, up_capacity=U),
                                              6 + shift),
        "9 zones unlimited, on/off 30/10 + shocks": mk(M(zones=9, mean_up_points=30, mean_down_points=10,
                                                         up_capacity=U, shock=0.02), 7 + shift),
        "3 zones unlimited, on/off 20/5": mk(M(zones=3, mean_up_points=20, mean_down_points=5, up_capacity=U),
                                             8 + shift),
        "2 per zone, on/off 400/100": mk(M(mean_up_points=400, mean_down_points=100, up_capacity=2), 9 + shift),
        "log-normal periods 40/10": synthetic.lognormal_trace(3, 40, 10, 1.5, 4, 10 + shift),
        "log-normal 20/20, 4 zones, 20% partial": synthetic.lognormal_trace(4, 20, 20, 1.2, 6, 11 + shift, partial=0.2),
        "random walk 0-4, slow": synthetic.walk_trace(3, 4, 0.05, 12 + shift),
        "random walk 0-8, fast": synthetic.walk_trace(3, 8, 0.2, 13 + shift, crash=0.003),
        "random walk 0-3, 5 zones": synthetic.walk_trace(5, 3, 0.1, 14 + shift),
        "always available": synthetic.constant_trace(3, U),
        "never available": synthetic.constant_trace(3, 0),
    }


def _run(job: tuple[str, str, int, int, int, int]) -> tuple[str, str, int, list[float], list[float]]:
    name, policy_name, repeats, seed, shift, policy_seed = job
    trace = cases(shift)[name]
    expanded = traces.expand(trace, 30)
    caps = [traces.window(expanded, o, 2880) for o in traces.offsets(expanded, 2880, repeats, seed)]
    policy, params = _policy(policy_name)
    result = run_trace(caps, trace.zones, policy, params, ProtocolSettings(), seed=policy_seed)
    return name, policy_name, policy_seed, result.relative_cost.tolist(), result.availability.tolist()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30, help="windows per trace (the protocol's offsets)")
    parser.add_argument("--policy-seeds", type=int, default=2, help="random seeds per window (runs = repeats x this)")
    parser.add_argument("--seed", type=int, default=0, help="the offsets' seed (0: the protocol's)")
    parser.add_argument("--trace-seed", type=int, default=0, help="shifts the synthetic families' seeds (hold-out)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--policies", default="spothedge,tidal")
    args = parser.parse_args()
    names, policies = list(cases(args.trace_seed)), args.policies.split(",")
    for spec in policies:  # a bad name or parameter fails here, in one line, not in every worker
        try:
            _policy(spec)
        except ValueError as exc:
            parser.error(f"--policies {spec!r}: {exc}")
    policy_seeds = [1000 * k for k in range(args.policy_seeds)]  # run_trace seeds repeat i with seed + i
    started = time.time()
    with Pool(args.jobs) as pool:
        rows = pool.map(_run, [(n, p, args.repeats, args.seed, args.trace_seed, k)
                               for n in names for p in policies for k in policy_seeds], chunksize=1)
    runs: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for n, p, k, cost, availability in sorted(rows, key=lambda r: r[2]):  # the same run order for every policy
        c, a = runs.setdefault((n, p), ([], []))
        c.extend(cost)
        a.extend(availability)
    base, others = policies[0], policies[1:]
    print("| trace (3 zones unless said) | " + " | ".join(f"{p} cost % / avail %" for p in policies)
          + "".join(f" | {p} - {base}: avail points (95% band) | verdict" for p in others) + " |")
    print("|---|" + "---|" * (len(policies) + 2 * len(others)))
    strict = {p: 0 for p in others}
    noise = {p: 0 for p in others}
    out = []
    for n in names:
        cells = [f"{mean(runs[(n, p)][0]) * 100:.1f} / {mean(runs[(n, p)][1]) * 100:.2f}" for p in policies]
        row = {"trace": n, "policies": {p: {"relative_cost": mean(runs[(n, p)][0]),
                                            "availability": mean(runs[(n, p)][1])} for p in policies}}
        for p in others:
            v = compare.verdict(runs[(n, base)][1], runs[(n, base)][0], runs[(n, p)][1], runs[(n, p)][0])
            strict[p] += v.strict_win
            noise[p] += v.win_within_noise
            cells += [f"{v.availability.mean * 100:+.2f} (±{v.availability.band * 100:.2f})", v.words]
            row["policies"][p].update(availability_difference=v.availability.mean,
                                      availability_band=v.availability.band, verdict=v.words)
        print(f"| {n} | " + " | ".join(cells) + " |")
        out.append(row)
    runs_each = args.repeats * args.policy_seeds
    for p in others:
        # Run by run over every trace: how often the policy was less (more) available than the base, and dearer.
        pairs = [(a, b, ca, cb) for n in names for a, b, ca, cb in zip(runs[(n, base)][1], runs[(n, p)][1],
                                                                        runs[(n, base)][0], runs[(n, p)][0])]
        less = sum(1 for a, b, _, _ in pairs if b < a - 1e-12)
        more = sum(1 for a, b, _, _ in pairs if b > a + 1e-12)
        dearer = sum(1 for _, _, ca, cb in pairs if cb > ca + 1e-12)
        print(f"\n{p} cheaper and at least as available as {base} on {strict[p]} of {len(names)} traces; "
              f"{noise[p]} counting availability deficits within the 95% band; run by run, of {len(pairs)} runs: "
              f"less available in {less}, more in {more}, dearer in {dearer}")
    print(f"{runs_each} paired runs per trace ({args.repeats} windows, seed {args.seed}, x {args.policy_seeds} "
          f"policy seeds), trace seed {args.trace_seed}; {time.time() - started:.0f} s with {args.jobs} jobs")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic_table.json")
    with open(path, "w") as f:
        json.dump({"repeats": args.repeats, "policy_seeds": args.policy_seeds, "seed": args.seed,
                   "trace_seed": args.trace_seed, "rows": out}, f, indent=1)


def _policy(spec: str):
    """A policy and its parameters from NAME or NAME:KEY=VALUE+KEY=VALUE (e.g. tidal:lone_evidence=3)."""
    name, _, given = spec.partition(":")
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
    pairs = [kv.split("=", 1) for kv in given.split("+") if kv]
    if any(len(kv) != 2 for kv in pairs):
        raise ValueError("expected NAME:KEY=VALUE+KEY=VALUE")
    return POLICIES[name], pool_params(name, {}, dict(pairs))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    main()
