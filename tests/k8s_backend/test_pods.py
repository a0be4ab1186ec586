"""Which pod is which replica, and a pod's state as a replica's phase: pure, table-tested."""

from __future__ import annotations

import pytest

from tidal.backends.base import ReplicaPhase, ReplicaStatus
from tidal.backends.kubernetes.pods import PodView, assign, replica_status


def pod(name, ready=False, created=0.0, deleting=False, phase="Running", ip="10.0.0.1", **kw) -> PodView:
    return PodView(name=name, service="s", slice="spot-zone-a", phase=phase, ready=ready, ip=ip, deleting=deleting,
                   created=created, **kw)


@pytest.mark.parametrize("replicas, pods, previous, expected", [
    # a claim that still holds stays, even when another pod is readier
    (["r1"], [pod("a", ready=True), pod("b")], {"r1": "b"}, {"r1": "b"}),
    # new replicas take free pods: ready first, then oldest
    (["r1", "r2"], [pod("a", created=2), pod("b", ready=True, created=3), pod("c", created=1)], {},
     {"r1": "b", "r2": "c"}),
    # a pod being deleted is nobody's: its replica takes another or waits
    (["r1", "r2"], [pod("a", deleting=True), pod("b")], {"r1": "a"}, {"r1": "b"}),
    # two replicas never share a pod
    (["r1", "r2"], [pod("a")], {"r1": "a", "r2": "a"}, {"r1": "a"}),
    ([], [pod("a")], {}, {}),
])
def test_assign(replicas, pods, previous, expected):
    got = assign(replicas, pods, previous)
    assert {r: p.name for r, p in got.items()} == expected


@pytest.mark.parametrize("view, status", [
    (None, ReplicaStatus(ReplicaPhase.STARTING, "no pod yet (the Deployment creates it)")),
    (pod("a", ready=True), ReplicaStatus(ReplicaPhase.READY, endpoint="10.0.0.1:8501")),
    (pod("a", ready=True, ip=None), ReplicaStatus(ReplicaPhase.STARTING, "pod a running, not ready yet")),
    (pod("a", phase="Pending", ip=None, unschedulable="0/4 nodes are available"),
     ReplicaStatus(ReplicaPhase.STARTING, "pod a unschedulable: 0/4 nodes are available")),
    (pod("a", phase="Pending", waiting="ImagePullBackOff: no such image"),
     ReplicaStatus(ReplicaPhase.FAILED, "pod a: ImagePullBackOff: no such image")),
    (pod("a", phase="Failed", reason="Evicted: low memory"),
     ReplicaStatus(ReplicaPhase.FAILED, "pod a failed: Evicted: low memory")),
    (pod("a", phase="Succeeded"), ReplicaStatus(ReplicaPhase.EXITED, "pod a exited")),
])
def test_replica_status(view, status):
    assert replica_status(view, 8501) == status


@pytest.mark.parametrize("pod_release, ref, mine", [
    ("bert-v1", {"service": "s", "release": "bert-v1"}, True),
    ("bert-v2", {"service": "s", "release": "bert-v1"}, False),   # the canary's pod in the same slice
    ("bert-v2", {"service": "s"}, True),                          # a ref recorded before releases had their own
    ("bert-v1", {"service": "other", "release": "bert-v1"}, False),
])
def test_a_replica_takes_only_a_pod_of_its_release(pod_release, ref, mine):
    pod = PodView(name="p", service="s", slice="spot-zone-a", phase="Running", ready=True, ip="10.0.0.1",
                  deleting=False, created=0.0, release=pod_release)
    assert pod.release_of(ref) is mine
