"""Scale to zero: idle services go to zero after their idle period, a queued request brings one replica back."""

import pytest

from tidal.autoscaling.hpafile import parse_hpa
from tidal.control.commands import Route, SaveAutoscaler, SetDesired
from tidal.control.decide import autoscaling, routing, zero
from tidal.control.decide.zero import Activity, ZeroMemory
from tidal.gateway.config import QueueSettings
from tidal.states import ReplicaState as S

from .build import NOW, replica, service, snap

NAME = "s"


def hpa(min_replicas=0, idle="60", **annotations):
    notes = {"autoscaling.tidal.dev/idle-seconds": idle, **annotations}
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "annotations": notes},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": NAME}, "minReplicas": min_replicas,
                     "maxReplicas": 5, "metrics": [{"type": "External", "external": {
                         "metric": {"name": "tidal_service_qps"},
                         "target": {"type": "AverageValue", "averageValue": "10"}}}]}}


SPEC = parse_hpa(hpa())


def step(now, desired, act, memory):
    s = snap(now=now, services=[service(NAME, desired=desired)])
    return zero.decide(s, {NAME: SPEC}, {NAME: act}, memory)


def desired_of(cmds):
    return [c.desired for c in cmds if isinstance(c, SetDesired)]


# (id, [(seconds after NOW, desired, requests answered so far, in flight, queued) per pass], SetDesired per pass)
CASES = [
    ("idle for the idle period: zero, once",
     [(0, 1, 5, 0, 0), (30, 1, 5, 0, 0), (60, 1, 5, 0, 0), (61, 0, 5, 0, 0)], [[], [], [0], []]),
    ("a request answered between passes restarts the idle period",
     [(0, 1, 5, 0, 0), (50, 1, 6, 0, 0), (100, 1, 6, 0, 0), (110, 1, 6, 0, 0)], [[], [], [], [0]]),
    ("a long request in flight keeps the replica",
     [(0, 1, 5, 0, 0), (100, 1, 5, 1, 0), (159, 1, 5, 0, 0), (160, 1, 5, 0, 0)], [[], [], [], [0]]),
    ("at zero, a queued request asks for one replica at once",
     [(0, 0, 5, 0, 0), (1, 0, 5, 3, 3)], [[], [1]]),
    ("at zero with nothing queued: stays at zero",
     [(0, 0, 5, 0, 0), (1000, 0, 5, 0, 0)], [[], []]),
    ("woken: the queue itself is activity, so it does not go back to zero",
     [(0, 0, 5, 1, 1), (1, 1, 5, 1, 1), (61, 1, 6, 0, 0), (100, 1, 6, 0, 0), (121, 1, 6, 0, 0)],
     [[1], [], [], [], [0]]),
]


@pytest.mark.parametrize("passes, want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_zero_table(passes, want):
    memory = ZeroMemory()
    got = []
    for dt, desired, requests, in_flight, queued in passes:
        cmds, memory = step(NOW + dt, desired, Activity(requests, in_flight, queued), memory)
        got.append(desired_of(cmds))
    assert got == want


def test_events_and_status_say_why():
    cmds, memory = step(NOW, 2, Activity(0), ZeroMemory())
    cmds, _ = step(NOW + 60, 2, Activity(0), memory)
    (sd,) = [c for c in cmds if isinstance(c, SetDesired)]
    assert sd.event.kind == "ScaledToZero"
    assert sd.event.message == "New size: 0; reason: no request for 60s (idle period 60s)"
    (save,) = [c for c in cmds if isinstance(c, SaveAutoscaler)]
    assert (save.service, save.status.current, save.status.desired, save.status.reason) == (NAME, 2, 0, "ScaledToZero")
    cmds, _ = step(NOW + 61, 0, Activity(0, 4, 4), memory)
    (sd,) = [c for c in cmds if isinstance(c, SetDesired)]
    assert (sd.desired, sd.event.kind) == (1, "ScaleFromZero")
    assert sd.event.message == "New size: 1; reason: 4 request(s) waiting at the gateway"


def test_gateway_unreachable_decides_nothing():
    memory = ZeroMemory()
    for dt in (0, 100, 1000):
        s = snap(now=NOW + dt, services=[service(NAME, desired=1)])
        cmds, memory = zero.decide(s, {NAME: SPEC}, {NAME: None}, memory)
        assert cmds == []
    # When it answers again, the idle period starts then.
    cmds, memory = step(NOW + 1001, 1, Activity(9), memory)
    assert cmds == []
    cmds, memory = step(NOW + 1061, 1, Activity(9), memory)
    assert desired_of(cmds) == [0]


def test_a_service_that_stops_scaling_to_zero_is_forgotten():
    _, memory = step(NOW, 1, Activity(0), ZeroMemory())
    _, memory = zero.decide(snap(now=NOW + 1, services=[service(NAME)]), {}, {}, memory)
    assert memory == ZeroMemory()


def test_the_hpa_keeps_a_floor_of_one_and_leaves_a_zeroed_service_alone():
    def hpa_pass(desired, qps):
        s = snap(services=[service(NAME, desired=desired)],
                 replicas=[replica(f"r{i}", S.READY, f"n{i}", service=NAME) for i in range(desired)],
                 autoscalers={NAME: _with_fast_scale_down()})
        return autoscaling.decide(s, {(NAME, 30.0): qps}, autoscaling.AutoscalingMemory(), 30.0, lambda x: x)

    # No load: the HPA goes down to one, never to zero (zero is the idle rule's).
    assert [c.desired for c in hpa_pass(3, 0.0).commands if isinstance(c, SetDesired)] == [1]
    # At zero the HPA decides nothing and writes nothing (the status says ScaledToZero).
    assert hpa_pass(0, 0.0).commands == []
    # Under load it scales up as usual.
    assert [c.desired for c in hpa_pass(1, 40.0).commands if isinstance(c, SetDesired)] == [4]


def _with_fast_scale_down():
    doc = hpa()
    doc["spec"]["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": 0}}
    return doc


def test_routing_gives_a_zero_service_its_queue_and_the_last_failure():
    doc = hpa(**{"autoscaling.tidal.dev/queue-size": "7", "autoscaling.tidal.dev/queue-wait-seconds": "12"})
    s = snap(services=[service(NAME, desired=1), service("plain")],
             failed=[replica("s-1", S.FAILED, service=NAME, stopped_at=NOW - 5, reason="model load failed")],
             autoscalers={NAME: doc})
    routes = {c.service: c for c in routing.route(s, frozenset()) if isinstance(c, Route)}
    assert routes[NAME].queue == QueueSettings(size=7, wait_seconds=12)
    assert routes[NAME].unready_reason == "the last replica to start (s-1) failed: model load failed"
    assert routes["plain"].queue is None and routes["plain"].unready_reason is None
    # With a ready replica no reason is sent.
    s = snap(services=[service(NAME, desired=1)], replicas=[replica("s-2", S.READY, "n1", service=NAME)],
             failed=[replica("s-1", S.FAILED, service=NAME, stopped_at=NOW - 5, reason="x")],
             autoscalers={NAME: doc})
    (r,) = [c for c in routing.route(s, frozenset()) if isinstance(c, Route)]
    assert r.unready_reason is None and len(r.endpoints) == 1


def test_bad_zero_annotations_are_one_line():
    from tidal.errors import InvalidArgument
    with pytest.raises(InvalidArgument, match=r"idle-seconds: Input should be greater than 0 \(got '-1'\)"):
        parse_hpa(hpa(idle="-1"))
