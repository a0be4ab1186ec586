"""The console's handler: static files, the JSON contract, windows, and actions only with the token."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.console.conftest import TOKEN
from tests.console.fake_provider import FakeProvider
from tidal.clock import FakeClock
from tidal.console.app import ConsoleApp
from tidal.console.model import Series
from tidal.http.server import Request, Response


class _Conn:
    closed = False


def call(app: ConsoleApp, method: str, url: str, body: bytes = b"", token: str | None = None) -> Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    resp = app.handle(Request(method, url.encode(), headers, body, "test", _Conn()))
    if resp is not None and not isinstance(resp, Response):
        resp = asyncio.run(resp)
    return resp


def doc(resp: Response):
    return orjson.loads(resp.body)


@pytest.fixture
def clock():
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def app(clock):
    return ConsoleApp(FakeProvider(clock), token=TOKEN, clock=clock)


def test_static_page_and_assets(app):
    assert call(app, "GET", "/elsewhere") is None  # not ours: the control plane routes it
    assert call(app, "GET", "/console").status == 308
    page = call(app, "GET", "/console/")
    assert page.status == 200 and page.content_type.startswith(b"text/html") and b"static/app.js" in page.body
    js = call(app, "GET", "/console/static/app.js")
    assert js.status == 200 and b"javascript" in js.content_type and len(js.body) > 20_000  # uPlot is bundled
    assert call(app, "GET", "/console/static/app.css").content_type.startswith(b"text/css")
    assert call(app, "GET", "/console/static/../app.py").status == 404
    assert call(app, "GET", "/console/static/nope.js").status == 404
    r = call(app, "POST", "/console/")
    assert r.status == 405 and r.headers == [("Allow", "GET, HEAD")]
    r = call(app, "DELETE", "/console/api/overview")
    assert r.status == 405 and r.headers == [("Allow", "GET, POST")]


def test_overview_contract(app):
    d = doc(call(app, "GET", "/console/api/overview"))
    assert d["time"] == 1_700_000_000.0
    (s,) = d["services"]
    assert {"name", "model", "version", "runtime", "replicas", "qps", "latency_ms", "cost_per_hour",
            "on_demand_cost_per_hour", "savings"} <= set(s)
    assert s["replicas"] == {"desired": 2, "ready": 2}
    # One on-demand (0.17) and one spot in zone i (0.031): 0.201/h against 0.34/h all on-demand.
    assert s["cost_per_hour"] == pytest.approx(0.201)
    assert s["savings"] == pytest.approx(1 - 0.201 / 0.34, abs=1e-4)
    assert d["totals"] == {"services": 1, "cost_per_hour": 0.201, "on_demand_cost_per_hour": 0.34,
                           "savings": round(1 - 0.201 / 0.34, 4)}


def test_service_detail_contract_and_window(app, clock):
    clock.advance(30)
    d = doc(call(app, "GET", "/console/api/services/sentiment"))
    assert [r["billing"] for r in d["replicas"]] == ["on-demand", "spot"]
    # Started 600 s before the provider was built, 30 s ago.
    assert d["replicas"][0]["age_seconds"] == 630
    series = d["series"]
    assert set(series) == {"t", "qps", "p50_ms", "p99_ms", "replicas_spot", "replicas_on_demand", "cost_per_hour"}
    assert len({len(v) for v in series.values()}) == 1
    short = doc(call(app, "GET", "/console/api/services/sentiment?window=60"))["series"]
    assert min(short["t"]) >= clock.now() - 60 and len(short["t"]) < len(series["t"])
    assert call(app, "GET", "/console/api/services/sentiment?window=-1").status == 400
    assert call(app, "GET", "/console/api/services/sentiment?window=abc").status == 400
    assert call(app, "GET", "/console/api/services/other").status == 404
    assert call(app, "GET", "/console/api/nothing").status == 404


def test_decisions_and_events_newest_first(app, clock):
    provider = app.provider
    clock.advance(10)
    provider.scale_out(3, qps=50)
    clock.advance(10)
    provider.preempt_replica(1)
    d = doc(call(app, "GET", "/console/api/services/sentiment"))
    assert d["decisions"][0]["desired_replicas"] == 5 and d["decisions"][0]["reason"] == "SucceededRescale"
    assert d["events"][0]["kind"] == "PreemptionNotice"
    assert [e["time"] for e in d["events"]] == sorted((e["time"] for e in d["events"]), reverse=True)


def test_nodepools_contract(app):
    app.provider.scale_out(4, qps=60)
    (p,) = doc(call(app, "GET", "/console/api/nodepools"))["pools"]
    assert p["labels"] == {"inference": "tensorflow"} and p["policy"]["on_demand_percentage_above_base"] == 30
    # Replicas 0, 3 are on-demand; 1, 2, 4, 5 spot; even ones in zone h, odd ones in zone i.
    assert p["billing"] == {"spot": 4, "on-demand": 2}
    assert p["by_zone"] == {"cn-hangzhou-h": {"spot": 2, "on-demand": 1}, "cn-hangzhou-i": {"spot": 2, "on-demand": 1}}
    assert p["utilization"] == {"cpu": 0.625, "memory": round(3100 / 8192, 4)}
    assert {"name", "zone", "instance_type", "billing", "state", "price_per_hour"} <= set(p["nodes"][0])


def test_actions_need_the_token(app):
    body = b'{"replicas": 7}'
    assert call(app, "POST", "/console/api/services/sentiment/scale", body).status == 401
    assert call(app, "POST", "/console/api/services/sentiment/scale", body, token="wrong").status == 401
    ok = call(app, "POST", "/console/api/services/sentiment/scale", body, token=TOKEN)
    assert ok.status == 200 and doc(ok)["ok"] and app.provider.desired == 7
    bad = call(app, "POST", "/console/api/services/sentiment/scale", b'{"replicas": -1}', token=TOKEN)
    assert bad.status == 400 and "replicas" in doc(bad)["error"]
    assert call(app, "POST", "/console/api/services/sentiment/scale", b"{nope", token=TOKEN).status == 400
    # The provider's own refusals keep their status.
    assert call(app, "POST", "/console/api/services/sentiment/scale", b'{"replicas": 99}', token=TOKEN).status == 400
    assert call(app, "POST", "/console/api/services/ghost/scale", body, token=TOKEN).status == 404
    pre = call(app, "POST", "/console/api/nodes/inference-h-00/preempt", b"{}", token=TOKEN)
    # Without notice_seconds the pool's own notice applies (as the API's preempt without "notice").
    assert pre.status == 200 and app.provider.actions_seen[-1] == ("preempt", "inference-h-00", None)
    pre = call(app, "POST", "/console/api/nodes/inference-h-00/preempt", b'{"notice_seconds": 30}', token=TOKEN)
    assert pre.status == 200 and app.provider.actions_seen[-1] == ("preempt", "inference-h-00", 30.0)
    for bad in (b'{"notice_seconds": -1}', b"[]", b"null", b'{"replicas": 1}'):
        assert call(app, "POST", "/console/api/nodes/inference-h-00/preempt", bad, token=TOKEN).status == 400, bad
    for bad in (b"[]", b"null", b"3", b'{"replicas": 1001}', b'{"replicas": 2, "other": 1}'):
        assert call(app, "POST", "/console/api/services/sentiment/scale", bad, token=TOKEN).status == 400, bad
    assert call(app, "GET", "/console/api/session").body == b'{"authenticated":false,"actions":["scale","preempt"]}'
    assert doc(call(app, "GET", "/console/api/session", token=TOKEN))["authenticated"] is True


def test_without_a_token_the_console_is_read_only(clock):
    app = ConsoleApp(FakeProvider(clock), token=None, clock=clock)
    assert call(app, "POST", "/console/api/services/sentiment/scale", b'{"replicas": 1}', token="x").status == 403
    assert doc(call(app, "GET", "/console/api/session")) == {"authenticated": False, "actions": []}


def test_series_columns_must_align():
    with pytest.raises(ValueError, match="qps"):
        Series(t=[1.0, 2.0], qps=[1.0], p50_ms=[1, 2], p99_ms=[1, 2], replicas_spot=[1, 1],
               replicas_on_demand=[1, 1], cost_per_hour=[1, 1])


def test_the_console_sends_no_cors_headers(app):
    # The console answers its own page only; a cross-origin caller gets no Access-Control-* grant from it.
    origin = {"origin": "https://elsewhere.example"}
    for method, url, body in [("GET", "/console/", b""), ("GET", "/console/api/overview", b""),
                              ("GET", "/console/api/session", b""), ("OPTIONS", "/console/api/overview", b""),
                              ("POST", "/console/api/services/sentiment/scale", b'{"replicas": 3}')]:
        req_headers = dict(origin, authorization=f"Bearer {TOKEN}")
        resp = app.handle(Request(method, url.encode(), req_headers, body, "test", _Conn()))
        if not isinstance(resp, Response):
            resp = asyncio.run(resp)
        names = [k.lower() if isinstance(k, str) else k.decode().lower() for k, _ in resp.headers or []]
        assert not any(n.startswith("access-control") for n in names), (method, url, names)
