"""The gateway's autoscaling signals: concurrency by Little's law, p90, the queue gauge, and a replica metric read."""

import pytest

from tidal.autoscaling.scrape import read
from tidal.clock import FakeClock
from tidal.gateway.config import ReplicaEndpoint
from tidal.gateway.control import ControlEndpoints
from tidal.gateway.metrics import RequestMetrics, make_registry, render
from tidal.gateway.proxy import Gateway
from tidal.gateway.window import WindowedCounter
from tidal.http.server import Request


def test_concurrency_is_the_busy_seconds_over_the_window():
    w = WindowedCounter(0.0, bucket_seconds=1.0, max_window_seconds=60.0)
    # 30 requests of 0.4 s and 10 of 1.0 s finish in the last 10 s: (12 + 10) / 10 = 2.2 in flight on average.
    for i in range(30):
        w.record(100.0 + i * 0.3, 0.4)
    for i in range(10):
        w.record(100.0 + i * 0.9, 1.0)
    assert w.concurrency(109.99, 10.0) == pytest.approx(2.2)
    s = w.summary(109.99, 10.0)
    assert s.concurrency == pytest.approx(2.2)
    assert 0.4 < s.p90 <= 1.2  # the 90th of 40 is among the 1.0 s ones (within a bin's width)
    assert w.concurrency(200.0, 10.0) == 0.0


def test_gateway_signals_and_the_queue_gauge_and_control_endpoint():
    clock = FakeClock(1000.0)
    gw = Gateway(clock=clock)
    gw.set_service("m", [ReplicaEndpoint(id="r1", host="127.0.0.1", port=1, state="ready")])
    svc = gw._services["m"]
    svc.window.record(clock.monotonic(), 0.5)
    svc.queue.waiting = 3  # as if three requests waited
    s = gw.signals("m", 15.0)
    assert (s.queued, s.ready, s.in_flight) == (3, 1, 0) and s.concurrency > 0 and s.p90 is not None
    text = render(gw._registry).decode()
    assert 'tidal_gateway_queued_requests{service="m"} 3.0' in text
    control = ControlEndpoints(gw, "t0ken", None, [])
    req = Request("GET", b"/-/control/signals?service=m&window=15", {"authorization": "Bearer t0ken"}, b"",
                  "127.0.0.1:1", None)
    resp = control.handle(req)
    assert resp.status == 200 and b'"queued":3' in resp.body
    bad = control.handle(Request("GET", b"/-/control/signals?service=nope&window=15",
                                 {"authorization": "Bearer t0ken"}, b"", "127.0.0.1:1", None))
    assert bad.status == 404


def test_collector_takes_a_snapshot_without_the_queue():
    text = render(make_registry(lambda: [("m", RequestMetrics(), [], {})])).decode()
    assert 'tidal_gateway_queued_requests{service="m"} 0.0' in text


METRICS = """# TYPE tidal_requests_total counter
tidal_requests_total{model="m",code="200"} 10
tidal_requests_total{model="m",code="500"} 2
tidal_requests_total{model="other",code="200"} 7
# TYPE queue_depth gauge
queue_depth 4
"""


def test_read_sums_matching_samples_and_says_what_is_cumulative():
    assert read(METRICS, {"tidal_requests_total": {"model": "m"}, "queue_depth": {}}) == {
        "tidal_requests_total": (12.0, True), "queue_depth": (4.0, False)}
    assert read(METRICS, {"absent": {}}) == {}
