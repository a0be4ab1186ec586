"""Pods as Tidal sees them: which replica is which pod of its slice, and a pod's state as a replica's phase (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidal.backends.base import ReplicaPhase, ReplicaStatus
from tidal.backends.kubernetes.render import SLICE_LABEL

# Container waiting reasons that do not go away by waiting: the replica failed (the reason says why).
FAILED_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff",
                            "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


@dataclass(frozen=True)
class PodView:
    name: str
    service: str
    slice: str
    phase: str                 # Pending, Running, Succeeded, Failed, Unknown
    ready: bool
    ip: str | None
    deleting: bool
    created: float
    unschedulable: str = ""    # the scheduler's message while it finds no node
    waiting: str = ""          # "Reason: message" of a container that waits for something that will not come
    reason: str = ""           # the pod's own reason and message (e.g. Evicted, a node lost)
    node: str = ""             # the Node it is bound to ("" while pending)
    release: str = ""          # its release label (NAME-VERSION): during a rollout two share a slice's nodes

    def release_of(self, ref: dict) -> bool:
        """Whether it can be the pod of the replica `ref` names: its service's, and its release's where the ref
        says one (a ref recorded before releases had Deployments of their own names none)."""
        return self.service == ref.get("service") and (not ref.get("release") or self.release == ref["release"])


def pod_view(pod: Any) -> PodView:
    """A V1Pod (the official client's model) as a PodView."""
    meta, status = pod.metadata, pod.status
    labels = meta.labels or {}
    conditions = {c.type: c for c in status.conditions or ()}
    ready = conditions.get("Ready") is not None and conditions["Ready"].status == "True"
    scheduled = conditions.get("PodScheduled")
    unschedulable = ""
    if scheduled is not None and scheduled.status == "False" and scheduled.reason == "Unschedulable":
        unschedulable = (scheduled.message or "no node fits").splitlines()[0]
    waiting = ""
    for cs in status.container_statuses or ():
        w = cs.state.waiting if cs.state else None
        if w is not None and w.reason in FAILED_WAITING:
            waiting = f"{w.reason}: {(w.message or '').splitlines()[0] if w.message else ''}".rstrip(": ")
    reason = ": ".join(x for x in (status.reason, (status.message or "").splitlines()[0] if status.message else "")
                       if x)
    created = meta.creation_timestamp.timestamp() if meta.creation_timestamp else 0.0
    return PodView(name=meta.name, service=labels.get("serviceName", ""), slice=labels.get(SLICE_LABEL, ""),
                   phase=status.phase or "Unknown", ready=ready, ip=status.pod_ip, deleting=bool(meta.deletion_timestamp),
                   created=created, unschedulable=unschedulable, waiting=waiting, reason=reason,
                   node=(pod.spec.node_name if pod.spec else None) or "", release=labels.get("release", ""))


def assign(replicas: list[str], pods: list[PodView], previous: dict[str, str | None]) -> dict[str, PodView]:
    """Which pod each replica of one slice is: claims that still hold stay; the rest take free pods, ready and
    oldest first. A pod being deleted is nobody's (its replica stopped, or Kubernetes replaces it)."""
    live = {p.name: p for p in pods if not p.deleting}
    out: dict[str, PodView] = {}
    taken: set[str] = set()
    for replica in replicas:
        name = previous.get(replica)
        if name in live and name not in taken:
            out[replica] = live[name]
            taken.add(name)
    free = sorted((p for n, p in live.items() if n not in taken), key=lambda p: (not p.ready, p.created, p.name))
    for replica in replicas:
        if replica not in out and free:
            out[replica] = free.pop(0)
    return out


def replica_status(pod: PodView | None, port: int) -> ReplicaStatus:
    if pod is None:
        return ReplicaStatus(ReplicaPhase.STARTING, "no pod yet (the Deployment creates it)")
    if pod.phase == "Failed":
        return ReplicaStatus(ReplicaPhase.FAILED, f"pod {pod.name} failed" + (f": {pod.reason}" if pod.reason else ""))
    if pod.phase == "Succeeded":
        return ReplicaStatus(ReplicaPhase.EXITED, f"pod {pod.name} exited")
    if pod.waiting:
        return ReplicaStatus(ReplicaPhase.FAILED, f"pod {pod.name}: {pod.waiting}")
    if pod.unschedulable:
        return ReplicaStatus(ReplicaPhase.STARTING, f"pod {pod.name} unschedulable: {pod.unschedulable}")
    if pod.ready and pod.ip:
        return ReplicaStatus(ReplicaPhase.READY, endpoint=f"{pod.ip}:{port}")
    return ReplicaStatus(ReplicaPhase.STARTING, f"pod {pod.name} {pod.phase.lower()}, not ready yet")
