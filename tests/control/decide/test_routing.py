"""Routing decisions: the store's serving replicas in, the gateway's Route / Unroute out (in the order to apply)."""

from tidal.control.commands import Endpoint, Route, Unroute
from tidal.control.decide.routing import route
from tidal.states import ReplicaState as S

from .build import replica, service, snap


def test_serving_replicas_are_endpoints_and_the_model_name_is_asked_for():
    s = snap(services=[service("a", model_name="m")],
             replicas=[replica("r1", S.READY, "n1", service="a"), replica("r2", S.DRAINING, "n1", service="a"),
                       replica("r3", S.STARTING, "n1", service="a"),
                       replica("r4", S.NOTIFIED, "n1", service="a", ready_at=5.0),
                       replica("r5", S.NOTIFIED, "n1", service="a", ready_at=None)])
    assert route(s, frozenset()) == [Route("a", (Endpoint("r1", "127.0.0.1", 9000, "ready"),
                                                 Endpoint("r2", "127.0.0.1", 9000, "draining"),
                                                 Endpoint("r4", "127.0.0.1", 9000, "ready")), ("m",))]


def test_a_deleted_service_gives_its_model_name_up_before_its_successor_asks():
    """The bug: after `serve delete A` and serving B with the same model name, B stayed without it until a
    restart (A kept the name while it drained; B's refusal was cached)."""
    s = snap(services=[service("b", model_name="m")],
             replicas=[replica("a1", S.DRAINING, "n1", service="a", release="x"),
                       replica("b1", S.STARTING, "n2", service="b")])
    assert route(s, frozenset({"a"})) == [Route("a", (Endpoint("a1", "127.0.0.1", 9000, "draining"),), ()),
                                          Route("b", (), ("m",))]


def test_a_service_gone_from_the_store_and_its_replicas_is_unrouted():
    assert route(snap(), frozenset({"old"})) == [Unroute("old")]
    assert route(snap(services=[service("a", model_name="m")]), frozenset({"a"})) == [Route("a", (), ("m",))]
