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
    """Write a trace as the protocol's files (one JSON per zone) so the CLI can read it."""
    os.makedirs(directory, exist_ok=True)
    for zone, data in zip(trace.zones, trace.data):
        with open(os.path.join(directory, f"{zone}.json"), "w") as f:
            json.dump({"metadata": {"gap_seconds": trace.gap_seconds}, "data": [int(x) for x in data]}, f)
    return directory




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
