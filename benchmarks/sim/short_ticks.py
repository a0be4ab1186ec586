"""Where a policy loses availability in the fuller model: every tick short of the target, with the ticks before it.

Usage: .venv/bin/python benchmarks/sim/short_ticks.py FAMILY [--provider aws] [--policy tidal-notice]
           [--repeats 2] [--context 8]
FAMILY is a family name of fuller_table.py (a unique part of it). The run is `fuller.run_repeat`'s, tick by tick
(the same windows and seeds as the table), and each line shows one tick: the capacity of each series, what the
policy saw per pool (h held, r ready, n under notice, p reclaimed, f refused since the last decision), on-demand
held/ready, its Plan, what was launched (s spot, o on-demand), the random refusals, the nodes reclaimed (with
their age in ticks) and the nodes serving at the end of the tick.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuller_table import families  # noqa: E402
from synthetic_table import _policy  # noqa: E402

from tidal.capacity.catalog import NOTICE_SECONDS  # noqa: E402
from tidal.sim import fuller  # noqa: E402
from tidal.sim.pool import SimPool  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("family")
    parser.add_argument("--provider", default="aws", choices=sorted(NOTICE_SECONDS))
    parser.add_argument("--policy", default="tidal-notice")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context", type=int, default=8)
    parser.add_argument("--launch-failure-rate", type=float, default=0.02)
    args = parser.parse_args()
    names = [n for n in families() if args.family.lower() in n.lower()]
    if len(names) != 1:
        parser.error(f"FAMILY must name one family: {names or list(families())}")
    trace = families()[names[0]]
    s = fuller.FullerSettings(notice_seconds=NOTICE_SECONDS[args.provider],
                              launch_failure_rate=args.launch_failure_rate,
                              on_demand_price=trace.on_demand_price or 3.0)
    policy, params = _policy(args.policy)
    if "notice_seconds" in policy.params.model_fields:
        params = params.model_copy(update={"notice_seconds": s.notice_seconds})
    offers = fuller.offers_of(trace)
    blind = policy.name in s.notice_blind
    for r, (capacity, prices) in enumerate(fuller.windows(trace, 30.0, 2880, args.repeats, args.seed)):
        shorts = run(r, capacity, prices, offers, policy, params, args.seed + r, s, blind, args.context)
        ticks = capacity.shape[1] - s.cold_start_ticks
        print(f"repeat {r}: {shorts} ticks short of {ticks} ({1 - shorts / ticks:.4%} available)")


def run(r, capacity, prices, offers, policy, params, seed, s, blind, context) -> int:
    """One repeat as `fuller.run_repeat` runs it, printing each short tick with the ticks before it."""
    pool = SimPool(offers.zones, prices[:, 0].tolist(), s.on_demand_price, 0.0, offers.instance_types,
                   by_type=policy.by_type, unavailable_seconds=s.unavailable_seconds)
    rng = np.random.default_rng(seed)
    refused: list[str] = []

    def refuse(launch) -> bool:
        out = launch.capacity_type == "spot" and s.launch_failure_rate > 0 and rng.random() < s.launch_failure_rate
        if out:
            refused.append(launch.zone)
        return out

    pool.refuse = refuse
    state = policy.initial_state(params, list(pool.keys), seed)
    cap, price = capacity.T.tolist(), prices.T.tolist()
    cold = s.cold_start_ticks * s.tick_seconds
    log: list[str] = []
    shorts = 0
    for t in range(capacity.shape[1]):
        now = t * s.tick_seconds
        refused.clear()
        pool.expire_notices(now)
        pool.set_capacity(cap[t])
        taken = pool.reclaim(now, s.notice_seconds)
        pool.place(s.target, now)
        obs = pool.observation(s.target, now, cold, price[t], notice_blind=blind)
        plan, state = policy.decide(obs, params, state, now)
        if blind:
            noticed = pool.last_noticed
            plan = type(plan)(plan.on_demand, tuple(max(0, c - noticed[k]) for c, k in zip(plan.spot, pool.keys)))
        before = set(pool.nodes)
        pool.step(plan, None, now)
        launched = [pool.nodes[n] for n in pool.nodes if n not in before]
        serving = sum(n.launched_at <= now - cold for n in pool.nodes.values())
        view = " ".join(f"{z.name}:h{z.held}r{z.ready}n{z.noticed}p{z.preempted}f{z.launch_failed}" for z in obs.zones)
        log.append(f"t={t} cap={cap[t]} {view} od={obs.on_demand_held}/{obs.on_demand_ready} "
                   f"plan=od{plan.on_demand},{list(plan.spot)} launched={[(n.zone, n.billing[0]) for n in launched]} "
                   f"refused={refused} reclaimed={[(n.zone, t - int(n.launched_at // s.tick_seconds)) for n in taken]} "
                   f"serving={serving}")
        if t >= s.cold_start_ticks and serving < s.target:
            shorts += 1
            print(f"--- repeat {r}: short at t={t}")
            for line in log[-context - 1:]:
                print("   ", line)
    return shorts


if __name__ == "__main__":
    main()
