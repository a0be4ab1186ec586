"""Replica lifecycle (pure): what the probes saw, replicas wanted vs held, rolling updates, back-off, drains."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tidal.backends.base import ReplicaPhase, ReplicaStatus
from tidal.control import releases
from tidal.control.commands import (Command, CreateReplica, DiscardReplica, DrainReplica, Event, FailReplica,
                                    MarkReady, Note, ReplicaExited, SetEndpoint, StopReplica)
from tidal.control.settings import ControlSettings
from tidal.control.decide.spot import scale_in_order
from tidal.control.snapshot import FAILURE_WINDOW_SECONDS, Snapshot
from tidal.control.store import ReplicaRow
from tidal.scheduling import Resources
from tidal.spec import ServiceSpec
from tidal.states import ReplicaState as S

# Requests assumed for a replica that asks for nothing, so "fits on a node" means something.
DEFAULT_CPU = 1.0
DEFAULT_MEMORY_MIB = 1024.0


@dataclass(frozen=True)
class ReplicaMemory:
    backoff_noted: frozenset[str] = frozenset()  # services whose current back-off has its event


def release_hash(spec: ServiceSpec) -> str:
    """What a replica runs; a change rolls the service's replicas (other fields apply in place)."""
    key = "|".join([spec.release, spec.type, spec.model_name, spec.model_path, spec.model_config_file,
                    str(spec.version_policy), repr(sorted(spec.env.items())),
                    repr([m.model_dump() for m in spec.data]), str(spec.gpus)])
    return spec.release + "-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def requests_of(spec: ServiceSpec) -> Resources:
    cpu = spec.cpu or (0.0 if spec.gpus else DEFAULT_CPU)
    mem = spec.memory_mib or (0.0 if spec.gpus else DEFAULT_MEMORY_MIB)
    return Resources(cpu=cpu, memory_mib=mem, gpus=spec.gpus)


def observed(snap: Snapshot, statuses: dict[str, ReplicaStatus], settings: ControlSettings) -> list[Command]:
    """Replica processes that exited, became ready, cannot load their model, or never became ready in time."""
    out: list[Command] = []
    now = snap.now
    for rep in snap.in_state(S.STARTING, S.READY, S.DRAINING, S.NOTIFIED):
        st = statuses.get(rep.id)
        if st is None:
            continue
        obj = f"replica/{rep.id}"
        if st.endpoint and st.endpoint != rep.endpoint and st.phase is not ReplicaPhase.EXITED:
            out.append(SetEndpoint(rep.id, st.endpoint))
        if st.phase is ReplicaPhase.EXITED:
            if rep.state == S.DRAINING:
                out.append(ReplicaExited(rep.id, Event("ReplicaStopped", obj, "drained and exited")))
            else:
                why = st.reason or "process exited"
                out.append(FailReplica(rep.id, "process exited", Event(
                    "ReplicaFailed", obj, f"its process exited unexpectedly ({why}); replacing it")))
        elif rep.state != S.STARTING:
            continue
        elif st.phase is ReplicaPhase.READY:
            out.append(MarkReady(rep.id, Event("ReplicaReady", obj, f"ready on node {rep.node} (port {_port(st.endpoint) or rep.port}) "
                                                                    f"after {now - rep.created_at:.1f}s"
                                                                    + (f" ({st.runtime})" if st.runtime else "")),
                                 st.runtime))
        elif st.phase is ReplicaPhase.FAILED:
            # Running but unable to serve (its model path does not exist): it never will, so it fails now
            # and the service's back-off paces the replacements.
            out.append(FailReplica(rep.id, st.reason, Event("ReplicaFailed", obj, f"cannot serve: {st.reason}; "
                                                                                f"replacing it"), stop=True))
        elif now - rep.created_at > settings.start_timeout_seconds:
            out.append(FailReplica(rep.id, "not ready in time", Event(
                "ReplicaFailed", obj, f"not ready after {settings.start_timeout_seconds:.0f}s; replacing it"), stop=True))
    return out


def _port(endpoint: str | None) -> int | None:
    """The port of where a backend says the replica answers now (a pod's IP and port), if it says."""
    return int(endpoint.rsplit(":", 1)[1]) if endpoint and ":" in endpoint else None


def lifecycle(snap: Snapshot, settings: ControlSettings, memory: ReplicaMemory) -> tuple[list[Command], ReplicaMemory]:
    """Replicas wanted vs held, per service: create, scale in, roll a new release, drain noticed replicas."""
    now = snap.now
    out: list[Command] = []
    noted = set(memory.backoff_noted)
    for r in snap.replicas:
        if r.service not in snap.services and r.state in (S.PENDING, S.STARTING, S.READY, S.NOTIFIED):
            out.append(_drain(r, "its service was deleted", now, settings))
    for name, svc in snap.services.items():
        reps = snap.of(name)
        # One release, or during a rollout two (tidal.control.releases), each with its own count.
        wanted = snap.releases(name)
        keys = {rel.key for rel in wanted}
        outdated = [r for r in reps if r.state in S.LIVE and r.release not in keys]
        want = sum(rel.replicas for rel in wanted)
        ready_current = 0
        for rel in wanted:
            live = [r for r in reps if r.state in S.LIVE and r.release == rel.key]
            missing = rel.replicas - len(live)
            if missing > 0:
                waiting, event = backoff(name, [r for r in snap.failed if r.service == name], now)
                if waiting:
                    missing = 0
                    if name not in noted:
                        noted.add(name)
                        out.append(Note(event))
                else:
                    noted.discard(name)
            out += [CreateReplica(name, rel.spec.workload, rel.key)] * max(0, missing)
            if len(live) > rel.replicas:
                # Remove the least useful first: not placed, then still starting, then ready ones by their
                # capacity's risk and price (tidal.control.decide.spot), the newest first.
                victims = scale_in_order(snap, live)[:len(live) - rel.replicas]
                out += [_drain(r, f"scaled in to {rel.replicas}", now, settings) for r in victims]
            ready_current += sum(1 for r in live if r.state == S.READY)
        # Rolling update: an old replica goes once the new ones can carry the service; a rolled-back canary's
        # go at once (the stable release carries the service already).
        retired = releases.retired(snap.rollouts.get(name))
        surplus = ready_current + sum(1 for r in outdated if r.state == S.READY and r.release != retired) - want
        for r in sorted(outdated, key=lambda r: (r.state == S.READY and r.release != retired, r.created_at)):
            if r.release == retired:
                out.append(_drain(r, "its release was rolled back", now, settings))
            elif r.state != S.READY or surplus > 0:
                out.append(_drain(r, "replaced by the service's new release", now, settings))
                surplus -= r.state == S.READY
        # Noticed replicas drain once their replacements are ready, or when the notice is nearly over.
        for r in reps:
            if r.state == S.NOTIFIED and (ready_current >= want or (r.drain_at is not None and now >= r.drain_at)):
                node = snap.node(r.node)
                stop_at = now + settings.drain_seconds
                if node is not None and node.reclaim_at is not None:
                    stop_at = min(stop_at, node.reclaim_at)
                why = (f"its node {r.node} is going away and its replacement is ready" if ready_current >= want
                       else f"its node {r.node} is about to be reclaimed")
                out.append(DrainReplica(r.id, stop_at, Event("ReplicaDraining", f"replica/{r.id}", why)))
    noted &= set(snap.services)
    return out, ReplicaMemory(frozenset(noted))


def backoff(service: str, failed: list[ReplicaRow], now: float) -> tuple[bool, Event | None]:
    """Replicas that keep failing are replaced ever more slowly (like Kubernetes' CrashLoopBackOff: at once
    after one failure, then 10 s doubling up to 5 min), so a model that cannot load does not become a
    process-spawning loop. (waiting, the BackOff event)"""
    recent = [r for r in failed if r.stopped_at is not None and now - r.stopped_at < FAILURE_WINDOW_SECONDS]
    if not recent:
        return False, None
    delay = 0.0 if len(recent) == 1 else min(300.0, 10.0 * 2 ** (len(recent) - 2))
    last = max(r.stopped_at for r in recent)
    if now - last >= delay:
        return False, None
    return True, Event("BackOff", f"service/{service}",
                       f"{len(recent)} replica(s) failed in the last {FAILURE_WINDOW_SECONDS:.0f}s: the next one "
                       f"starts {delay:.0f}s after the last failure (see `tidal logs {service}`)")


def stop_drained(snap: Snapshot) -> list[Command]:
    """Draining replicas whose time is up. The gateway sent them nothing new since; in-flight work had its time."""
    return [StopReplica(r.id, r.reason or "drained", Event("ReplicaStopped", f"replica/{r.id}", r.reason or "drained"))
            for r in snap.in_state(S.DRAINING) if r.drain_at is None or snap.now >= r.drain_at]


def _drain(r: ReplicaRow, why: str, now: float, settings: ControlSettings) -> Command:
    if r.state == S.PENDING or r.ref is None:
        return DiscardReplica(r.id, why)
    return DrainReplica(r.id, now + settings.drain_seconds, Event("ReplicaDraining", f"replica/{r.id}", why), reason=why)
