"""Spot-availability traces: per-zone JSON files in a folder (or a published set, by name), expanded to ticks."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np

from tidal.errors import UserError

UNLIMITED = 1_000_000_000  # how a zone available without limit is written


@dataclass(frozen=True)
class SpotTrace:
    """One directory of traces: series in sorted file-name order, each a sequence of capacities `gap_seconds` apart.

    A series is a zone of one instance type (the published traces), or, when its file's metadata names an
    `instance_type` and a `zone`, that type in that zone; it may carry `prices` (the spot price at each point, in
    the unit where on-demand costs `on_demand_price`; default 1)."""
    path: str
    zones: tuple[str, ...]            # the series' names
    gap_seconds: float
    data: tuple[np.ndarray, ...]
    instance_types: tuple[str, ...] = ()   # per series; () for one type
    series_zones: tuple[str, ...] = ()     # per series, the zone; () when the names are the zones
    prices: tuple[np.ndarray, ...] = ()    # per series; () for a constant spot price of 1
    on_demand_price: float | None = None   # None: the run's own (3 by default)

    @property
    def offer_zones(self) -> tuple[str, ...]:
        return self.series_zones or self.zones


def published() -> tuple[str, ...]:
    """Names of the trace sets shipped with Tidal (data/spot/README.md names their source)."""
    root = resources.files("tidal.sim").joinpath("data", "spot")
    return tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))))


def resolve(directory_or_name: str) -> str:
    """A directory as given, else the folder of the published set of that name (`aws1`, `AWS1`)."""
    if os.path.isdir(directory_or_name):
        return directory_or_name
    name = directory_or_name.lower()
    if os.sep not in directory_or_name and name in published():
        return str(resources.files("tidal.sim").joinpath("data", "spot", name))
    raise UserError(f"trace directory {directory_or_name!r} does not exist "
                    f"(or name a published set: {', '.join(published())})")


def load_spot_traces(directory_or_name: str) -> SpotTrace:
    """Load a directory of traces, or a published set by name; `path` keeps what the caller gave."""
    given = directory_or_name
    directory = resolve(given)
    names = sorted(f for f in os.listdir(directory) if f.endswith(".json"))
    if not names:
        raise UserError(f"trace directory {directory!r} holds no .json trace files")
    gaps, data, types, zones, prices, od = set(), [], [], [], [], set()
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
            meta = doc["metadata"]
            gap = float(meta["gap_seconds"])
            values = np.asarray(doc["data"], dtype=np.int64)
            types.append(str(meta.get("instance_type", "")))
            zones.append(str(meta.get("zone", "")))
            price = np.asarray(doc["prices"], dtype=np.float64) if "prices" in doc else None
            if "on_demand_price" in meta:
                od.add(float(meta["on_demand_price"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"bad trace file {path}: expected {{\"metadata\": {{\"gap_seconds\": G}}, "
                            f"\"data\": [int, ...]}} ({type(exc).__name__}: {exc})") from None
        if values.ndim != 1 or values.size == 0 or gap <= 0 or (values < 0).any():
            raise UserError(f"bad trace file {path}: data must be a non-empty list of non-negative ints "
                            f"and gap_seconds positive")
        if price is not None and (price.shape != values.shape or not np.isfinite(price).all() or (price < 0).any()):
            raise UserError(f"bad trace file {path}: prices must be one non-negative number per data point")
        gaps.add(gap)
        data.append(values)
        prices.append(price)
    if len(gaps) != 1:
        raise UserError(f"trace files in {directory!r} disagree on gap_seconds: {sorted(gaps)}")
    if any(types) and not all(t and z for t, z in zip(types, zones)):
        raise UserError(f"trace files in {directory!r}: name both instance_type and zone in every file's metadata, "
                        f"or in none")
    if len(od) > 1:
        raise UserError(f"trace files in {directory!r} disagree on on_demand_price: {sorted(od)}")
    if any(p is not None for p in prices):
        prices = [np.ones(len(d)) if p is None else p for p, d in zip(prices, data)]
    typed = any(types)
    return SpotTrace(given, tuple(n[:-5] for n in names), gaps.pop(), tuple(data),
                     tuple(types) if typed else (), tuple(zones) if typed else (),
                     tuple(prices) if any(p is not None for p in prices) else (), od.pop() if od else None)


def expand(trace: SpotTrace, tick_seconds: float, series: tuple[np.ndarray, ...] | None = None) -> list[np.ndarray]:
    """Each point repeated gap/tick times (the protocol's step 2); `series`: other per-point series (prices)."""
    repeat = int(round(trace.gap_seconds / tick_seconds))
    if repeat < 1 or abs(repeat * tick_seconds - trace.gap_seconds) > 1e-6 * trace.gap_seconds:
        raise UserError(f"the trace gap ({trace.gap_seconds:g} s) is not a multiple of the tick ({tick_seconds:g} s)")
    return [np.repeat(d, repeat) for d in (trace.data if series is None else series)]


def offsets(expanded: list[np.ndarray], ticks: int, repeats: int, seed: int) -> list[int]:
    """The protocol's offsets: numpy's legacy generator, `seed(s); [randint(0, L - T) for each repeat]`."""
    shortest = min(len(d) for d in expanded)
    if shortest <= ticks:
        raise UserError(f"traces are too short: the shortest zone has {shortest} ticks, a run needs more than {ticks}")
    rs = np.random.RandomState(seed)  # the legacy global generator's algorithm, without its global state
    return [int(rs.randint(0, shortest - ticks)) for _ in range(repeats)]


def window(expanded: list[np.ndarray], offset: int, ticks: int) -> np.ndarray:
    """Capacities (zones x ticks) for one repeat: zone z at tick t is trace_z[(t + offset) mod len_z]."""
    t = np.arange(ticks)
    return np.stack([d[(t + offset) % len(d)] for d in expanded])
