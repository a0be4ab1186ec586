"""A service's waiting room: requests that found no ready replica wait here, bounded in count and in time.

A service scaled to zero has no replica when its first request comes. Rather than
answer 503 (and leave the retry to the client, as some serving systems do), the
gateway holds the request until the control plane has a replica ready, asking it
for one at once (`Gateway(on_queue=...)`, at most once a second per service).
Waiters block on one event that the route table's next ready replica sets; a client
that goes away is cancelled by the HTTP server and leaves the count on its way out.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Callable

import orjson

from tidal.gateway.config import QueueSettings
from tidal.http.server import Response

log = logging.getLogger(__name__)

WAKE_INTERVAL_SECONDS = 1.0  # one request for a replica per service per second, however many wait


class WaitQueue:
    __slots__ = ("waiting", "_event", "last_wake")

    def __init__(self) -> None:
        self.waiting = 0
        self._event: asyncio.Event | None = None
        self.last_wake = -math.inf

    async def hold(self, service: str, settings: QueueSettings, now: float, budget: float, reason: str | None,
                   wake: Callable[[str], None] | None) -> Response | None:
        """Hold a request until the service has a ready replica: None once released, else the 503 to answer.
        `budget`: what is left of the request's deadline; `wake` asks the control plane for a replica."""
        if self.waiting >= settings.size:
            return overflow(service, settings)
        if wake is not None and self.should_wake(now):
            try:
                wake(service)
            except Exception:  # the control plane's next pass reads the queue anyway
                log.exception("service %s: asking for a replica failed", service)
        limit = min(settings.wait_seconds, budget)
        if await self.wait(limit):
            return None  # a replica is ready (or the service went: the caller's attempts say so)
        return waited_in_vain(service, limit, reason)

    def should_wake(self, now: float) -> bool:
        if now - self.last_wake >= WAKE_INTERVAL_SECONDS:
            self.last_wake = now
            return True
        return False

    async def wait(self, timeout: float) -> bool:
        """True when released (a replica is ready), False after `timeout` seconds."""
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        self.waiting += 1
        try:
            await asyncio.wait_for(event.wait(), max(0.0, timeout))
            return True
        except asyncio.TimeoutError:
            return False
        finally:  # also when the client went away (cancelled)
            self.waiting -= 1

    def release(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None


def _unavailable(message: str, retry_after: float) -> Response:
    return Response(503, orjson.dumps({"error": message}),
                    headers=[("Retry-After", str(max(1, math.ceil(retry_after))))])


def overflow(service: str, settings: QueueSettings) -> Response:
    return _unavailable(f"service {service!r} has no ready replica yet and its queue is full "
                        f"({settings.size} requests waiting); retry shortly", 1)


def waited_in_vain(service: str, waited: float, reason: str | None) -> Response:
    why = f": {reason}" if reason else " (a replica is still starting)"
    return _unavailable(f"no replica of service {service!r} became ready within {waited:g}s{why}", 5)
