"""The fuller spot model (`tidal simulate spot --model fuller`): the protocol's pools and scoring, with what real
clouds add: a notice before each reclaim, interruptions correlated by (instance type, zone), launches refused
beyond capacity, and spot prices that move per (type, zone).

Each tick, in this order: nodes whose notice ran out go; each offering ((type, zone) series of the trace) that
now holds more of our ready spot nodes than its capacity reclaims the newest, each with a notice of
`notice_seconds` (AWS 120 s, GCP 30 s, Alibaba about 300 s: `NOTICE_SECONDS`); the policy sees the pool (nodes
under notice apart, as the control plane shows them, or, for a policy that detects preemption by failed probes
as SkyServe's SpotHedge does, as held until they go) and returns a Plan, which the control plane's executor
carries out through `SimPool` (a launch beyond capacity, or one of `launch_failure_rate` at random, is refused).
A node serves from `cold_start` after its launch until it goes, notice included. Availability is the share of
ticks from the first cold start on with at least `target` nodes serving; cost is what the nodes held cost at
each tick's prices, over `target` on-demand nodes for as long (the protocol's relative cost).

The offline optimum knows the whole trace and pays no notice: an integer program over the pools' capacities,
where a node may stay up to the notice's length past a drop (it would be serving under notice), at each tick's
prices (`tidal.sim.optimal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tidal.capacity.catalog import NOTICE_SECONDS
from tidal.capacity.policies.types import Plan, PolicyDef
from tidal.sim import optimal
from tidal.sim.pool import SimPool
from tidal.sim.protocol import ProtocolSettings, RepeatResult

# Policies that, as published, learn of a preemption only when the node is gone (SkyServe probes its replicas).
NOTICE_BLIND = frozenset({"spothedge"})


@dataclass(frozen=True)
class FullerSettings:
    target: int = 3
    cold_start_ticks: int = 4
    tick_seconds: float = 30.0
    notice_seconds: float = NOTICE_SECONDS["aws"]
    launch_failure_rate: float = 0.0   # spot launches refused at random, on top of capacity
    on_demand_price: float = 3.0
    unavailable_seconds: float = 45.0  # the executor skips a refused offering this long (a live pool's default)
    notice_blind: frozenset[str] = NOTICE_BLIND

    def protocol(self) -> ProtocolSettings:
        return ProtocolSettings(self.target, self.cold_start_ticks, self.tick_seconds, self.on_demand_price)


@dataclass(frozen=True)
class Offers:
    """The trace's series as offerings: the zone of each, and its instance type (None: one type)."""
    zones: tuple[str, ...]
    instance_types: tuple[str, ...] | None = None


def run_repeat(capacity: np.ndarray, prices: np.ndarray, offers: Offers, policy: PolicyDef, params: Any, seed: int,
               settings: FullerSettings) -> RepeatResult:
    """One repeat: `capacity` and `prices` are series x ticks."""
    s = settings
    n_series, ticks = capacity.shape
    d = s.cold_start_ticks
    cold = d * s.tick_seconds
    pool = SimPool(offers.zones, prices[:, 0].tolist(), s.on_demand_price, 0.0, offers.instance_types,
                   by_type=policy.by_type, unavailable_seconds=s.unavailable_seconds)
    rng = np.random.default_rng(seed)
    if s.launch_failure_rate > 0:
        rate = s.launch_failure_rate
        pool.refuse = lambda launch: launch.capacity_type == "spot" and rng.random() < rate
    blind = policy.name in s.notice_blind
    state = policy.initial_state(params, list(pool.keys), seed)
    series = {o: i for i, o in enumerate(pool.offers)}
    held = np.zeros((ticks, len(pool.keys)), dtype=np.int64)
    od = np.zeros(ticks, dtype=np.int64)
    ready = np.zeros(ticks, dtype=np.int64)
    cost = 0.0
    cap, price = capacity.T.tolist(), prices.T.tolist()
    for t in range(ticks):
        now = t * s.tick_seconds
        pool.expire_notices(now)
        pool.set_capacity(cap[t])
        pool.reclaim(now, s.notice_seconds)
        pool.place(s.target, now)  # the target's replicas are bound to nodes: the executor takes empty ones first
        obs = pool.observation(s.target, now, cold, price[t], notice_blind=blind)
        plan, state = policy.decide(obs, params, state, now)
        if blind:
            # The policy counts nodes under notice as held: the executor must not replace them either.
            noticed = pool.last_noticed
            plan = Plan(plan.on_demand, tuple(max(0, c - noticed[k]) for c, k in zip(plan.spot, pool.keys)))
        pool.step(plan, None, now)
        serving = 0
        tick_cost = 0.0
        ready_at = now - cold
        for n in pool.nodes.values():
            serving += n.launched_at <= ready_at
            tick_cost += price[t][series[(n.instance_type, n.zone)]] if n.billing == "spot" else s.on_demand_price
        ready[t] = serving
        if t >= d:
            cost += tick_cost
        held[t] = pool.spot_held()
        od[t] = pool.on_demand_held()
    availability = float((ready[d:] >= s.target).mean()) if ticks > d else 0.0
    relative = cost / (s.on_demand_price * s.target * max(1, ticks - d))
    return RepeatResult(availability, relative, held, od, ready)


def notice_capacity(capacity: np.ndarray, notice_ticks: int) -> np.ndarray:
    """What a pool can hold at t counting nodes serving out their notice: the most it held over the notice."""
    if notice_ticks <= 0:
        return capacity
    out = capacity.copy()
    for back in range(1, notice_ticks + 1):
        out[:, back:] = np.maximum(out[:, back:], capacity[:, :-back])
    return out


def optimal_repeat(capacity: np.ndarray, prices: np.ndarray, settings: FullerSettings,
                   time_limit_seconds: float = 120.0, gap: float = 0.0) -> RepeatResult:
    """The offline optimum of one repeat (a lower bound on any policy's cost at 100% availability; with `gap`, a
    solution within that share of it)."""
    p = settings.protocol()
    notice_ticks = int(settings.notice_seconds // settings.tick_seconds)
    sol = optimal.solve(notice_capacity(capacity, notice_ticks), p, time_limit_seconds, gap, prices=prices)
    d = p.cold_start_ticks
    from tidal.sim.protocol import ready_counts
    ready = ready_counts(sol.spot_held, d).sum(axis=1) + ready_counts(sol.on_demand_held, d)
    cost = float((sol.spot_held[d:] * prices.T[d:]).sum() + p.on_demand_price * sol.on_demand_held[d:].sum())
    ticks = capacity.shape[1]
    availability = float((ready[d:] >= p.target).mean()) if ticks > d else 0.0
    return RepeatResult(availability, cost / (p.on_demand_price * p.target * (ticks - d)), sol.spot_held,
                        sol.on_demand_held, ready)


def windows(trace, tick_seconds: float, ticks: int, repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(capacity, prices) per repeat, at the protocol's offsets; a trace without prices costs 1 per spot tick."""
    from tidal.sim import traces
    expanded = traces.expand(trace, tick_seconds)
    priced = traces.expand(trace, tick_seconds, trace.prices) if trace.prices else \
        [np.ones(len(e)) for e in expanded]
    out = []
    for o in traces.offsets(expanded, ticks, repeats, seed):
        out.append((traces.window(expanded, o, ticks), traces.window(priced, o, ticks)))
    return out


def offers_of(trace) -> Offers:
    return Offers(tuple(trace.offer_zones), tuple(trace.instance_types) if trace.instance_types else None)


def run_trace(windows_: Sequence[tuple[np.ndarray, np.ndarray]], offers: Offers, policy: PolicyDef, params: Any,
              settings: FullerSettings, seed: int = 0) -> list[RepeatResult]:
    return [run_repeat(c, p, offers, policy, params, seed + i, settings) for i, (c, p) in enumerate(windows_)]
