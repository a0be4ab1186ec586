"""Merging the counters of several gateway processes into one view: counts add up, p90 comes from the merged
histogram (never an average of the processes' p90s), gauges add up, stale buckets give way to newer ones."""

from __future__ import annotations

import orjson
import pytest

from tidal.clock import FakeClock
from tidal.gateway.config import ReleaseSplit, ReplicaEndpoint
from tidal.gateway.proxy import Gateway
from tidal.gateway.workers import merge, snapshot
from tidal.gateway.window import WindowedCounter

REPLICAS = (ReplicaEndpoint(id="r0", port=9000, release="a"), ReplicaEndpoint(id="r1", port=9001, release="b"))


def _gateway(clock: FakeClock, releases: ReleaseSplit | None = None) -> Gateway:
    gw = Gateway(clock=clock)
    gw.set_service("svc", REPLICAS, models=("m",), releases=releases)
    return gw


def _record(gw: Gateway, now: float, latencies: list[float], status: int = 200) -> None:
    svc = gw._services["svc"]
    for lat in latencies:
        svc.window.record(now, lat, status >= 500)
        svc.metrics.observe(status, lat)
        svc.replicas["r0"].metrics.observe(status, lat)


def _wire(snap: dict) -> dict:
    return orjson.loads(orjson.dumps(snap))  # as it crosses the channel


@pytest.mark.parametrize("name, per_process, want_requests, want_p90", [
    # Fast answers on one process, slow on the other: the merged p90 is the slow one's, which an average of
    # the two p90s (about 0.5 s) would miss.
    ("skewed", [[0.001] * 50, [1.0] * 50], 100, 1.0),
    ("one process idle", [[0.01] * 30, []], 30, 0.01),
    ("even", [[0.002] * 10, [0.002] * 10], 20, 0.002),
])
def test_the_view_counts_every_process(name, per_process, want_requests, want_p90):
    clock = FakeClock(1000.0)
    procs = [_gateway(clock) for _ in per_process]
    for gw, lats in zip(procs, per_process):
        _record(gw, clock.monotonic(), lats)
    clock.advance(0.5)
    view = _gateway(clock)
    merge(view, [_wire(snapshot(gw)) for gw in procs])

    sig = view.signals("svc", 10.0)
    stats = view.stats("svc")
    assert stats.requests == want_requests
    assert sum(r.requests for r in stats.replicas) == want_requests
    assert view.qps("svc", 10.0) == pytest.approx(sum(procs[i].qps("svc", 10.0) for i in range(len(procs))))
    if want_requests:
        assert sig.p90 == pytest.approx(want_p90, rel=0.2)


def test_gauges_add_up_and_stale_buckets_give_way():
    clock = FakeClock(1000.0)
    a, b = _gateway(clock), _gateway(clock)
    _record(a, 699.0, [0.01] * 7)     # 301 s ago: the same ring slot as now, an older period
    _record(b, 1000.0, [0.01] * 3)
    a._services["svc"].queue.waiting = 2
    b._services["svc"].queue.waiting = 5
    a._services["svc"].metrics.in_flight = 1
    b._services["svc"].replicas["r1"].outstanding = 4
    view = _gateway(clock)
    merge(view, [_wire(snapshot(a)), _wire(snapshot(b))])
    stats = view.stats("svc")
    assert stats.queued == 7 and stats.in_flight == 1
    assert {r.id: r.outstanding for r in stats.replicas} == {"r0": 0, "r1": 4}
    assert view._services["svc"].window.summary(1000.0, 60.0).requests == 3  # the old period's 7 are gone
    assert stats.requests == 10  # the lifetime counters keep everything


def test_release_samples_merge_and_a_service_not_yet_everywhere_is_skipped():
    clock = FakeClock(1000.0)
    split = ReleaseSplit(weights={"a": 90, "b": 10}, stable="a")
    a, b = _gateway(clock, split), _gateway(clock, split)
    for gw, lat, status in ((a, 0.01, 200), (b, 0.5, 503)):
        for _ in range(10):
            gw._services["svc"].releases.record("b", clock.monotonic(), status, lat, None)
    other = Gateway(clock=clock)  # a process that has not got the service yet
    view = _gateway(clock, split)
    merge(view, [_wire(snapshot(a, 60.0)), _wire(snapshot(b, 60.0)), _wire(snapshot(other, 60.0))])
    by = {r.release: r for r in view.release_stats("svc", 60.0)}
    assert by["b"].requests == 20 and by["b"].errors == 10 and by["b"].p90 == 0.5
    assert by["a"].requests == 0


def test_counters_of_different_sizes_are_refused():
    w = WindowedCounter(0.0, max_window_seconds=10.0)
    other = WindowedCounter(0.0, max_window_seconds=20.0)
    from tidal.gateway.workers import _window_add, _window_out
    with pytest.raises(ValueError):
        _window_add(w, _window_out(other))
