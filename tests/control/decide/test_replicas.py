"""Replica lifecycle decisions: a snapshot (and what the probes saw) in, commands and their events out."""

from dataclasses import replace

import pytest

from tidal.backends.base import ReplicaPhase, ReplicaStatus
from tidal.control.commands import (CreateReplica, DiscardReplica, DrainReplica, Event, FailReplica, MarkReady,
                                    Note, ReplicaExited, SetEndpoint, StopReplica)
from tidal.control.decide import replicas as decide
from tidal.control.settings import ControlSettings
from tidal.states import ReplicaState as S

from .build import NOW, node, replica, service, snap

T = ControlSettings(drain_seconds=10.0, start_timeout_seconds=600.0)


def st(phase, reason=""):
    return ReplicaStatus(ReplicaPhase(phase), reason)


OBSERVED = [
    ("a starting replica answers ready",
     [replica("r1", S.STARTING, "n1", created_at=NOW - 12.5)], {"r1": st("ready")},
     [MarkReady("r1", Event("ReplicaReady", "replica/r1", "ready on node n1 (port 9000) after 12.5s"))]),
    ("ready, saying which engine serves its model: recorded and in the event",
     [replica("r1", S.STARTING, "n1", created_at=NOW - 2)],
     {"r1": ReplicaStatus(ReplicaPhase.READY, runtime="onnxruntime")},
     [MarkReady("r1", Event("ReplicaReady", "replica/r1", "ready on node n1 (port 9000) after 2.0s (onnxruntime)"),
                "onnxruntime")]),
    ("a model that cannot load fails the replica with the server's reason, and stops it",
     [replica("r1", S.STARTING, "n1", created_at=NOW - 3)],
     {"r1": st("failed", "model m: model base path /nope does not exist")},
     [FailReplica("r1", "model m: model base path /nope does not exist",
                  Event("ReplicaFailed", "replica/r1",
                        "cannot serve: model m: model base path /nope does not exist; replacing it"), stop=True)]),
    ("a ready replica whose process exits fails",
     [replica("r1", S.READY, "n1")], {"r1": st("exited", "exit status 1")},
     [FailReplica("r1", "process exited",
                  Event("ReplicaFailed", "replica/r1", "its process exited unexpectedly (exit status 1); replacing it"))]),
    ("a draining replica that exits has stopped",
     [replica("r1", S.DRAINING, "n1")], {"r1": st("exited")},
     [ReplicaExited("r1", Event("ReplicaStopped", "replica/r1", "drained and exited"))]),
    ("still loading, in time: nothing",
     [replica("r1", S.STARTING, "n1", created_at=NOW - 599)], {"r1": st("starting")}, []),
    ("still loading past the start timeout: fails and stops",
     [replica("r1", S.STARTING, "n1", created_at=NOW - 601)], {"r1": st("starting")},
     [FailReplica("r1", "not ready in time", Event("ReplicaFailed", "replica/r1",
                                                   "not ready after 600s; replacing it"), stop=True)]),
    ("a ready replica reported failed later is left to its liveness (only starting ones fail to load)",
     [replica("r1", S.READY, "n1")], {"r1": st("failed", "x")}, []),
    ("no status (nothing running yet): nothing", [replica("r1", S.STARTING, "n1")], {}, []),
    ("a backend that moved it reports where it answers now",
     [replica("r1", S.READY, "n1")], {"r1": ReplicaStatus(ReplicaPhase.READY, endpoint="10.0.0.7:8501")},
     [SetEndpoint("r1", "10.0.0.7:8501")]),
]


@pytest.mark.parametrize("reps, statuses, want", [c[1:] for c in OBSERVED], ids=[c[0] for c in OBSERVED])
def test_observed(reps, statuses, want):
    assert decide.observed(snap(services=[service()], replicas=reps), statuses, T) == want


def drains(cmds):
    return [(c.replica, c.event.message) for c in cmds if isinstance(c, DrainReplica)]


LIFECYCLE = [
    # (id, desired, replicas, failed, expected command kinds, checks)
    ("one short: create one", 2, [replica("r1", S.READY, "n1")], [], ["CreateReplica"]),
    ("as many as wanted: nothing", 1, [replica("r1", S.READY, "n1")], [], []),
    ("scale in: the pending one goes first, without an event", 1,
     [replica("r1", S.READY, "n1"), replica("r2", S.PENDING)], [], ["DiscardReplica"]),
    ("scale in: the newest ready drains", 1,
     [replica("r1", S.READY, "n1", created_at=1), replica("r2", S.READY, "n2", created_at=2)], [],
     ["DrainReplica"]),
    ("a noticed replica whose replacement is ready drains", 1,
     [replica("r1", S.NOTIFIED, "n1", drain_at=NOW + 100), replica("r2", S.READY, "n2")], [], ["DrainReplica"]),
    ("a noticed replica keeps serving while its replacement loads", 1,
     [replica("r1", S.NOTIFIED, "n1", drain_at=NOW + 100), replica("r2", S.STARTING, "n2")], [], []),
    ("a noticed replica drains when its notice is nearly over, ready replacement or not", 1,
     [replica("r1", S.NOTIFIED, "n1", drain_at=NOW - 1), replica("r2", S.STARTING, "n2")], [], ["DrainReplica"]),
    ("a noticed replica does not count: its replacement is created", 1,
     [replica("r1", S.NOTIFIED, "n1", drain_at=None)], [], ["CreateReplica"]),
    ("one recent failure: replaced at once", 1, [],
     [replica("f1", S.FAILED, stopped_at=NOW - 1)], ["CreateReplica"]),
    ("two recent failures: back off 10 s with one BackOff event", 1, [],
     [replica("f1", S.FAILED, stopped_at=NOW - 30), replica("f2", S.FAILED, stopped_at=NOW - 5)], ["Note"]),
    ("two failures, the last 10 s ago: replaced", 1, [],
     [replica("f1", S.FAILED, stopped_at=NOW - 30), replica("f2", S.FAILED, stopped_at=NOW - 10)],
     ["CreateReplica"]),
]


@pytest.mark.parametrize("desired, reps, failed, want", [c[1:] for c in LIFECYCLE], ids=[c[0] for c in LIFECYCLE])
def test_lifecycle(desired, reps, failed, want):
    cmds, _ = decide.lifecycle(snap(services=[service(desired=desired)], replicas=reps, failed=failed), T,
                               decide.ReplicaMemory())
    assert [type(c).__name__ for c in cmds] == want


def test_lifecycle_events_say_why():
    s = snap(services=[service(desired=1)], nodes=[node("n1", reclaim_at=NOW + 4)],
             replicas=[replica("r1", S.READY, "n2", created_at=1), replica("r2", S.READY, "n3", created_at=2),
                       replica("r3", S.NOTIFIED, "n1", drain_at=NOW + 50)])
    cmds, _ = decide.lifecycle(s, T, decide.ReplicaMemory())
    assert drains(cmds) == [("r2", "scaled in to 1"),
                            ("r3", "its node n1 is going away and its replacement is ready")]
    # The noticed one stops when its node goes if that is sooner than the drain time.
    assert [c.drain_at for c in cmds] == [NOW + 10, NOW + 4]


def test_back_off_writes_its_event_once_per_spell():
    failed = [replica("f1", S.FAILED, stopped_at=NOW - 30), replica("f2", S.FAILED, stopped_at=NOW - 5)]
    s = snap(services=[service(desired=1)], failed=failed)
    cmds, mem = decide.lifecycle(s, T, decide.ReplicaMemory())
    assert cmds == [Note(Event("BackOff", "service/s", "2 replica(s) failed in the last 600s: the next one starts "
                                                       "10s after the last failure (see `tidal logs s`)"))]
    again, mem = decide.lifecycle(replace(s, now=NOW + 1), T, mem)
    assert again == []
    later, mem = decide.lifecycle(replace(s, now=NOW + 6), T, mem)
    assert [type(c) for c in later] == [CreateReplica] and mem.backoff_noted == frozenset()


def test_a_deleted_service_drains_everything_it_has():
    s = snap(services=[], replicas=[replica("r1", S.READY, "n1", release="x"), replica("r2", S.PENDING, release="x"),
                                    replica("r3", S.DRAINING, "n2", release="x")])
    cmds, _ = decide.lifecycle(s, T, decide.ReplicaMemory())
    assert cmds == [DrainReplica("r1", NOW + 10, Event("ReplicaDraining", "replica/r1", "its service was deleted"),
                                 reason="its service was deleted"),
                    DiscardReplica("r2", "its service was deleted")]


def test_a_new_release_rolls_without_a_gap():
    old = [replica("o1", S.READY, "n1", release="old"), replica("o2", S.READY, "n2", release="old")]
    # Nothing new yet: two new ones are created, the old ones stay.
    cmds, _ = decide.lifecycle(snap(services=[service(desired=2)], replicas=old), T, decide.ReplicaMemory())
    assert [type(c) for c in cmds] == [CreateReplica, CreateReplica]
    # One new one ready: one old one goes.
    new = [replica("n1", S.READY, "n3"), replica("n2", S.STARTING, "n4")]
    cmds, _ = decide.lifecycle(snap(services=[service(desired=2)], replicas=old + new), T, decide.ReplicaMemory())
    assert [c.replica for c in cmds] == ["o1"]


def test_stop_drained():
    s = snap(replicas=[replica("r1", S.DRAINING, "n1", drain_at=NOW - 1, reason="scaled in to 1"),
                       replica("r2", S.DRAINING, "n1", drain_at=NOW + 1)])
    assert decide.stop_drained(s) == [StopReplica("r1", "scaled in to 1",
                                                  Event("ReplicaStopped", "replica/r1", "scaled in to 1"))]
