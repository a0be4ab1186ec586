"""The gateway in front of real replica processes: routing, pass-through, failover, drain, 503, 504, metrics.

Each test runs against both engines: the Python gateway in this process, and the compiled edge in front of
the supervised gateway process (skipped when its binary is not built)."""

import asyncio

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tidal.gateway import Gateway, GatewaySettings, ReplicaEndpoint
from tidal.http.client import HttpClient

from .engines import ENGINES, EdgeGateway

pytestmark = pytest.mark.e2e
PREDICT = b'{"instances": [1.0, 2.0, 5.0]}'


def _eps(procs, state="ready"):
    return [ReplicaEndpoint(id=p.id, port=p.port, state=state) for p in procs]


@pytest.fixture(params=ENGINES)
def make_gateway(request, tmp_path):
    def make(**kw):
        return EdgeGateway(tmp_path) if request.param == "edge" else Gateway("127.0.0.1", 0, **kw)
    return make


async def _gateway(make, procs) -> Gateway:
    gw = make(settings=GatewaySettings())
    gw.set_service("hpt", _eps(procs), models=["half_plus_two"])
    await gw.start()
    return gw


async def _get(client, gw, path, body=b"", method="POST", headers=None, host=None):
    h = [("Host", host)] if host else []
    return await client.request_raw(
        "127.0.0.1", gw.port,
        f"{method} {path} HTTP/1.1\r\n{''.join(f'{k}: {v}' + chr(13) + chr(10) for k, v in h + (headers or []))}"
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body, 10.0)


def test_routing_and_pass_through(replicas, make_gateway):
    procs = replicas("r0", "r1")

    async def main():
        gw = await _gateway(make_gateway, procs)
        c = HttpClient()
        try:
            r = await _get(c, gw, "/v1/models/half_plus_two:predict", PREDICT)
            assert r.status == 200 and r.json()["predictions"] == [2.5, 3.0, 4.5]
            r = await _get(c, gw, "/echo?x=1", b"hello", host="hpt.localhost:8501",
                           headers=[("Connection", "keep-alive, X-Secret"), ("X-Secret", "s"),
                                    ("X-Forwarded-For", "10.0.0.1"), ("Keep-Alive", "timeout=5"),
                                    ("Accept", "application/json")])
            echo = r.json()
            assert echo["path"] == "/echo" and echo["query"] == "x=1" and echo["body"] == "hello"
            hdrs = echo["headers"]
            assert hdrs["host"] == "hpt.localhost:8501"
            assert hdrs["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
            assert hdrs["accept"] == "application/json" and hdrs["x-request-id"]
            assert "x-secret" not in hdrs and "keep-alive" not in hdrs
            assert "connection" not in hdrs  # HTTP/1.1 keep-alive to the replica needs no header
            assert r.header("X-Replica") == echo["replica"]
            assert r.header("Connection") is None  # the replica's hop-by-hop header stays behind
            r = await _get(c, gw, "/services/hpt/text", method="GET")
            assert (r.status, r.body, r.header("content-type")) == (201, b"plain", "text/plain; charset=utf-8")
            r = await _get(c, gw, "/services/hpt/missing", method="GET")
            assert r.status == 404 and r.json() == {"error": "no route /missing"}  # the replica's own answer
            r = await _get(c, gw, "/v1/models/other:predict", PREDICT)
            assert r.status == 404 and "no service is routed" in r.json()["error"]
            r = await _get(c, gw, "/echo", headers=[("X-Request-Id", "abc")], host="hpt.localhost")
            assert r.json()["headers"]["x-request-id"] == "abc"
            r = await _get(c, gw, "/v1/models/half_plus_two", method="TRACE")
            assert r.status == 405 and r.json() == {"error": "the gateway does not proxy TRACE requests"}
        finally:
            c.close()
            await gw.stop()
    asyncio.run(main())


async def _load(gw, stop: asyncio.Event, results: list, workers: int, sleep: str = "0.002"):
    async def worker():
        c = HttpClient()
        try:
            while not stop.is_set():
                r = await _get(c, gw, "/v1/models/half_plus_two:predict", PREDICT, headers=[("x-sleep", sleep)])
                results.append((r.status, r.json().get("replica") if r.status == 200 else r.body))
        finally:
            c.close()
    await asyncio.gather(*(worker() for _ in range(workers)))


def test_killing_a_replica_mid_load_loses_no_request(replicas, make_gateway):
    procs = replicas("r0", "r1")

    async def main():
        gw = await _gateway(make_gateway, procs)
        stop, results = asyncio.Event(), []
        load = asyncio.create_task(_load(gw, stop, results, workers=16))
        await asyncio.sleep(0.7)
        before = len(results)
        procs[0].kill()  # SIGKILL with requests in flight on it
        await asyncio.sleep(1.0)
        stop.set()
        await load
        st = gw.stats("hpt")
        await gw.stop()
        return before, results, st

    before, results, st = asyncio.run(main())
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    assert before > 50 and len(results) > before + 50
    served = {rep for _, rep in results}
    assert served == {"r0", "r1"}
    assert {rep for _, rep in results[before + 32:]} == {"r1"}  # after the kill only r1 answers
    assert st.retries >= 1  # in-flight requests on r0 were sent again to r1
    assert st.errors == 0 and st.requests == len(results)


def test_drain_finishes_in_flight_and_takes_no_new_requests(replicas, make_gateway):
    procs = replicas("r0", "r1")

    async def main():
        gw = await _gateway(make_gateway, procs)
        c1, c2 = HttpClient(), HttpClient()
        try:
            # Hold one slow request on each replica (the second goes to the idle one).
            slow = [asyncio.create_task(_get(c, gw, "/echo", headers=[("x-sleep", "0.5")], host="hpt.localhost"))
                    for c in (c1, c2)]
            await asyncio.sleep(0.2)
            assert sorted(r.outstanding for r in gw.stats("hpt").replicas) == [1, 1]
            gw.set_replica_state("hpt", "r0", "draining")
            c3 = HttpClient()
            fast = [await _get(c3, gw, "/echo", host="hpt.localhost") for _ in range(10)]
            c3.close()
            done = await asyncio.gather(*slow)
            assert all(r.status == 200 for r in done + fast)
            assert {r.json()["replica"] for r in done} == {"r0", "r1"}  # r0 finished its in-flight one
            assert {r.json()["replica"] for r in fast} == {"r1"}  # and got nothing new
            st = {r.id: r for r in gw.stats("hpt").replicas}
            assert st["r0"].state == "draining" and st["r0"].outstanding == 0
            # Removing the replica from the service is the end of its drain.
            gw.set_service("hpt", _eps(procs[1:]), models=["half_plus_two"])
            assert [r.id for r in gw.stats("hpt").replicas] == ["r1"]
        finally:
            c1.close()
            c2.close()
            await gw.stop()
    asyncio.run(main())


def test_no_ready_replica_is_503_and_deadline_is_504(replicas, make_gateway):
    procs = replicas("r0", "r1")

    async def main():
        gw = await _gateway(make_gateway, procs)
        c = HttpClient()
        try:
            for p in procs:
                gw.set_replica_state("hpt", p.id, "draining")
            r = await _get(c, gw, "/v1/models/half_plus_two:predict", PREDICT)
            assert r.status == 503 and r.json() == {"error": "service 'hpt' has no ready replica"}
            gw.set_service("empty", [])
            r = await _get(c, gw, "/services/empty/v1/models/x", method="GET")
            assert r.status == 503 and "no ready replica" in r.json()["error"]

            gw.set_service("hpt", _eps(procs), models=["half_plus_two"], deadline_seconds=0.3)
            t0 = asyncio.get_running_loop().time()
            r = await _get(c, gw, "/v1/models/half_plus_two:predict", PREDICT, headers=[("x-sleep", "2")])
            took = asyncio.get_running_loop().time() - t0
            assert r.status == 504 and "deadline of 0.3s" in r.json()["error"]
            assert took < 1.5
            r = await _get(c, gw, "/v1/models/half_plus_two:predict", PREDICT)
            assert r.status == 200  # the replica that timed out is still in service

            # Every replica down: the connection failures end in a 503 naming them, not a hang.
            for p in procs:
                p.kill()
            r = await _get(c, gw, "/v1/models/half_plus_two:predict", PREDICT)
            assert r.status == 503 and "could be reached (2 tried)" in r.json()["error"]
        finally:
            c.close()
            await gw.stop()
    asyncio.run(main())


def test_metrics_stats_and_qps(replicas, make_gateway):
    procs = replicas("r0", "r1")

    async def main():
        gw = await _gateway(make_gateway, procs)
        c = HttpClient()
        try:
            for _ in range(40):
                assert (await _get(c, gw, "/v1/models/half_plus_two:predict", PREDICT)).status == 200
            await _get(c, gw, "/v1/models/half_plus_two:predict", b"{")
            assert gw.qps("hpt", 6) > 0
            st = gw.stats("hpt")
            assert st.requests == 41 and st.errors == 0 and st.in_flight == 0
            assert st.p50[6.0] is not None and st.p99[60.0] >= st.p50[60.0]
            assert sum(r.requests for r in st.replicas) == 41
            r = await _get(c, gw, "/-/metrics", method="GET")
            text = r.body.decode()
            assert r.header("content-type").startswith("text/plain")
            assert 'tidal_gateway_requests_total{code="2xx",service="hpt"} 40.0' in text
            assert 'tidal_gateway_requests_total{code="4xx",service="hpt"} 1.0' in text
            assert 'tidal_gateway_request_duration_seconds_count{service="hpt"} 41.0' in text
            assert 'tidal_gateway_replica_outstanding_requests{replica="r0",service="hpt"} 0.0' in text
            assert 'tidal_gateway_qps{service="hpt",window="6s"}' in text
            families = {f.name: f for f in text_string_to_metric_families(text)}  # valid exposition format
            buckets = [s for s in families["tidal_gateway_request_duration_seconds"].samples
                       if s.name.endswith("_bucket")]
            assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 41
            stats = orjson.loads((await _get(c, gw, "/-/stats", method="GET")).body)
            assert stats[0]["name"] == "hpt" and stats[0]["requests"] == 42 - 1
            assert (await _get(c, gw, "/-/healthz", method="GET")).status == 200
            assert (await _get(c, gw, "/-/nope", method="GET")).status == 404
        finally:
            c.close()
            await gw.stop()
    asyncio.run(main())


def test_replica_dying_mid_answer(replicas, make_gateway):
    procs = replicas("r0", "r1", "r2")

    async def main():
        # rand() = 0: between idle replicas the first listed (r0) is chosen (the edge chooses at random).
        gw = make_gateway(rand=lambda: 0.0)
        gw.set_service("hpt", _eps(procs[:2]), models=["half_plus_two"])
        gw.set_service("solo", _eps(procs[2:]))
        await gw.start()
        c = HttpClient()
        try:
            # Inference: the half answer from r0 never reaches the client; r1 answers instead.
            for _ in range(30):  # until r0 is chosen (and dies)
                r = await _get(c, gw, "/v1/models/half_plus_two:predict", PREDICT, headers=[("x-die-on", "r0")])
                assert r.status == 200 and r.json()["replica"] == "r1"
                if procs[0].proc.poll() is not None:
                    break
            assert procs[0].proc.poll() is not None
            assert gw.stats("hpt").retries == 1
            # Not inference and not idempotent: it may have run, so it is not repeated.
            r = await _get(c, gw, "/services/solo/v2/repository/models/m/load", b"{}", headers=[("x-die-on", "r2")])
            assert r.status == 502 and "failed while answering" in r.json()["error"]
        finally:
            c.close()
            await gw.stop()
    asyncio.run(main())


def test_client_leaving_cancels_the_upstream_request(replicas, make_gateway):
    procs = replicas("r0")

    async def main():
        gw = await _gateway(make_gateway, procs)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nx-sleep: 5\r\n"
                         b"Content-Length: 30\r\n\r\n" + PREDICT)
            await writer.drain()
            await asyncio.sleep(0.3)
            assert gw.stats("hpt").replicas[0].outstanding == 1
            writer.close()  # the client gives up
            for _ in range(50):
                await asyncio.sleep(0.02)
                if gw.stats("hpt").in_flight == 0:
                    break
            st = gw.stats("hpt")
            assert st.in_flight == 0 and st.replicas[0].outstanding == 0  # not waiting 5 s for the replica
            c = HttpClient()
            text = (await _get(c, gw, "/-/metrics", method="GET")).body.decode()
            c.close()
            assert 'tidal_gateway_requests_total{code="4xx",service="hpt"} 1.0' in text  # counted as 499
        finally:
            await gw.stop()
    asyncio.run(main())
