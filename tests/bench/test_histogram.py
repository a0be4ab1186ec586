"""The latency histogram keeps 3 significant digits: its percentiles match exact ones to 0.1%."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.bench.histogram import LatencyHistogram


def test_percentiles_match_exact_ones_within_a_tenth_of_a_percent():
    rng = np.random.default_rng(7)
    # Lognormal around 5 ms with a long tail, as latencies are.
    samples = rng.lognormal(mean=np.log(0.005), sigma=0.8, size=50_000)
    h = LatencyHistogram()
    for s in samples:
        h.record(float(s))
    assert h.count == len(samples)
    us = np.floor(samples * 1e6)
    for p in (50, 90, 99, 99.9):
        exact = np.percentile(us, p, method="inverted_cdf") / 1000
        assert h.percentile_ms(p) == pytest.approx(exact, rel=1e-3, abs=1e-3)
    summary = h.summary_ms()
    assert summary["min"] == pytest.approx(us.min() / 1000, rel=1e-3)
    assert summary["max"] == pytest.approx(us.max() / 1000, rel=1e-3)
    assert summary["mean"] == pytest.approx(us.mean() / 1000, rel=1e-3)
    assert list(summary) == ["min", "mean", "p50", "p90", "p95", "p99", "p999", "max"]


def test_fast_reads_agree_with_hdrhistogram_itself():
    rng = np.random.default_rng(3)
    h = LatencyHistogram()
    for s in rng.exponential(0.01, size=5000):
        h.record(float(s))
    hdr = h._h
    for p in (0, 1, 50, 90, 99, 99.9, 100):
        assert h.percentile_ms(p) == hdr.get_value_at_percentile(p) / 1000
    assert h.summary_ms()["mean"] == pytest.approx(hdr.get_mean_value() / 1000, abs=1e-3)


def test_out_of_range_samples_count_at_the_edges():
    h = LatencyHistogram()
    h.record(0.0)
    h.record(1e-9)
    h.record(10 * 3600.0)
    assert h.count == 3
    assert h.percentile_ms(0) == pytest.approx(0.001)
    assert h.percentile_ms(100) == pytest.approx(3_600_000, rel=1e-3)


def test_empty_merge_and_reset():
    empty = LatencyHistogram()
    assert empty.percentile_ms(99) == 0 and set(empty.summary_ms().values()) == {0.0}
    a, b = LatencyHistogram(), LatencyHistogram()
    for _ in range(90):
        a.record(0.001)
    for _ in range(10):
        b.record(0.100)
    a.merge(b)
    assert a.count == 100
    assert a.percentile_ms(50) == pytest.approx(1.0, rel=1e-3)
    assert a.percentile_ms(95) == pytest.approx(100.0, rel=1e-3)
    a.reset()
    assert a.count == 0
