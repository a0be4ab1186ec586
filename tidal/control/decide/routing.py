"""Routing (pure): the gateway's services follow the store: serving replicas as endpoints, model names as routes.

Every pass routes every service with the model name its spec asks for. When
another service still holds that name (a deleted service draining), the gateway
refuses it and the executor routes the service by its path prefix only for that
pass; the next pass asks again, so the name is taken as soon as it is free. A
deleted service keeps its draining endpoints but gives up its model name at once,
and services giving names up are routed first.
"""

from __future__ import annotations

from tidal.control.commands import Command, Endpoint, Route, Unroute
from tidal.control.snapshot import Snapshot
from tidal.states import ReplicaState as S


def route(snap: Snapshot, routed: frozenset[str]) -> list[Command]:
    """`routed`: the services the gateway has now."""
    by_service: dict[str, list[Endpoint]] = {name: [] for name in snap.services}
    for r in snap.in_state(S.READY, S.DRAINING, S.NOTIFIED):
        if r.endpoint is None:
            continue
        if r.state == S.NOTIFIED and r.ready_at is None:
            # Noticed while still starting (a slow model load): it never answered ready, so it gets no traffic.
            continue
        state = "draining" if r.state == S.DRAINING else "ready"
        by_service.setdefault(r.service, []).append(Endpoint(r.id, r.host, r.port, state))
    releasing: list[Command] = []
    claiming: list[Command] = []
    for name, endpoints in by_service.items():
        svc = snap.services.get(name)
        if svc is None and not endpoints:
            if name in routed:
                releasing.append(Unroute(name))
            continue
        models = (svc.spec.model_name,) if svc is not None and svc.spec.model_name else ()
        (claiming if models else releasing).append(Route(name, tuple(endpoints), models))
    gone = [Unroute(name) for name in sorted(routed) if name not in by_service]
    return gone + releasing + claiming
