"""The windowed counter: rates, the straddling bucket, ring reuse, quantiles; time from a fake clock."""

import pytest

from tidal.clock import FakeClock
from tidal.gateway.window import WindowedCounter, latency_bin, quantile


def _counter(clock, **kw):
    return WindowedCounter(clock.monotonic(), **kw)


def test_steady_rate_over_several_windows():
    clock = FakeClock(1000.0)
    c = _counter(clock, max_window_seconds=60)
    # 20 requests per second for 60 s, evenly spread (one every 50 ms).
    for _ in range(1200):
        clock.advance(0.05)
        c.record(clock.monotonic(), 0.01)
    for window in (6, 15, 60):
        assert c.rate(clock.monotonic(), window) == pytest.approx(20.0, rel=0.02)


def test_window_counts_only_recent_requests():
    clock = FakeClock(1000.0)
    c = _counter(clock, max_window_seconds=60)
    clock.advance(30.0)
    for _ in range(60):  # 60 requests in the second [1030, 1031)
        c.record(clock.monotonic(), 0.01)
    clock.advance(9.5)  # now 1039.5: the burst is 9.5 s old
    # 6 s window: (1033.5, 1039.5] holds none of it.
    assert c.rate(clock.monotonic(), 6) == 0.0
    # 15 s window: all 60 requests / 15 s = 4 qps.
    assert c.rate(clock.monotonic(), 15) == pytest.approx(4.0)


def test_oldest_bucket_counts_by_its_share_inside_the_window():
    clock = FakeClock(1000.0)
    c = _counter(clock, max_window_seconds=60)
    clock.advance(20.0)
    for _ in range(10):  # 10 requests in bucket [1020, 1021)
        c.record(1020.0, 0.01)
    # now = 1026.25, window 6 s -> (1020.25, 1026.25]: 3/4 of bucket 1020 is inside,
    # so 10 * 0.75 = 7.5 requests / 6 s = 1.25 qps.
    assert c.rate(1026.25, 6) == pytest.approx(1.25)


def test_young_counter_divides_by_its_age():
    clock = FakeClock(500.0)
    c = _counter(clock, max_window_seconds=60)
    for _ in range(30):
        c.record(503.0, 0.01)
    # Started 3 s ago (503.0 is now): 30 requests / 3 s = 10 qps for any window >= 3 s,
    # not 30 / 60 = 0.5 qps as if it had been idle before it existed.
    assert c.rate(503.0, 60) == pytest.approx(10.0)
    # Never divide by less than one bucket: 30 / 1 s at 500.2.
    c2 = WindowedCounter(500.0)
    for _ in range(30):
        c2.record(500.2, 0.01)
    assert c2.rate(500.2, 6) == pytest.approx(30.0)


def test_ring_slots_are_reused_without_leaking_old_counts():
    clock = FakeClock(0.0)
    c = _counter(clock, max_window_seconds=10)  # 11 slots
    c.record(5.0, 0.01)
    # 11 s later the same slot comes round again: the old count must not be read.
    assert c.rate(16.0, 10) == 0.0
    c.record(16.0, 0.01)
    assert c.rate(16.5, 10) == pytest.approx(0.1)


def test_errors_and_quantiles_in_summary():
    clock = FakeClock(100.0)
    c = _counter(clock, max_window_seconds=60)
    clock.advance(60.0)
    # 98 fast requests at 1 ms, 2 slow failures at 500 ms, all within the last 10 s.
    for i in range(100):
        t = 150.0 + i * 0.1
        slow = i in (10, 60)
        c.record(t, 0.5 if slow else 0.001, error=slow)
    s = c.summary(160.0, 15)
    assert s.requests == 100
    assert s.qps == pytest.approx(100 / 15)
    assert s.error_qps == pytest.approx(2 / 15)
    lo, hi = latency_bin(0.001)
    assert lo <= s.p50 <= hi
    lo, hi = latency_bin(0.5)
    assert lo <= s.p99 <= hi


def test_empty_window_has_no_quantiles():
    c = WindowedCounter(0.0)
    s = c.summary(30.0, 15)
    assert (s.qps, s.p50, s.p99) == (0.0, None, None)
    assert quantile([0, 0, 0], 0.5) is None


def test_bad_windows_are_rejected():
    c = WindowedCounter(0.0, max_window_seconds=60)
    with pytest.raises(ValueError, match="longer than"):
        c.rate(10.0, 61)
    with pytest.raises(ValueError, match="at least one bucket"):
        c.rate(10.0, 0)
    with pytest.raises(ValueError):
        WindowedCounter(0.0, bucket_seconds=0)
