"""The control plane's client to a gateway process: the in-process interface over HTTP, outages, the routes file.

The gateway here is the real one with its real control endpoints, served on 127.0.0.1 from
a thread of its own (its own event loop), as the gateway process serves it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import stat
import threading
from pathlib import Path

import pytest

from tidal.errors import AlreadyExists, NotFound
from tidal.gateway import Gateway, ReplicaEndpoint
from tidal.gateway.client import GatewayClient, GatewayUnreachable
from tidal.gateway.config import ServiceConfig
from tidal.gateway.control import ControlEndpoints, apply_routes, load_routes

TOKEN = "t0k3n-for-tests"


class ServedGateway:
    """A `Gateway` with its control endpoints, on its own loop in a thread; `restart()` starts a new one."""

    def __init__(self, routes_file: Path, port: int = 0) -> None:
        self.routes_file = routes_file
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.gateway: Gateway | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _call(self, fn):
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def start(self) -> "ServedGateway":
        async def go():
            services = load_routes(self.routes_file)
            endpoints = None
            gw = Gateway("127.0.0.1", self.port, admin=lambda req: endpoints.handle(req))
            apply_routes(gw, {}, services)
            endpoints = ControlEndpoints(gw, TOKEN, self.routes_file, services)
            await gw.start()
            return gw
        self.gateway = asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)
        self.port = self.gateway.port
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(10)

    def services(self) -> list[str]:
        return self._call(self.gateway.services)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def served(tmp_path):
    s = ServedGateway(tmp_path / "routes.json").start()
    yield s
    s.stop()
    s.close()


def _client(served: ServedGateway, **kw) -> GatewayClient:
    c = GatewayClient("127.0.0.1", served.port, TOKEN, **kw)
    assert c.attach(served.port)
    return c


def _raw(port: int, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def ep(rid: str, port: int = 9000, state: str = "ready") -> ReplicaEndpoint:
    return ReplicaEndpoint(id=rid, port=port, state=state)


def test_routes_reach_the_gateway_and_its_routes_file(served):
    c = _client(served)
    c.set_service("a", [ep("r0"), ep("r1", 9001)], models=("m",))
    c.set_service("b", [ep("r2", 9002)])
    assert served.services() == c.services() == ["a", "b"]
    # The file the gateway restarts from: the owner's alone, and a valid `tidal gateway --routes` file.
    assert stat.S_IMODE(served.routes_file.stat().st_mode) == 0o600
    assert [(s.name, [r.id for r in s.replicas], s.models) for s in load_routes(served.routes_file)] == [
        ("a", ["r0", "r1"], ("m",)), ("b", ["r2"], ())]
    c.set_replica_state("a", "r1", "draining")
    assert [(r.id, r.state) for r in c.stats("a").replicas] == [("r0", "ready"), ("r1", "draining")]
    c.remove_service("b")
    assert served.services() == c.services() == ["a"]
    with pytest.raises(NotFound):
        c.remove_service("b")


def test_a_model_name_taken_by_another_service_raises_as_in_process(served):
    c = _client(served)
    c.set_service("a", [ep("r0")], models=("m",))
    with pytest.raises(AlreadyExists, match="model 'm' is already served by service 'a'"):
        c.set_service("b", [ep("r1", 9001)], models=("m",))
    assert c.services() == served.services() == ["a"]  # nothing of the refused call is left
    c.set_service("b", [ep("r1", 9001)], models=())  # the reconciler's fallback: by its path prefix only
    assert served.services() == ["a", "b"]
    with pytest.raises(ValueError, match="unique"):
        c.set_service("c", [ep("r", 1), ep("r", 2)])
    with pytest.raises(ValueError):
        c.set_service("bad name", [])


def test_a_model_moves_between_services_in_one_table():
    gw = Gateway()
    a = ServiceConfig(name="a", replicas=(ep("r0"),), models=("m",))
    apply_routes(gw, {}, [a])
    moved = [ServiceConfig(name="a", replicas=(ep("r0"),)), ServiceConfig(name="b", replicas=(ep("r1", 9001),),
                                                                          models=("m",))]
    apply_routes(gw, {"a": a}, moved)
    assert gw.services() == ["a", "b"]
    with pytest.raises(AlreadyExists):  # a table that claims one model twice changes nothing
        apply_routes(gw, {s.name: s for s in moved}, [moved[1], ServiceConfig(name="c", models=("m",))])
    assert gw.services() == ["a", "b"]


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_only_the_token_sets_routes(served, token):
    for method, path, body in [("PUT", "/-/control/routes", b'{"services": []}'), ("GET", "/-/control/hello", None),
                               ("GET", "/-/control/routes", None)]:
        status, doc = _raw(served.port, method, path, body, token=token)
        assert status == 401 and "token" in doc["error"]
    assert _raw(served.port, "GET", "/-/healthz", token=None)[0] == 200  # the public endpoints stay public


@pytest.mark.parametrize("body, status, needle", [
    (b"{", 400, "routes"),
    (b'{"services": [{"name": "bad name"}]}', 400, "services.0.name"),
    (b'{"services": [{"name": "a", "models": ["m"]}, {"name": "b", "models": ["m"]}]}', 409, "model 'm'"),
    (b'{"services": [{"name": "a", "replicas": [{"id": "r", "port": 1}, {"id": "r", "port": 2}]}]}', 400, "unique"),
])
def test_a_bad_table_is_one_clear_line_and_changes_nothing(served, body, status, needle):
    _client(served).set_service("keep", [ep("r0")])
    got, doc = _raw(served.port, "PUT", "/-/control/routes", body)
    assert got == status and needle in doc["error"] and "\n" not in doc["error"]
    assert served.services() == ["keep"]


def test_changes_made_while_detached_are_sent_on_attach_latest_wins(served):
    c = GatewayClient("127.0.0.1", served.port, TOKEN)
    c.set_service("a", [ep("r0")])
    c.set_service("a", [ep("r1", 9001)])
    c.set_service("b", [ep("r2", 9002)])
    c.remove_service("b")
    assert served.services() == [] and c.services() == ["a"]
    assert c.attach(served.port)
    assert served.services() == ["a"]
    assert [r.id for r in c.stats("a").replicas] == ["r1"]


def test_reads_during_an_outage_hold_the_last_rate(served):
    c = _client(served)
    c.set_service("a", [])
    for _ in range(3):  # no replica: answered 503, still counted
        assert _raw(served.port, "GET", "/services/a/v1/models/m", token=None)[0] == 503
    rate = c.qps("a", 6.0)
    assert rate > 0
    stats = c.stats("a")
    assert stats.requests == 3 and set(stats.qps) == {6.0, 15.0, 60.0}
    with pytest.raises(NotFound) as err:
        c.qps("nope", 6.0)
    assert not isinstance(err.value, GatewayUnreachable)

    served.stop()
    # The autoscaler sees the rate it saw (no scale-in on an outage); a window never read has none to give.
    assert c.qps("a", 6.0) == rate
    with pytest.raises(GatewayUnreachable):
        c.qps("a", 15.0)
    with pytest.raises(GatewayUnreachable):
        c.stats("a")
    c.set_service("b", [ep("r9", 9009)])  # no error: remembered, sent when the gateway is back
    assert not c.reachable and c.services() == ["a", "b"]


def test_a_restarted_gateway_serves_its_routes_file_and_takes_the_latest(served, tmp_path):
    c = _client(served, retry_seconds=0.0)
    c.set_service("a", [ep("r0")], models=("m",))
    served.stop()
    c.set_service("a", [ep("r1", 9001)], models=("m",))  # while it is down
    restarted = ServedGateway(served.routes_file, served.port).start()
    try:
        assert restarted.services() == ["a"]  # at once, from the file: the routes it was last given
        assert [r.id for r in c.stats("a").replicas] == ["r1"]  # the client sent the latest on its next call
        assert [s.replicas[0].id for s in load_routes(served.routes_file)] == ["r1"]
    finally:
        restarted.stop()
        restarted.close()
        served.gateway = restarted.gateway  # stopped once more by the fixture: harmless


def test_a_pending_table_goes_out_with_the_next_pass_even_when_nothing_changed(served):
    c = _client(served, retry_seconds=0.0)
    c.set_service("a", [ep("r0")])
    served.stop()
    c.set_service("a", [ep("r1", 9001)])  # pending: the gateway is down
    restarted = ServedGateway(served.routes_file, served.port).start()
    try:
        assert [r.id for r in restarted._call(lambda: restarted.gateway.stats("a")).replicas] == ["r0"]
        c.set_service("a", [ep("r1", 9001)])  # the reconcile pass repeats itself: no change, but it goes out
        assert [r.id for r in restarted._call(lambda: restarted.gateway.stats("a")).replicas] == ["r1"]
        assert c.reachable
    finally:
        restarted.stop()
        restarted.close()
        served.gateway = restarted.gateway
