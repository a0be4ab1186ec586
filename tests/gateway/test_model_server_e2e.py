"""The gateway in front of two real `tidal model-server` replicas: one dies or leaves mid-load, nothing fails."""

import asyncio
import signal

import pytest

from tidal.gateway import Gateway, ReplicaEndpoint
from tidal.http.client import HttpClient

pytestmark = pytest.mark.e2e
REQUEST = (b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: 30\r\n\r\n" b'{"instances": [1.0, 2.0, 5.0]}')


async def _load(port: int, stop: asyncio.Event, results: list, workers: int) -> None:
    async def worker():
        c = HttpClient()
        try:
            while not stop.is_set():
                r = await c.request_raw("127.0.0.1", port, REQUEST, 10.0)
                results.append((r.status, r.body))
        finally:
            c.close()
    await asyncio.gather(*(worker() for _ in range(workers)))


async def _until(done, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not done() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


async def _run(servers, go_away):
    gw = Gateway("127.0.0.1", 0)
    gw.set_service("hpt", [ReplicaEndpoint(id=s.id, port=s.port) for s in servers], models=["half_plus_two"])
    await gw.start()
    stop, results = asyncio.Event(), []
    load = asyncio.create_task(_load(gw.port, stop, results, workers=16))
    # Counted in answers, not seconds: a busy machine may take longer to warm the replicas up.
    await _until(lambda: len(results) >= 200, 30.0)
    before = len(results)
    per_replica_before = {r.id: r.requests for r in gw.stats("hpt").replicas}
    go_away(servers[0])
    await _until(lambda: len(results) >= before + 300, 30.0)
    stop.set()
    await load
    st = gw.stats("hpt")
    await gw.stop()
    return before, per_replica_before, results, st


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_replica_going_away_mid_load_loses_no_request(model_servers, how):
    servers = model_servers("r0", "r1")
    sig = signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM
    before, per_before, results, st = asyncio.run(_run(servers, lambda s: s.proc.send_signal(sig)))
    bad = [r for r in results if r != (200, b'{"predictions":[2.5,3.0,4.5]}')]
    assert not bad, bad[:5]
    assert before > 100 and len(results) > before + 100
    assert min(per_before.values()) > 20  # both replicas were serving before one left
    assert st.errors == 0 and st.requests == len(results)
    replicas = {r.id: r for r in st.replicas}
    # After r0 went away, r1 answered the rest: r0's count barely moved (at most the
    # requests it had already accepted before it stopped).
    assert replicas["r0"].requests - per_before["r0"] < 64
    assert replicas["r1"].requests - per_before["r1"] > 100
    servers[0].proc.wait(10)
