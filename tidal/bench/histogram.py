"""Latency histograms with HDR precision (3 significant digits from 1 us to 1 h), reported in milliseconds."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3

# The percentiles every report carries, as (key, percentile).
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))


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

    def percentile_ms(self, percentile: float) -> float:
        if not self.count:
            return 0.0
        return self._h.get_value_at_percentile(percentile) / 1000.0

    def summary_ms(self) -> dict[str, float]:
        """min, mean, the PERCENTILES and max, in ms (all 0 when nothing was recorded)."""
        if not self.count:
            return {k: 0.0 for k in ("min", "mean", *(k for k, _ in PERCENTILES), "max")}
        out = {"min": self._h.get_min_value() / 1000.0, "mean": round(self._h.get_mean_value() / 1000.0, 3)}
        values = self._h.get_percentile_to_value_dict([p for _, p in PERCENTILES])
        for key, p in PERCENTILES:
            out[key] = values[p] / 1000.0
        out["max"] = self._h.get_max_value() / 1000.0
        return out

    def merge(self, other: "LatencyHistogram") -> None:
        self._h.add(other._h)

    def reset(self) -> None:
        self._h.reset()
