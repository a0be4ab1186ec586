"""The control plane's interface to the gateway: services, replica states, QPS on an injected clock."""

import asyncio

import pytest

from tidal.clock import FakeClock
from tidal.errors import AlreadyExists, NotFound
from tidal.gateway import Gateway, ReplicaEndpoint
from tidal.http.client import HttpClient
from tidal.http.server import HttpServer, Response

REQ = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


def test_service_lifecycle_and_errors():
    gw = Gateway()
    gw.set_service("a", [ReplicaEndpoint(id="r0", port=9000), ReplicaEndpoint(id="r1", port=9001)], models=["m"])
    assert gw.services() == ["a"]
    assert [r.state for r in gw.stats("a").replicas] == ["ready", "ready"]
    gw.set_replica_state("a", "r1", "draining")
    assert [r.state for r in gw.stats("a").replicas] == ["ready", "draining"]
    # set_service is declarative: the states it is given win.
    gw.set_service("a", [ReplicaEndpoint(id="r1", port=9001)], models=["m"])
    assert [(r.id, r.state) for r in gw.stats("a").replicas] == [("r1", "ready")]
    with pytest.raises(AlreadyExists, match="model 'm'"):
        gw.set_service("b", [], models=["m"])
    assert gw.services() == ["a"]  # the refused service left nothing behind
    with pytest.raises(NotFound, match="no replica 'r9'"):
        gw.set_replica_state("a", "r9", "ready")
    with pytest.raises(ValueError, match="'ready' or 'draining'"):
        gw.set_replica_state("a", "r1", "gone")
    with pytest.raises(ValueError, match="unique"):
        gw.set_service("a", [ReplicaEndpoint(id="r1", port=1), ReplicaEndpoint(id="r1", port=2)])
    with pytest.raises(ValueError):
        gw.set_service("bad name", [])
    gw.remove_service("a")
    with pytest.raises(NotFound):
        gw.qps("a", 6)
    with pytest.raises(NotFound):
        gw.remove_service("a")


def test_qps_follows_the_injected_clock():
    clock = FakeClock(1000.0)

    async def main():
        replica = HttpServer(lambda req: Response(200, b'{"predictions": []}'))
        await replica.start()
        gw = Gateway(clock=clock)
        gw.set_service("s", [ReplicaEndpoint(id="r0", port=replica.port)], models=["m"])
        await gw.start()
        c = HttpClient()
        try:
            assert gw.endpoint("s") == f"http://127.0.0.1:{gw.port}/services/s"
            r = await c.request_raw("127.0.0.1", gw.port, REQ.replace(b"POST /", b"POST /services/s/"), 5)
            assert r.status == 200
            clock.advance(30.0)  # the service has existed for 30 s
            for _ in range(30):
                assert (await c.request_raw("127.0.0.1", gw.port, REQ, 5)).status == 200
            # These 30 requests fell at t = 1030 (the fake clock did not move while they ran);
            # the one above, at t = 1000, is out of every window below but the 60 s one.
            assert gw.qps("s", 6) == pytest.approx(30 / 6)
            assert gw.qps("s", 60) == pytest.approx(31 / 30)  # only 30 s of history so far
            clock.advance(10.0)
            assert gw.qps("s", 6) == 0.0
            assert gw.qps("s", 15) == pytest.approx(30 / 15)
            st = gw.stats("s")
            assert st.qps[15.0] == pytest.approx(2.0) and st.qps[6.0] == 0.0
            assert st.requests == 31 and st.p50[15.0] is not None and st.p50[6.0] is None
        finally:
            c.close()
            await gw.stop()
            await replica.stop()
    asyncio.run(main())


@pytest.mark.parametrize("method, path, allow", [
    ("TRACE", "/services/s/v1/models/m", "DELETE, GET, OPTIONS, PATCH, POST, PUT"),
    ("HEAD", "/v2/health/ready", "DELETE, GET, OPTIONS, PATCH, POST, PUT"),
    ("POST", "/-/healthz", "GET"), ("DELETE", "/-/metrics", "GET"), ("PUT", "/-/stats", "GET"),
    ("POST", "/-/control/routes", "GET, PUT"), ("DELETE", "/-/control/hello", "GET"),
])
def test_a_method_a_known_path_does_not_take_is_405_with_allow(method, path, allow):
    from tidal.gateway.control import ControlEndpoints

    async def main():
        control = []
        gw = Gateway(admin=lambda req: control[0].handle(req))
        control.append(ControlEndpoints(gw, "t0ken", None, []))
        await gw.start()
        c = HttpClient()
        try:
            head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\nContent-Length: 0\r\n\r\n"
            r = await c.request_raw("127.0.0.1", gw.port, head.encode(), 5)
            return r.status, r.header("Allow")
        finally:
            c.close()
            await gw.stop()

    assert asyncio.run(main()) == (405, allow)
