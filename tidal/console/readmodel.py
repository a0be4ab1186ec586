"""What the console may read of a control plane: a narrow, read-only view of its store, gateway, catalog and clock."""

from __future__ import annotations

from typing import Optional, Protocol

from tidal.errors import NotFound
from tidal.states import ReplicaState

# Replica states the store calls active (its default), and every state a replica's story can hold.
EVERY_REPLICA_STATE = tuple(ReplicaState)


class ReadModel(Protocol):
    """Reads only: rows are copies, so nothing the console does with them reaches the control plane."""

    gateway_url: Optional[str]  # where the services are served, for their endpoints

    def now(self) -> float: ...

    def services(self) -> list: ...  # ServiceRow (spec, desired, created_at)

    def service(self, name: str) -> Optional[object]: ...  # a ServiceRow, or None

    def replicas(self, service: Optional[str] = None, every_state: bool = False) -> list: ...  # ReplicaRow

    def nodes(self, pool: Optional[str] = None) -> list: ...  # NodeRow, terminated ones left out

    def pools(self) -> list: ...  # NodePoolSpec

    def events(self, limit: int = 2000) -> list: ...  # store Event, oldest first

    def autoscaler(self, service: str) -> Optional[tuple[dict, Optional[dict]]]: ...  # (document, last decision)

    def stats(self, service: str) -> Optional[object]: ...  # the gateway's ServiceStats, None when unknown

    def instance_type(self, name: str, zone: str = "") -> Optional[object]: ...  # prices in the zone's region, or None

    def rollout(self, service: str) -> Optional[dict]: ...  # tidal.control.rollouts.view of its rollout, or None


class StoreReadModel:
    """A ReadModel over a control plane's store, gateway (may be None), catalog and clock."""

    def __init__(self, store, gateway, catalog, clock, gateway_url: Optional[str] = None) -> None:
        self._store = store
        self._gateway = gateway
        self._catalog = catalog
        self._clock = clock
        self.gateway_url = gateway_url

    def now(self) -> float:
        return self._clock.now()

    def services(self) -> list:
        return self._store.list_services()

    def service(self, name: str):
        try:
            return self._store.get_service(name)
        except NotFound:
            return None

    def replicas(self, service: Optional[str] = None, every_state: bool = False) -> list:
        if every_state:
            return self._store.replicas(service, states=EVERY_REPLICA_STATE)
        return self._store.replicas(service)

    def nodes(self, pool: Optional[str] = None) -> list:
        return self._store.nodes(pool)

    def pools(self) -> list:
        return self._store.list_pools()

    def events(self, limit: int = 2000) -> list:
        return self._store.events(limit=limit)

    def autoscaler(self, service: str):
        return self._store.get_autoscaler(service)

    def stats(self, service: str):
        if self._gateway is None:
            return None
        try:
            return self._gateway.stats(service)
        except NotFound:
            return None

    def instance_type(self, name: str, zone: str = ""):
        return self._catalog.lookup(name, zone)

    def rollout(self, service: str) -> Optional[dict]:
        from tidal.control.releases import load
        from tidal.control.rollouts import view
        r = load(self._store.get_rollout_record(service), service)
        if r is None:
            return None
        counts = None
        if r.active and self._gateway is not None:
            since = max(r.started_at, r.step_started_at or r.started_at)
            try:
                counts = self._gateway.release_stats(service, min(300.0, max(1.0, self._clock.now() - since)))
            except NotFound:
                counts = None
        svc = self.service(service)
        return view(r, self._store.replicas(service), counts, svc.desired if svc is not None else None)
