"""Request traces for the fuller model: per-second rates from a CSV, a constant Poisson rate, or periodic bursts."""

from __future__ import annotations

import csv
import os

import numpy as np

from tidal.errors import UserError


def from_csv(path: str) -> np.ndarray:
    """Per-second request rates: one number per row (the last column; a header row is skipped)."""
    if not os.path.isfile(path):
        raise UserError(f"request trace {path!r} does not exist")
    rates = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or not row[-1].strip():
                continue
            try:
                rates.append(float(row[-1]))
            except ValueError:
                if i == 0:
                    continue  # a header
                raise UserError(f"bad request trace {path}: row {i + 1} ({row[-1]!r}) is not a rate") from None
    if not rates or min(rates) < 0:
        raise UserError(f"bad request trace {path}: expected non-negative per-second rates")
    return np.asarray(rates, dtype=float)


def constant(rate: float, seconds: int) -> np.ndarray:
    return np.full(seconds, float(rate))


def bursts(base: float, peak: float, every_seconds: int, burst_seconds: int, seconds: int) -> np.ndarray:
    """`base` requests/s with a burst to `peak` for `burst_seconds` every `every_seconds`."""
    t = np.arange(seconds)
    return np.where(t % max(1, every_seconds) < burst_seconds, float(peak), float(base))


def diurnal(mean: float, amplitude: float, seconds: int, period_seconds: int = 86400) -> np.ndarray:
    t = np.arange(seconds)
    return np.maximum(0.0, mean * (1 + amplitude * np.sin(2 * np.pi * t / period_seconds)))


def arrivals(rates: np.ndarray, tick_seconds: float, ticks: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson request counts per tick; the per-second trace repeats if shorter than the run."""
    per_tick = int(round(tick_seconds))
    if per_tick < 1:
        raise UserError("the fuller model's tick must be at least 1 s")
    seconds = np.resize(rates, ticks * per_tick).reshape(ticks, per_tick).sum(axis=1)
    return rng.poisson(seconds)
