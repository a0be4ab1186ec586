"""The gateway's queue for a service with no ready replica (scaled to zero): held, woken, released, bounded."""

import asyncio

import orjson

from tidal.clock import FakeClock
from tidal.gateway import Gateway, ReplicaEndpoint
from tidal.gateway.config import QueueSettings
from tidal.http.client import HttpClient
from tidal.http.server import HttpServer, Response

REQ = b"POST /services/s/v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


async def _until(cond, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def _run(main):
    asyncio.run(asyncio.wait_for(main(), 20))


async def _setup(queue, clock=None, wakes=None, reason=None):
    replica = HttpServer(lambda req: Response(200, b'{"predictions": [2.5]}'))
    await replica.start()
    gw = Gateway(clock=clock or FakeClock(100.0), on_queue=(wakes.append if wakes is not None else None))
    gw.set_service("s", [], queue=queue, unready_reason=reason)
    await gw.start()
    return replica, gw


def test_requests_wait_for_the_first_replica_and_none_is_lost():
    clock = FakeClock(100.0)
    wakes: list[str] = []

    async def main():
        replica, gw = await _setup(QueueSettings(size=50, wait_seconds=10), clock, wakes)
        c = HttpClient()
        try:
            tasks = [asyncio.ensure_future(c.request_raw("127.0.0.1", gw.port, REQ, 10)) for _ in range(20)]
            await _until(lambda: gw.stats("s").queued == 20)
            assert not any(t.done() for t in tasks)
            assert wakes == ["s"]  # one wake a second per service, however many wait
            clock.advance(1.0)
            late = asyncio.ensure_future(c.request_raw("127.0.0.1", gw.port, REQ, 10))
            await _until(lambda: gw.stats("s").queued == 21)
            assert wakes == ["s", "s"]
            # A draining replica is not ready: they keep waiting.
            gw.set_service("s", [ReplicaEndpoint(id="r0", port=replica.port, state="draining")],
                           queue=QueueSettings(size=50, wait_seconds=10))
            await asyncio.sleep(0.05)
            assert gw.stats("s").queued == 21
            gw.set_service("s", [ReplicaEndpoint(id="r0", port=replica.port)],
                           queue=QueueSettings(size=50, wait_seconds=10))
            answers = await asyncio.gather(*tasks, late)
            assert [a.status for a in answers] == [200] * 21
            assert gw.stats("s").queued == 0
            # With a ready replica nothing waits and nothing wakes.
            assert (await c.request_raw("127.0.0.1", gw.port, REQ, 5)).status == 200
            assert len(wakes) == 2
        finally:
            c.close()
            await gw.stop()
            await replica.stop(0)

    _run(main)


def test_a_full_queue_answers_503_with_retry_after_and_keeps_the_waiting():
    async def main():
        replica, gw = await _setup(QueueSettings(size=2, wait_seconds=10))
        c = HttpClient()
        try:
            held = [asyncio.ensure_future(c.request_raw("127.0.0.1", gw.port, REQ, 10)) for _ in range(2)]
            await _until(lambda: gw.stats("s").queued == 2)
            over = await c.request_raw("127.0.0.1", gw.port, REQ, 5)
            assert over.status == 503
            headers = {k.lower(): v for k, v in over.headers}
            assert headers[b"retry-after"] == b"1"
            assert "queue is full (2 requests waiting)" in orjson.loads(over.body)["error"]
            gw.set_service("s", [ReplicaEndpoint(id="r0", port=replica.port)], queue=QueueSettings(size=2))
            assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
        finally:
            c.close()
            await gw.stop()
            await replica.stop(0)

    _run(main)


def test_a_replica_that_never_becomes_ready_gets_the_waiters_a_503_with_the_reason():
    async def main():
        replica, gw = await _setup(QueueSettings(size=5, wait_seconds=0.2),
                                   reason="replica s-1 failed: the model did not load")
        c = HttpClient()
        try:
            answers = await asyncio.gather(*[c.request_raw("127.0.0.1", gw.port, REQ, 5) for _ in range(3)])
            for a in answers:
                assert a.status == 503
                assert {k.lower(): v for k, v in a.headers}[b"retry-after"] == b"5"
                assert orjson.loads(a.body)["error"] == ("no replica of service 's' became ready within 0.2s: "
                                                         "replica s-1 failed: the model did not load")
            assert gw.stats("s").queued == 0
        finally:
            c.close()
            await gw.stop()
            await replica.stop(0)

    _run(main)


def test_a_client_that_leaves_leaves_the_queue():
    async def main():
        replica, gw = await _setup(QueueSettings(size=5, wait_seconds=10))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(REQ)
            await writer.drain()
            await _until(lambda: gw.stats("s").queued == 1)
            writer.close()
            await _until(lambda: gw.stats("s").queued == 0)
            # The seat is free again; the gateway still serves.
            gw.set_service("s", [ReplicaEndpoint(id="r0", port=replica.port)], queue=QueueSettings())
            c = HttpClient()
            assert (await c.request_raw("127.0.0.1", gw.port, REQ, 5)).status == 200
            c.close()
        finally:
            await gw.stop()
            await replica.stop(0)

    _run(main)


def test_without_a_queue_or_when_the_service_goes_the_answer_is_503_at_once():
    async def main():
        replica, gw = await _setup(None)
        c = HttpClient()
        try:
            r = await c.request_raw("127.0.0.1", gw.port, REQ, 5)
            assert r.status == 503 and b"has no ready replica" in r.body
            gw.set_service("s", [], queue=QueueSettings(size=5, wait_seconds=10))
            waiting = asyncio.ensure_future(c.request_raw("127.0.0.1", gw.port, REQ, 5))
            await _until(lambda: gw.stats("s").queued == 1)
            gw.remove_service("s")
            r = await waiting
            assert r.status == 503
        finally:
            c.close()
            await gw.stop()
            await replica.stop(0)

    _run(main)


def test_the_queue_travels_in_the_routes_and_the_routes_file(tmp_path):
    from tidal.gateway.config import ServiceConfig
    from tidal.gateway.control import apply_routes, load_routes, save_routes

    wanted = [ServiceConfig(name="s", queue=QueueSettings(size=3, wait_seconds=2.5), unready_reason="it failed"),
              ServiceConfig(name="t")]
    gw = Gateway()
    apply_routes(gw, {}, wanted)
    assert gw._services["s"].config.queue == QueueSettings(size=3, wait_seconds=2.5)
    assert gw._services["t"].config.queue is None
    path = tmp_path / "routes.json"
    save_routes(path, wanted, "127.0.0.1", 8501)
    assert load_routes(path) == wanted
