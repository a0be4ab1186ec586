"""Latency histograms with HDR precision (3 significant digits from 1 us to 1 h), reported in milliseconds."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3

# The percentiles every report carries, as (key, percentile).
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))


@lru_cache(maxsize=4)
def _index_values(lowest: int, highest: int, digits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per counts-array index: the lowest, highest and median value it stands for (computed once per shape).

    hdrh reads percentiles by walking every bucket in Python (tens of ms each); with these arrays a
    cumulative sum and a binary search give the same answers at numpy speed.
    """
    h = HdrHistogram(lowest, highest, digits)
    low = np.fromiter((h.get_value_from_index(i) for i in range(h.counts_len)), np.int64, h.counts_len)
    high = np.fromiter((h.get_highest_equivalent_value(v) for v in low.tolist()), np.int64, h.counts_len)
    # The middle of each bucket's range, as hdrh's mean uses.
    median = low + ((high - low + 1) >> 1)
    return low, high, median


class LatencyHistogram:
    """Record latencies in seconds; read percentiles in milliseconds, exact to 0.1% of the value."""

    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record(self, seconds: float) -> None:
        us = int(seconds * 1e6)
        # Clamp rather than drop: a sample outside the range still counts, at the nearest edge.
        self._h.record_value(LOWEST_US if us < LOWEST_US else HIGHEST_US if us > HIGHEST_US else us)

    @property
    def count(self) -> int:
        return self._h.get_total_count()

    def _arrays(self) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        counts = np.ctypeslib.as_array(self._h.counts)[: self._h.counts_len].astype(np.int64)
        return counts, _index_values(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def _percentiles_us(self, percentiles: list[float]) -> list[int]:
        """HdrHistogram's get_value_at_percentile, for several percentiles in one pass."""
        counts, (low, high, _) = self._arrays()
        cumulative = np.cumsum(counts)
        out = []
        for p in percentiles:
            target = self._h.get_target_count_at_percentile(p)
            i = min(int(np.searchsorted(cumulative, target)), len(cumulative) - 1)
            out.append(int(high[i] if p else low[i]))
        return out

    def percentile_ms(self, percentile: float) -> float:
        if not self.count:
            return 0.0
        return self._percentiles_us([percentile])[0] / 1000.0

    def summary_ms(self) -> dict[str, float]:
        """min, mean, the PERCENTILES and max, in ms (all 0 when nothing was recorded)."""
        if not self.count:
            return {k: 0.0 for k in ("min", "mean", *(k for k, _ in PERCENTILES), "max")}
        counts, (_, _, median) = self._arrays()
        mean_us = float((counts * median).sum()) / self.count  # as hdrh's get_mean_value
        out = {"min": self._h.get_min_value() / 1000.0, "mean": round(mean_us / 1000.0, 3)}
        for (key, _), value in zip(PERCENTILES, self._percentiles_us([p for _, p in PERCENTILES])):
            out[key] = value / 1000.0
        out["max"] = self._h.get_max_value() / 1000.0
        return out

    def merge(self, other: "LatencyHistogram") -> None:
        self._h.add(other._h)

    def reset(self) -> None:
        self._h.reset()
