"""Request and batch metrics: what is counted, and that the exposition text is valid Prometheus."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import call
from tests.server.fakes import FakeManager, half_plus_two
from tidal.server.app import ModelServerApp
from tidal.server.metrics import ServerMetrics


def families(text: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def samples(fam, name):
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples if s.name == name}


def test_histogram_buckets_are_cumulative_and_le_inclusive():
    m = ServerMetrics(latency_buckets=(0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 2.0):
        m.observe_request("m", "1", "predict", 200, seconds)
    m.observe_request("m", "1", "predict", 404, 0.01)
    fam = families(m.render())["tidal_request_latency_seconds"]
    buckets = {s.labels["le"]: s.value for s in fam.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 3, "1.0": 4, "+Inf": 5}
    count = [s.value for s in fam.samples if s.name.endswith("_count")]
    assert count == [5]
    req = families(m.render())["tidal_requests"]
    assert samples(req, "tidal_requests_total") == {
        (("api", "predict"), ("code", "200"), ("model", "m"), ("version", "1")): 4,
        (("api", "predict"), ("code", "404"), ("model", "m"), ("version", "1")): 1}
    tf = families(m.render())[":tensorflow:serving:request_count"]
    # (the parser reports counters under a _total sample name; the text has TF Serving's own name)
    assert samples(tf, ":tensorflow:serving:request_count_total") == {
        (("model_name", "m"), ("status", "OK")): 4, (("model_name", "m"), ("status", "NOT_FOUND")): 1}


def test_batches_and_label_escaping():
    m = ServerMetrics()
    m.observe_batch('we"ird\nname', 3, 8, 0.0002)
    m.observe_batch('we"ird\nname', 3, 1, 0.0)
    fams = families(m.render())
    sizes = fams["tidal_batch_size"]
    assert [s.value for s in sizes.samples if s.name == "tidal_batch_size_sum"] == [9]
    assert [s.labels["model"] for s in sizes.samples][0] == 'we"ird\nname'
    queue = fams["tidal_batch_queue_seconds"]
    assert [s.value for s in queue.samples if s.name == "tidal_batch_queue_seconds_count"] == [2]


def test_served_at_both_paths_with_per_model_series():
    app = ModelServerApp(FakeManager([half_plus_two(123)]))
    call(app, "POST", "/v1/models/half_plus_two:predict", {"instances": [1.0]})
    call(app, "POST", "/v1/models/half_plus_two:predict", {"instances": ["x"]})
    call(app, "POST", "/v1/models/missing:predict", {"instances": [1.0]})
    for path in ("/metrics", "/monitoring/prometheus/metrics"):
        r = call(app, "GET", path)
        assert r.status == 200 and r.content_type.startswith(b"text/plain; version=0.0.4")
        got = samples(families(r.body)["tidal_requests"], "tidal_requests_total")
        assert got[(("api", "predict"), ("code", "200"), ("model", "half_plus_two"), ("version", "123"))] == 1
        assert got[(("api", "predict"), ("code", "400"), ("model", "half_plus_two"), ("version", "123"))] == 1
        # An unknown model is not a label value: clients cannot grow the series without bound.
        assert got[(("api", "predict"), ("code", "404"), ("model", ""), ("version", ""))] == 1
    assert call(app, "POST", "/metrics").status == 405
