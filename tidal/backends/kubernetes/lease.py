"""Leader election on a coordination.k8s.io/v1 Lease, so two control planes never act on one namespace at once.

The rules are client-go's (`tools/leaderelection`): whoever holds the Lease renews it every retry period; the
others may take it over only once it has not changed for the holder's lease duration, measured on their own
monotonic clock from when they saw it change (clocks of different machines are never compared). A leader that
cannot renew within its renew deadline, shorter than the lease duration, stops acting before anyone else may
start; a leader that stops on purpose releases the Lease so a successor starts at once. Every write carries the
resourceVersion it read, so two candidates racing for one Lease cannot both win.

`decide`, `keep_leading` and `still_leading` are the pure decisions; `LeaseElector` reads and writes the Lease and runs them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidal.backends.kubernetes.client import TIMEOUT_S, describe_failure
from tidal.clock import Clock, RealClock
from tidal.errors import TidalError

log = logging.getLogger(__name__)

DEFAULT_LEASE = "tidal-control-plane"


class LeaderElection(BaseModel):
    """Where the Lease is and how long it lasts (client-go's defaults: 15 s, renewed every 2 s, 10 s to renew)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    lease_name: str = Field(default=DEFAULT_LEASE, pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$", max_length=253)
    namespace: str = ""             # empty: the context's namespace
    lease_seconds: float = Field(default=15.0, ge=1.0, le=3600.0)
    renew_deadline_seconds: float | None = Field(default=None, gt=0)   # default: two thirds of the lease
    retry_seconds: float | None = Field(default=None, gt=0)            # default: a seventh of the lease
    identity: str = ""              # empty: this host's name and a random suffix

    @model_validator(mode="after")
    def _order(self) -> "LeaderElection":
        if not self.retry < self.renew_deadline < self.lease_seconds:
            raise ValueError(f"the retry period ({self.retry:g} s) must be shorter than the renew deadline "
                             f"({self.renew_deadline:g} s), and that shorter than the lease ({self.lease_seconds:g} s)")
        return self

    @property
    def renew_deadline(self) -> float:
        return self.renew_deadline_seconds or self.lease_seconds * 2 / 3

    @property
    def retry(self) -> float:
        return self.retry_seconds or self.lease_seconds / 7.5


def default_identity() -> str:
    """The pod's name in a cluster (HOSTNAME), else this host's, with a suffix so two processes never share one."""
    host = os.environ.get("HOSTNAME") or socket.gethostname() or "tidal"
    return f"{host}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says: who holds it, for how long, and the resourceVersion a write must match."""
    holder: str                 # "" when released
    lease_seconds: float
    transitions: int
    version: str
    acquired: datetime | None = None


@dataclass(frozen=True)
class Observation:
    """The Lease as last read (None: there is none) and when, on this process's monotonic clock, it last changed."""
    record: LeaseRecord | None
    changed_at: float


class Action(StrEnum):
    CREATE = "create"   # no Lease yet: create it, holding it
    TAKE = "take"       # released, or its holder stopped renewing: write ourselves in
    RENEW = "renew"     # ours: write a new renewTime
    WAIT = "wait"       # another holds it and renewed within its lease


def decide(obs: Observation, identity: str, now: float) -> Action:
    """What a candidate does with the Lease it observed, at `now` (the clock of `obs.changed_at`)."""
    record = obs.record
    if record is None:
        return Action.CREATE
    if record.holder == identity:
        # Ours, even past its expiry: nobody has written since, and the write fails if someone does first.
        return Action.RENEW
    if not record.holder:
        return Action.TAKE  # released by a leader that stopped on purpose
    # Expiry counts from when *we* saw it change, not from its renewTime: another machine's clock may be off.
    if now >= obs.changed_at + record.lease_seconds:
        return Action.TAKE
    return Action.WAIT


def keep_leading(last_renewed: float, now: float, renew_deadline: float) -> bool:
    """Whether a leader may still act: it renewed within its renew deadline (shorter than the lease, so it stops
    before anyone may take the Lease over)."""
    return now - last_renewed < renew_deadline


def still_leading(holder: str, identity: str, last_renewed: float, now: float, renew_deadline: float) -> bool:
    """After a round that did not renew: whether the leader may go on acting. Not when the Lease names another
    holder (it was taken over: stop at once), nor past the renew deadline."""
    if holder not in ("", identity):
        return False
    return keep_leading(last_renewed, now, renew_deadline)


class LeaseError(TidalError):
    """The Lease cannot be read or written for a reason waiting will not fix (no rights, no such namespace)."""


def _micro_time(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_of(lease: Any) -> LeaseRecord:
    """A LeaseRecord from the official client's V1Lease."""
    spec = lease.spec
    return LeaseRecord(holder=spec.holder_identity or "", lease_seconds=float(spec.lease_duration_seconds or 0),
                       transitions=int(spec.lease_transitions or 0), version=lease.metadata.resource_version,
                       acquired=spec.acquire_time)


class LeaseElector:
    """One candidate for one Lease. `try_once` runs a round (read, decide, write); `acquire`/`hold` loop it."""

    def __init__(self, api: Any, namespace: str, settings: LeaderElection, clock: Clock | None = None) -> None:
        from kubernetes import client
        self.leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.settings = settings
        self.name = settings.lease_name
        self.identity = settings.identity or default_identity()
        self.clock = clock or RealClock()
        self._observed = Observation(None, self.clock.monotonic())
        self._seen_version: str | None = None
        self._last_renewed: float | None = None   # monotonic time of our last successful write while leading
        # A Lease call that takes longer than half the renew deadline is as good as failed; a shorter wait also
        # keeps a call to an API that never answers from outliving its leader's step-down by long.
        self._timeout = min(TIMEOUT_S, max(1.0, settings.renew_deadline / 2))

    # -- one round --------------------------------------------------------------------------------------------

    def _read(self) -> LeaseRecord | None:
        from kubernetes.client.exceptions import ApiException
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return record_of(lease)

    def _observe(self, record: LeaseRecord | None) -> Observation:
        version = record.version if record else None
        if version != self._seen_version or record is None:
            self._seen_version = version
            self._observed = Observation(record, self.clock.monotonic())
        return self._observed

    def _body(self, record: LeaseRecord | None, taking: bool) -> dict:
        now = _micro_time(self.clock.now())
        spec: dict[str, Any] = {"holderIdentity": self.identity,
                                "leaseDurationSeconds": max(1, round(self.settings.lease_seconds)),
                                "renewTime": now}
        if record is None or taking:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = 0 if record is None else record.transitions + 1
        else:
            spec["acquireTime"] = _micro_time(record.acquired.timestamp()) if record.acquired else now
            spec["leaseTransitions"] = record.transitions
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {"app.kubernetes.io/managed-by": "tidal"}}
        if record is not None:
            meta["resourceVersion"] = record.version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def try_once(self) -> bool:
        """One round: read the Lease, decide, write. True when this candidate holds the Lease after it.

        A race lost (409) or an API that does not answer is a False (try again next round); no rights or no such
        namespace raise LeaseError, which no retry fixes."""
        from kubernetes.client.exceptions import ApiException
        # The renew deadline counts from before the read: the write lands somewhere in between, and a candidate
        # counts the lease from when it sees that write, so the leader's deadline is never the later of the two.
        started = self.clock.monotonic()
        try:
            obs = self._observe(self._read())
            action = decide(obs, self.identity, self.clock.monotonic())
            if action is Action.WAIT:
                return False
            body = self._body(obs.record, taking=action is not Action.RENEW)
            if action is Action.CREATE:
                written = self.leases.create_namespaced_lease(self.namespace, body, _request_timeout=self._timeout)
            else:
                written = self.leases.replace_namespaced_lease(self.name, self.namespace, body,
                                                               _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status in (401, 403) or (exc.status == 404 and "namespace" in (exc.body or "")):
                raise LeaseError(describe_failure(exc, f"Lease {self.namespace}/{self.name}")) from None
            if exc.status != 409:  # 409: another candidate wrote first; next round reads what it wrote
                log.warning("%s", describe_failure(exc, f"Lease {self.namespace}/{self.name}"))
            return False
        except Exception as exc:  # noqa: BLE001 - the API not reachable: a round without a write
            log.warning("%s", describe_failure(exc, f"Lease {self.namespace}/{self.name}"))
            return False
        if action is not Action.RENEW:
            log.info("%s took the Lease %s/%s (%s)", self.identity, self.namespace, self.name, action)
        self._observe(record_of(written))
        self._last_renewed = started
        return True

    def holder(self) -> str:
        """Who holds the Lease as last read ('' when nobody)."""
        record = self._observed.record
        return record.holder if record else ""

    # -- loops ------------------------------------------------------------------------------------------------

    async def acquire(self, stop: asyncio.Event | None = None) -> bool:
        """Try every retry period until this candidate holds the Lease (True) or `stop` is set (False)."""
        said = ""
        while stop is None or not stop.is_set():
            if await asyncio.to_thread(self.try_once):
                return True
            if self.holder() and self.holder() != said:
                said = self.holder()
                log.info("waiting for the Lease %s/%s, held by %s", self.namespace, self.name, said)
            await self._pause(stop)
        return False

    async def hold(self, stop: asyncio.Event | None = None) -> None:
        """Renew every retry period; return when leadership is lost (another holds the Lease, or no renewal
        within the renew deadline) or `stop` is set. The caller stops acting the moment this returns."""
        while stop is None or not stop.is_set():
            await self._pause(stop)
            if stop is not None and stop.is_set():
                return
            # An API that does not answer must not keep a leader acting past its deadline: the try is given only
            # the time left (a write that lands later renews a Lease this candidate no longer acts on: harmless).
            left = self.settings.renew_deadline - (self.clock.monotonic() - (self._last_renewed or 0.0))
            try:
                renewed = await asyncio.wait_for(asyncio.to_thread(self.try_once), max(left, 0.001))
            except asyncio.TimeoutError:
                renewed = False
            except LeaseError as exc:  # rights taken away: no renewal will succeed
                log.warning("%s lost the Lease: %s", self.identity, exc)
                self._last_renewed = None
                return
            if not renewed and not still_leading(self.holder(), self.identity, self._last_renewed or 0.0,
                                                 self.clock.monotonic(), self.settings.renew_deadline):
                log.warning("%s lost the Lease %s/%s (holder now: %s)", self.identity, self.namespace, self.name,
                            self.holder() or "nobody")
                self._last_renewed = None
                return

    async def _pause(self, stop: asyncio.Event | None) -> None:
        if stop is None:
            await self.clock.sleep(self.settings.retry)
            return
        try:
            await asyncio.wait_for(stop.wait(), self.settings.retry)
        except asyncio.TimeoutError:
            pass

    def close(self) -> None:
        self.leases.api_client.close()

    def release(self) -> bool:
        """Give the Lease up (a leader stopping on purpose): holder cleared, so a successor takes it at once.
        Only a Lease that is still ours is written; True when it was released."""
        from kubernetes.client.exceptions import ApiException
        try:
            record = self._read()
            if record is None or record.holder != self.identity:
                return False
            body = self._body(record, taking=False)
            body["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
            self.leases.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=self._timeout)
        except (ApiException, OSError) as exc:
            log.warning("%s", describe_failure(exc, f"releasing the Lease {self.namespace}/{self.name}"))
            return False
        except Exception as exc:  # noqa: BLE001 - urllib3's errors; the Lease then expires on its own
            log.warning("%s", describe_failure(exc, f"releasing the Lease {self.namespace}/{self.name}"))
            return False
        self._last_renewed = None
        return True


def check_context(context):
    """The context, if a Lease can live there (a Kubernetes cluster); else one line saying so."""
    from tidal.errors import UserError
    if not context.is_kubernetes:
        raise UserError(f"leader election needs a Kubernetes context (the Lease lives in the cluster); "
                        f"context {context.name} is this machine: tidal context add NAME --kubernetes ...")
    return context


def elector_for_context(settings: LeaderElection, context=None, clock: Clock | None = None) -> LeaseElector:
    """An elector for the current (or given) Kubernetes context; the Lease goes in its namespace unless the
    settings name another."""
    from tidal.backends.kubernetes.client import api_client
    from tidal.backends.kubernetes.contexts import ContextStore
    context = check_context(context or ContextStore.from_env().current())
    return LeaseElector(api_client(context), settings.namespace or context.namespace, settings, clock)
