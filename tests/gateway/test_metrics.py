"""Request metrics: status classes, inclusive histogram bounds, Prometheus exposition."""

from prometheus_client.parser import text_string_to_metric_families

from tidal.gateway.metrics import RequestMetrics, make_registry, render


def test_status_classes_and_inclusive_buckets():
    m = RequestMetrics()
    for status in (101, 200, 204, 302, 404, 499, 503, 504):
        m.observe(status, 0.0005)  # exactly on the first bound: counted in le="0.0005"
    m.observe(200, 100.0)  # beyond the last bound: only in +Inf
    assert m.by_class == [1, 3, 1, 2, 2]
    assert (m.requests, m.errors) == (9, 2)
    assert m.buckets[0] == 8 and m.buckets[-1] == 1


def test_exposition_is_cumulative_and_labelled():
    svc, rep = RequestMetrics(), RequestMetrics()
    svc.observe(200, 0.002)
    svc.observe(200, 0.2)
    svc.in_flight = 3
    rep.observe(200, 0.002)
    registry = make_registry(lambda: [("hpt", svc, [("r0", rep)], {6.0: 1.5, 60.0: 0.25})])
    fams = {f.name: f for f in text_string_to_metric_families(render(registry).decode())}
    buckets = {s.labels["le"]: s.value for s in fams["tidal_gateway_request_duration_seconds"].samples
               if s.name.endswith("_bucket")}
    # 0.002 s falls under le=0.0025 and above; 0.2 s under le=0.25 and above (cumulative counts).
    assert (buckets["0.001"], buckets["0.0025"], buckets["0.1"], buckets["0.25"], buckets["+Inf"]) == (0, 1, 1, 2, 2)
    qps = {s.labels["window"]: s.value for s in fams["tidal_gateway_qps"].samples}
    assert qps == {"6s": 1.5, "60s": 0.25}
    inflight = fams["tidal_gateway_in_flight_requests"].samples[0]
    assert inflight.labels == {"service": "hpt"} and inflight.value == 3
    rsamples = [s for s in fams["tidal_gateway_replica_requests"].samples if s.labels.get("code") == "2xx"]
    assert rsamples[0].labels == {"service": "hpt", "replica": "r0", "code": "2xx"} and rsamples[0].value == 1
