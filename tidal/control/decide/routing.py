"""Routing (pure): the gateway's services follow the store: serving replicas as endpoints, model names as routes.

Every pass routes every service with the model name its spec asks for. When
another service still holds that name (a deleted service draining), the gateway
refuses it and the executor routes the service by its path prefix only for that
pass; the next pass asks again, so the name is taken as soon as it is free. A
deleted service keeps its draining endpoints but gives up its model name at once,
and services giving names up are routed first. A service that may scale to zero
(`minReplicas: 0`) has the gateway hold its requests while no replica is ready,
with its autoscaler's queue settings and the last start failure as the reason.
A service in a rollout has its endpoints labelled with their release and the
rollout's weights and mirror (tidal.control.releases) as its split.
"""

from __future__ import annotations

from tidal.autoscaling.hpafile import parse_hpa
from tidal.control.commands import Command, Endpoint, Route, Unroute
from tidal.control.snapshot import Snapshot
from tidal.gateway.config import QueueSettings, ReleaseSplit
from tidal.states import ReplicaState as S


def route(snap: Snapshot, routed: frozenset[str]) -> list[Command]:
    """`routed`: the services the gateway has now; `snap` has the autoscalers (for the services that queue)."""
    by_service: dict[str, list[Endpoint]] = {name: [] for name in snap.services}
    splits = {name: split for name in snap.services if (split := _split(snap, name)) is not None}
    labels = {name: {rel.key: rel.name for rel in snap.releases(name)} for name in splits}
    for r in snap.in_state(S.READY, S.DRAINING, S.NOTIFIED):
        if r.endpoint is None:
            continue
        if r.state == S.NOTIFIED and r.ready_at is None:
            # Noticed while still starting (a slow model load): it never answered ready, so it gets no traffic.
            continue
        state = "draining" if r.state == S.DRAINING else "ready"
        release = labels[r.service].get(r.release, "") if r.service in labels else ""
        by_service.setdefault(r.service, []).append(Endpoint(r.id, r.host, r.port, state, release))
    releasing: list[Command] = []
    claiming: list[Command] = []
    for name, endpoints in by_service.items():
        svc = snap.services.get(name)
        if svc is None and not endpoints:
            if name in routed:
                releasing.append(Unroute(name))
            continue
        models = (svc.spec.model_name,) if svc is not None and svc.spec.model_name else ()
        queue = _queue(snap, name) if svc is not None else None
        reason = _unready_reason(snap, name) if queue is not None and not endpoints else None
        (claiming if models else releasing).append(Route(name, tuple(endpoints), models, queue, reason,
                                                         splits.get(name)))
    gone = [Unroute(name) for name in sorted(routed) if name not in by_service]
    return gone + releasing + claiming


def _split(snap: Snapshot, name: str) -> ReleaseSplit | None:
    rollout = snap.rollouts.get(name)
    if rollout is None or not rollout.active:
        return None
    return ReleaseSplit(weights=rollout.weights, stable=rollout.stable.release,
                        mirror=rollout.canary.release if rollout.mirror else "", mirror_percent=rollout.mirror,
                        classes=rollout.guards.max_class_shift is not None)


def _queue(snap: Snapshot, name: str) -> QueueSettings | None:
    scaler = snap.autoscalers.get(name)
    if scaler is None:
        return None
    try:
        spec = parse_hpa(scaler.document)
    except Exception:  # an unreadable autoscaler is reported by the autoscaling step
        return None
    if spec.min_replicas != 0:
        return None
    return QueueSettings(size=spec.zero.queue_size, wait_seconds=spec.zero.queue_wait_seconds)


def _unready_reason(snap: Snapshot, name: str) -> str | None:
    failed = [r for r in snap.failed if r.service == name and r.reason]
    if not failed:
        return None
    last = max(failed, key=lambda r: r.stopped_at or r.created_at)
    return f"the last replica to start ({last.id}) failed: {last.reason}"
