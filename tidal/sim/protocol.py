"""The SpotHedge simulation protocol (spot-simulation.md): a policy's Plans applied to capacity traces, tick by tick.

Each tick the policy sees the pool as the previous tick left it (an
Observation), returns a Plan, and the Plan's spot counts are clipped to the
zones' capacities: a launch that does not fit fails and a node above capacity
is preempted, both at once and uncharged. Ready nodes in a zone at t are the
minimum of its held count over ticks t-d..t (nothing is ready before d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tidal.capacity.policies.types import Observation, PolicyDef, ZoneView
from tidal.sim.pool import SimPool


@dataclass(frozen=True)
class ProtocolSettings:
    target: int = 3
    cold_start_ticks: int = 4
    tick_seconds: float = 30.0
    on_demand_price: float = 3.0
    spot_price: float = 1.0


@dataclass(frozen=True)
class RepeatResult:
    availability: float
    relative_cost: float
    spot_held: np.ndarray      # ticks x zones
    on_demand_held: np.ndarray  # ticks
    ready: np.ndarray          # ticks: ready spot + ready on-demand


def ready_counts(held: np.ndarray, d: int) -> np.ndarray:
    """Ready at t = min(held[t-d..t]) along axis 0, 0 before d (a node launched at t0 is ready from t0 + d)."""
    out = np.zeros_like(held)
    if held.shape[0] > d:
        win = np.lib.stride_tricks.sliding_window_view(held, d + 1, axis=0)
        out[d:] = win.min(axis=-1)
    return out


def score(spot_held: np.ndarray, on_demand_held: np.ndarray, settings: ProtocolSettings,
          spot_prices: Sequence[float] | None = None) -> tuple[float, float, np.ndarray]:
    """(availability, relative cost, ready per tick) of held counts, by the protocol's steps 5-7."""
    d, n = settings.cold_start_ticks, settings.target
    ticks = on_demand_held.shape[0]
    ready = ready_counts(spot_held, d).sum(axis=1) + ready_counts(on_demand_held, d)
    prices = np.full(spot_held.shape[1], settings.spot_price) if spot_prices is None else np.asarray(spot_prices)
    cost = float((spot_held[d:] * prices).sum() + settings.on_demand_price * on_demand_held[d:].sum())
    availability = float((ready[d:] >= n).mean()) if ticks > d else 0.0
    return availability, cost / (settings.on_demand_price * n * (ticks - d)), ready


def run_repeat(capacity: np.ndarray, zones: Sequence[str], policy: PolicyDef, params: Any, seed: int,
               settings: ProtocolSettings, spot_prices: Sequence[float] | None = None) -> RepeatResult:
    """One repeat: `capacity` is zones x ticks. The Plans are carried out by the control plane's executor
    (`tidal.sim.pool.SimPool`), so a refused launch and a reclaim reach the policy as they do in a live pool."""
    n_zones, ticks = capacity.shape
    d = settings.cold_start_ticks
    prices = [settings.spot_price] * n_zones if spot_prices is None else list(spot_prices)
    cap = capacity.T.tolist()
    held = np.zeros((ticks, n_zones), dtype=np.int64)
    od = np.zeros(ticks, dtype=np.int64)
    state = policy.initial_state(params, list(zones), seed)
    pool = SimPool(zones, prices, settings.on_demand_price)
    prev_held = [0] * n_zones
    od_held = 0
    for t in range(ticks):
        # The decision at t sees tick t-1: ready(t-1) = min(held[t-1-d..t-1]), nothing ready before d.
        if t - 1 >= d:
            ready = held[t - 1 - d:t].min(axis=0).tolist()
            od_ready = int(od[t - 1 - d:t].min())
        else:
            ready, od_ready = [0] * n_zones, 0
        ledger = pool.ledger
        obs = Observation(
            target=settings.target,
            zones=tuple(ZoneView(zones[z], prev_held[z], ready[z], ledger.preempted.get(zones[z], 0),
                                 ledger.launch_failed.get(zones[z], 0), 0, prices[z]) for z in range(n_zones)),
            on_demand_held=od_held, on_demand_ready=od_ready, on_demand_price=settings.on_demand_price)
        now = t * settings.tick_seconds
        plan, state = policy.decide(obs, params, state, now)
        # Step 4 of the protocol: a launch beyond the zone's capacity fails, a node above it is preempted.
        pool.step(plan, cap[t], now)
        pool.reclaim(now)
        held[t] = prev_held = pool.spot_held()
        od[t] = od_held = pool.on_demand_held()
    availability, relative_cost, ready_total = score(held, od, settings, prices)
    return RepeatResult(availability, relative_cost, held, od, ready_total)


@dataclass(frozen=True)
class TraceResult:
    trace: str
    policy: str
    repeats: tuple[RepeatResult, ...]

    @property
    def availability(self) -> np.ndarray:
        return np.array([r.availability for r in self.repeats])

    @property
    def relative_cost(self) -> np.ndarray:
        return np.array([r.relative_cost for r in self.repeats])


def run_trace(capacities: Sequence[np.ndarray], zones: Sequence[str], policy: PolicyDef, params: Any,
              settings: ProtocolSettings, seed: int = 0, trace: str = "") -> TraceResult:
    """All repeats of one policy: `capacities` holds one zones x ticks window per repeat; repeat i seeds with seed+i."""
    return TraceResult(trace, policy.name, tuple(
        run_repeat(c, zones, policy, params, seed + i, settings) for i, c in enumerate(capacities)))
