"""A time-bucketed request counter: rate, error rate, concurrency and latency quantiles over a sliding window.

The caller passes `now` (monotonic seconds) to every call, so the counter is a pure
function of what was recorded and when; tests step a fake clock. Buckets live in a
ring sized for the longest window, so recording is O(1) and memory is bounded.

Concurrency (requests in flight on average) is Little's law over the window: the
seconds that requests finished in the window spent in the gateway, divided by the
window. It costs one addition per request, where sampling the in-flight count would
cost a timer or a clock read per change.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

# Latency histogram bin upper bounds: 50 us to ~100 s, four bins per doubling, so a
# quantile read from the histogram is within ~19% of the true value.
_LAT_MIN = 50e-6
_LAT_BINS = tuple(_LAT_MIN * 2 ** (i / 4) for i in range(84))


@dataclass(frozen=True)
class WindowSummary:
    """What happened in one window: requests per second, 5xx per second, latency quantiles (seconds), and the
    average number of requests in flight."""

    window_seconds: float
    requests: float
    qps: float
    error_qps: float
    p50: float | None
    p99: float | None
    p90: float | None = None
    concurrency: float = 0.0


class WindowedCounter:
    """Counts completed requests into `bucket_seconds` buckets covering up to `max_window_seconds`."""

    __slots__ = ("bucket", "started", "_n", "_epoch", "_count", "_errors", "_hist", "_busy")

    def __init__(self, started: float, *, bucket_seconds: float = 1.0, max_window_seconds: float = 300.0) -> None:
        if bucket_seconds <= 0 or max_window_seconds < bucket_seconds:
            raise ValueError("need 0 < bucket_seconds <= max_window_seconds")
        self.bucket = bucket_seconds
        self.started = started
        # One more slot than the window spans: the current bucket is partial.
        self._n = int(math.ceil(max_window_seconds / bucket_seconds)) + 1
        self._epoch = [-1] * self._n
        self._count = [0] * self._n
        self._errors = [0] * self._n
        self._hist: list[list[int] | None] = [None] * self._n
        self._busy = [0.0] * self._n  # seconds spent in the gateway by the requests finished in the bucket

    @property
    def max_window_seconds(self) -> float:
        return (self._n - 1) * self.bucket

    def record(self, now: float, latency: float, error: bool = False) -> None:
        idx = int(now // self.bucket)
        slot = idx % self._n
        if self._epoch[slot] != idx:
            self._epoch[slot] = idx
            self._count[slot] = 0
            self._errors[slot] = 0
            self._hist[slot] = None
            self._busy[slot] = 0.0
        self._count[slot] += 1
        self._busy[slot] += latency
        if error:
            self._errors[slot] += 1
        hist = self._hist[slot]
        if hist is None:
            hist = self._hist[slot] = [0] * (len(_LAT_BINS) + 1)
        hist[bisect_left(_LAT_BINS, latency)] += 1

    def _check(self, window: float) -> None:
        if not window >= self.bucket:
            raise ValueError(f"window must be at least one bucket ({self.bucket}s), got {window}")
        if window > self.max_window_seconds + 1e-9:
            raise ValueError(f"window of {window}s is longer than the {self.max_window_seconds}s kept")

    def _span(self, now: float, window: float) -> float:
        # A counter younger than the window has seen only part of it: divide by what it saw,
        # or a service that just started would look idle (but never by less than one bucket).
        return max(min(window, now - self.started), self.bucket)

    def _weights(self, now: float, window: float):
        """Yield (slot, weight): the part of each bucket that lies inside (now - window, now]."""
        cur = int(now // self.bucket)
        remaining = window - (now - cur * self.bucket)
        yield cur % self._n, cur, 1.0
        k = 1
        while remaining > 1e-12 and k < self._n:
            idx = cur - k
            if remaining >= self.bucket:
                yield idx % self._n, idx, 1.0
                remaining -= self.bucket
            else:
                # The oldest bucket straddles the window's edge: count the share that is inside,
                # assuming arrivals were spread evenly across it.
                yield idx % self._n, idx, remaining / self.bucket
                remaining = 0.0
            k += 1

    def rate(self, now: float, window: float) -> float:
        """Requests per second over the last `window` seconds."""
        self._check(window)
        total = 0.0
        for slot, idx, w in self._weights(now, window):
            if self._epoch[slot] == idx:
                total += self._count[slot] * w
        return total / self._span(now, window)

    def concurrency(self, now: float, window: float) -> float:
        """Requests in flight on average over the last `window` seconds (Little's law)."""
        self._check(window)
        busy = 0.0
        for slot, idx, w in self._weights(now, window):
            if self._epoch[slot] == idx:
                busy += self._busy[slot] * w
        return busy / self._span(now, window)

    def summary(self, now: float, window: float) -> WindowSummary:
        self._check(window)
        total = errors = busy = 0.0
        merged = [0] * (len(_LAT_BINS) + 1)
        for slot, idx, w in self._weights(now, window):
            if self._epoch[slot] != idx:
                continue
            total += self._count[slot] * w
            errors += self._errors[slot] * w
            busy += self._busy[slot] * w
            hist = self._hist[slot]
            if hist is not None and w > 0:
                # Quantiles use whole buckets: a fraction of a histogram is not meaningful.
                for i, c in enumerate(hist):
                    if c:
                        merged[i] += c
        span = self._span(now, window)
        return WindowSummary(window, total, total / span, errors / span,
                             quantile(merged, 0.5), quantile(merged, 0.99), quantile(merged, 0.9), busy / span)


def quantile(hist: list[int], q: float) -> float | None:
    """The q-quantile of a histogram over `_LAT_BINS`, interpolated inside its bin; None when empty."""
    n = sum(hist)
    if n == 0:
        return None
    rank = q * n
    seen = 0
    for i, c in enumerate(hist):
        if c and seen + c >= rank:
            lo = _LAT_BINS[i - 1] if i > 0 else 0.0
            hi = _LAT_BINS[i] if i < len(_LAT_BINS) else _LAT_BINS[-1]
            return lo + (hi - lo) * max(0.0, rank - seen) / c
        seen += c
    return _LAT_BINS[-1]


def latency_bin(latency: float) -> tuple[float, float]:
    """The (lower, upper] bounds of the histogram bin `latency` falls in (for tests and docs)."""
    i = bisect_left(_LAT_BINS, latency)
    return (_LAT_BINS[i - 1] if i > 0 else 0.0, _LAT_BINS[min(i, len(_LAT_BINS) - 1)])
