"""Synthetic spot-availability traces of the protocol's format, for testing policies on traces nobody tuned on."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from tidal.sim.traces import UNLIMITED, SpotTrace


@dataclass(frozen=True)
class MarkovZones:
    """Each zone alternates up (capacity `up_capacity`) and down (0) periods with geometric lengths; a shared shock
    takes every zone down at once with probability `shock` per point (correlated zones)."""
    zones: int = 3
    points: int = 3200
    gap_seconds: float = 300.0
    mean_up_points: float = 60.0
    mean_down_points: float = 20.0
    up_capacity: int = 4
    partial: float = 0.0   # chance an up point carries a random capacity in [1, up_capacity) instead
    shock: float = 0.0
    shock_points: float = 6.0


def markov_trace(spec: MarkovZones, seed: int, name: str = "synthetic") -> SpotTrace:
    rng = np.random.default_rng(seed)
    data = np.zeros((spec.zones, spec.points), dtype=np.int64)
    up = rng.random(spec.zones) < spec.mean_up_points / (spec.mean_up_points + spec.mean_down_points)
    shock_left = 0
    for t in range(spec.points):
        flip = rng.random(spec.zones) < np.where(up, 1 / spec.mean_up_points, 1 / spec.mean_down_points)
        up = up ^ flip
        if shock_left == 0 and rng.random() < spec.shock:
            shock_left = max(1, int(rng.geometric(1 / spec.shock_points)))
        level = np.where(rng.random(spec.zones) < spec.partial,
                         rng.integers(1, max(2, spec.up_capacity), spec.zones), spec.up_capacity)
        data[:, t] = np.where(up & (shock_left == 0), level, 0)
        shock_left = max(0, shock_left - 1)
    return SpotTrace(name, tuple(f"zone-{i}" for i in range(spec.zones)), spec.gap_seconds, tuple(data))


def constant_trace(zones: int, value: int, points: int = 3200, gap_seconds: float = 300.0,
                   name: str = "constant") -> SpotTrace:
    """Every zone at one capacity: `UNLIMITED` (always available) or 0 (never)."""
    return SpotTrace(name, tuple(f"zone-{i}" for i in range(zones)), gap_seconds,
                     tuple(np.full(points, value, dtype=np.int64) for _ in range(zones)))


def write_trace(trace: SpotTrace, directory: str) -> str:
    """Write a trace as the protocol's files (one JSON per series) so the CLI can read it; a typed trace's files
    name their instance type and zone, and carry their prices."""
    os.makedirs(directory, exist_ok=True)
    for i, (name, data) in enumerate(zip(trace.zones, trace.data)):
        meta: dict = {"gap_seconds": trace.gap_seconds}
        if trace.instance_types:
            meta.update(instance_type=trace.instance_types[i], zone=trace.series_zones[i])
        if trace.on_demand_price is not None:
            meta["on_demand_price"] = trace.on_demand_price
        doc: dict = {"metadata": meta, "data": [int(x) for x in data]}
        if trace.prices:
            doc["prices"] = [round(float(x), 4) for x in trace.prices[i]]
        with open(os.path.join(directory, f"{name}.json"), "w") as f:
            json.dump(doc, f)
    return directory


@dataclass(frozen=True)
class CorrelatedPools:
    """Spot pools of several instance types in several zones whose interruptions are correlated as measured
    clouds show them: mostly a whole (type, zone) pool at once, sometimes a whole zone (every type) or a whole
    type (every zone) at once. Each pool alternates up (`up_capacity` nodes, some points partial) and down with
    geometric periods; shocks take a zone or a type down for `shock_points` on average. Spot prices move per
    pool: a mean-reverting log walk around the type's base price, and up by `scarce_premium` while the pool is
    short (capacity and price move together)."""
    types: tuple[str, ...] = ("t1", "t2", "t3")
    zones: int = 3
    points: int = 3200
    gap_seconds: float = 300.0
    mean_up_points: float = 100.0
    mean_down_points: float = 20.0
    up_capacity: int = 4
    partial: float = 0.05
    zone_shock: float = 0.004      # per zone per point: every type of the zone goes down
    type_shock: float = 0.002      # per type per point: the type goes down in every zone
    shock_points: float = 4.0
    base_prices: tuple[float, ...] = (1.0, 1.15, 1.3)   # spot, where on-demand costs `on_demand_price`
    on_demand_price: float = 3.0
    volatility: float = 0.03       # of the log price per point
    scarce_premium: float = 0.3


def correlated_trace(spec: CorrelatedPools, seed: int, name: str = "correlated") -> SpotTrace:
    rng = np.random.default_rng(seed)
    n_types, n_zones, points = len(spec.types), spec.zones, spec.points
    pools = n_types * n_zones
    up = rng.random(pools) < spec.mean_up_points / (spec.mean_up_points + spec.mean_down_points)
    zone_left = np.zeros(n_zones, dtype=np.int64)
    type_left = np.zeros(n_types, dtype=np.int64)
    data = np.zeros((pools, points), dtype=np.int64)
    prices = np.zeros((pools, points))
    base = np.log(np.array([spec.base_prices[i % len(spec.base_prices)] for i in range(n_types)]).repeat(n_zones))
    walk = np.zeros(pools)
    zone_of = np.tile(np.arange(n_zones), n_types)
    type_of = np.arange(n_types).repeat(n_zones)
    for t in range(points):
        up ^= rng.random(pools) < np.where(up, 1 / spec.mean_up_points, 1 / spec.mean_down_points)
        zone_left = np.where((zone_left == 0) & (rng.random(n_zones) < spec.zone_shock),
                             rng.geometric(1 / spec.shock_points, n_zones), np.maximum(0, zone_left - 1))
        type_left = np.where((type_left == 0) & (rng.random(n_types) < spec.type_shock),
                             rng.geometric(1 / spec.shock_points, n_types), np.maximum(0, type_left - 1))
        level = np.where(rng.random(pools) < spec.partial, rng.integers(1, max(2, spec.up_capacity), pools),
                         spec.up_capacity)
        cap = np.where(up & (zone_left[zone_of] == 0) & (type_left[type_of] == 0), level, 0)
        data[:, t] = cap
        walk = 0.95 * walk + rng.normal(0.0, spec.volatility, pools)
        prices[:, t] = np.minimum(np.exp(base + walk) * (1 + spec.scarce_premium * (cap < spec.up_capacity)),
                                  spec.on_demand_price)
    names = tuple(f"{spec.types[type_of[i]]}@zone-{zone_of[i]}" for i in range(pools))
    return SpotTrace(name, names, spec.gap_seconds, tuple(data), tuple(spec.types[i] for i in type_of),
                     tuple(f"zone-{z}" for z in zone_of), tuple(prices), spec.on_demand_price)




def lognormal_trace(zones: int, median_up_points: float, median_down_points: float, sigma: float, capacity: int,
                    seed: int, points: int = 3200, partial: float = 0.0, gap_seconds: float = 300.0,
                    name: str = "lognormal") -> SpotTrace:
    """Up and down periods with log-normal lengths (heavy tails: most short, a few very long, unlike geometric)."""
    rng = np.random.default_rng(seed)
    data = []
    for _ in range(zones):
        out: list[int] = []
        up = bool(rng.random() < 0.7)
        while len(out) < points:
            length = max(1, int(rng.lognormal(np.log(median_up_points if up else median_down_points), sigma)))
            if up:
                level = np.where(rng.random(length) < partial, rng.integers(1, max(2, capacity), length), capacity)
                out.extend(int(x) for x in level)
            else:
                out.extend([0] * length)
            up = not up
        data.append(np.asarray(out[:points], dtype=np.int64))
    return SpotTrace(name, tuple(f"zone-{i}" for i in range(zones)), gap_seconds, tuple(data))


def walk_trace(zones: int, capacity: int, move: float, seed: int, points: int = 3200, crash: float = 0.01,
               gap_seconds: float = 300.0, name: str = "walk") -> SpotTrace:
    """Each zone's capacity takes a +-1 step with probability `move` per point in [0, capacity], and drops to 0
    with probability `crash` (capacity that drains and refills a node at a time)."""
    rng = np.random.default_rng(seed)
    data = np.zeros((zones, points), dtype=np.int64)
    level = rng.integers(0, capacity + 1, zones)
    for t in range(points):
        step = np.where(rng.random(zones) < move, rng.choice([-1, 1], zones), 0)
        level = np.clip(level + step, 0, capacity)
        level = np.where(rng.random(zones) < crash, 0, level)
        data[:, t] = level
    return SpotTrace(name, tuple(f"zone-{i}" for i in range(zones)), gap_seconds, tuple(data))


def reversed_trace(trace: SpotTrace) -> SpotTrace:
    """The same zones played backwards: the same capacities and durations, other sequences of events."""
    return SpotTrace(trace.path + " reversed", trace.zones, trace.gap_seconds, tuple(d[::-1].copy() for d in trace.data))


def binary_trace(trace: SpotTrace) -> SpotTrace:
    """Only available or not, as a source that reports no counts would give it: 0 stays 0, any capacity is unlimited."""
    return SpotTrace(trace.path + " binary", trace.zones, trace.gap_seconds,
                     tuple(np.where(d > 0, UNLIMITED, 0) for d in trace.data))


def joined_trace(*traces: SpotTrace, name: str = "joined") -> SpotTrace:
    """The zones of several traces of one gap side by side, cut to the shortest."""
    if len({t.gap_seconds for t in traces}) != 1:
        raise ValueError("joined traces must share gap_seconds")
    shortest = min(len(d) for t in traces for d in t.data)
    data = tuple(d[:shortest] for t in traces for d in t.data)
    return SpotTrace(name, tuple(f"zone-{i}" for i in range(len(data))), traces[0].gap_seconds, data)
