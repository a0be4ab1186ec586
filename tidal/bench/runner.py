"""Drives one bench run: sends pre-encoded requests open-loop on a schedule or closed-loop, and measures them.

Latency is measured from when a request was due, not from when it was written:
in open loop a request that waits for a free connection, or behind a slow
event loop, carries that wait in its latency, so a stalling server cannot hide
behind the load generator slowing down (coordinated omission).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

import numpy as np

from tidal.bench.config import BenchConfig
from tidal.bench.histogram import LatencyHistogram
from tidal.bench.profile import Constant, Schedule, Sine, natural_duration
from tidal.clock import Clock, RealClock
from tidal.http.client import ConnectFailed, ConnectionLost, HttpClient, Timeout


class Stats:
    """Counters and histograms, updated on the hot path; `recent` is emptied at every progress report."""

    __slots__ = ("sent", "answered", "errors", "status", "failures", "total", "service", "recent", "in_flight")

    def __init__(self) -> None:
        self.sent = 0
        self.answered = 0
        self.errors = 0
        self.status: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()
        self.total = LatencyHistogram()
        # From the moment the request was written: what a tool with coordinated omission reports.
        self.service = LatencyHistogram()
        # The last interval's latencies, raw: sorting a second's worth is cheaper than walking an HDR
        # histogram's buckets, which would stall the event loop mid-run.
        self.recent: list[float] = []
        self.in_flight = 0

    def answer(self, status: int, latency: float, service: float) -> None:
        self.answered += 1
        self.status[status] += 1
        if not 200 <= status < 300:
            self.errors += 1
        self.total.record(latency)
        self.service.record(service)
        self.recent.append(latency)

    def fail(self, kind: str) -> None:
        self.errors += 1
        self.failures[kind] += 1


@dataclass(frozen=True)
class Snapshot:
    """What the live display shows once per interval."""

    elapsed: float
    sent: int
    answered: int
    errors: int
    in_flight: int
    sent_rate: float
    answered_rate: float
    target_rate: Optional[float]
    p50_ms: float
    p99_ms: float
    replicas: Optional[str] = None


@dataclass
class Result:
    mode: str
    sent: int
    answered: int
    errors: int
    duration: float
    status: dict[int, int]
    failures: dict[str, int]
    latency_ms: dict[str, float]
    service_ms: dict[str, float] = field(default_factory=dict)
    target_rate: Optional[float] = None
    concurrency: Optional[int] = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    target: str = ""

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Result":
        """Back from `to_json()` (e.g. `tidal bench -o json` run as a subprocess), to print its summary."""
        return cls(mode=doc["mode"], sent=doc["requests"], answered=doc["answered"], errors=doc["errors"],
                   duration=doc["duration"], status={int(k): v for k, v in doc["status"].items()},
                   failures=dict(doc.get("failures", {})), latency_ms=doc["latency_ms"],
                   service_ms=doc.get("service_ms", {}), target_rate=doc.get("target_rate"),
                   concurrency=doc.get("concurrency"), timeline=doc.get("timeline", []), target=doc.get("target", ""))

    @property
    def throughput(self) -> float:
        return self.answered / self.duration if self.duration > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The stable `-o json` shape: requests, errors, duration, throughput, latency_ms, status (+ extras)."""
        return {
            "requests": self.sent,
            "answered": self.answered,
            "errors": self.errors,
            "duration": round(self.duration, 3),
            "throughput": round(self.throughput, 2),
            "latency_ms": self.latency_ms,
            "service_ms": self.service_ms,
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "failures": dict(sorted(self.failures.items())),
            "target": self.target,
            "mode": self.mode,
            "target_rate": self.target_rate,
            "concurrency": self.concurrency,
            "timeline": self.timeline,
        }


ReplicasHook = Callable[[], Awaitable[Optional[str]]]

# The event loop's timer granularity (uvloop's and epoll's: 1 ms).
TIMER_SLACK = 0.001


def recent_percentiles_ms(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 in ms of one interval's latencies (0 when none)."""
    if not latencies:
        return 0.0, 0.0
    p50, p99 = np.percentile(np.asarray(latencies), [50, 99], method="inverted_cdf")
    return round(float(p50) * 1000, 3), round(float(p99) * 1000, 3)


def schedule_for(config: BenchConfig) -> Schedule:
    """The open-loop schedule: over the given duration, else the profile's own, else long enough for the count."""
    profile = config.profile
    duration = config.duration or natural_duration(profile)
    if duration is None:
        # Only a request count bounds the run; C(t) >= mean*t - amplitude*period/pi for a sine.
        mean = profile.rate if isinstance(profile, Constant) else profile.mean
        slack = profile.amplitude * profile.period / 3.14159 if isinstance(profile, Sine) else 0.0
        duration = (config.requests + slack) / mean + 1.0
    return Schedule(profile, duration)


class Bench:
    """One run against one target. Build it, then `await run()`."""

    def __init__(self, config: BenchConfig, host: str, port: int, request: bytes, *,
                 clock: Clock | None = None, client: HttpClient | None = None,
                 on_progress: Callable[[Snapshot], None] | None = None,
                 replicas: ReplicasHook | None = None) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.request = request
        self.clock = clock or RealClock()
        limit = config.connections if config.open_loop else config.concurrency
        self.client = client or HttpClient(max_idle_per_host=limit)
        self._own_client = client is None
        self.on_progress = on_progress
        self.replicas = replicas
        self.stats = Stats()
        self._expired: set[asyncio.Task] = set()
        self.schedule = schedule_for(config) if config.open_loop else None
        self._start = 0.0
        self._replicas_text: Optional[str] = None
        self._loop_task: Optional[asyncio.Task] = None
        self.stopped = False

    def stop(self) -> None:
        """End the run early (Ctrl-C): nothing more is sent, requests in flight count as interrupted, and
        `run()` returns the summary of what completed so far."""
        self.stopped = True
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def run(self) -> Result:
        self.stats = Stats()
        self._timeline: list[dict[str, Any]] = []
        self._start = self.clock.monotonic()
        progress = asyncio.ensure_future(self._progress())
        self._loop_task = asyncio.ensure_future(self._open_loop() if self.schedule is not None
                                                else self._closed_loop())
        try:
            await self._loop_task
        except asyncio.CancelledError:
            if not self.stopped:  # cancelled from outside, not stopped: the caller wants no summary
                self._loop_task.cancel()
                raise
        finally:
            progress.cancel()
            try:
                await progress
            except asyncio.CancelledError:
                pass
            if self._own_client:
                self.client.close()
        elapsed = self.clock.monotonic() - self._start
        s = self.stats
        if self.schedule is not None:
            mode, rate, conc = "open", round(self.schedule.total / self.schedule.duration, 3), None
        else:
            mode, rate, conc = "closed", None, self.config.concurrency
        return Result(mode, s.sent, s.answered, s.errors, elapsed, dict(s.status), dict(s.failures),
                      s.total.summary_ms(), s.service.summary_ms(), rate, conc, self._timeline)

    # -- the two loops
    async def _open_loop(self) -> None:
        cfg, stats, clock, schedule = self.config, self.stats, self.clock, self.schedule
        slots = asyncio.Semaphore(cfg.connections)
        tasks: set[asyncio.Task] = set()
        start, n, limit = self._start, 0, cfg.requests
        try:
            while limit is None or n < limit:
                offset = schedule.time_of(n)
                if offset is None:
                    break
                due = start + offset
                now = clock.monotonic()
                # Timers fire to the millisecond: a request due within that goes now rather than spinning the
                # CPU for it (latency then counts from when it went; see _exchange).
                while due - now > TIMER_SLACK:
                    await clock.sleep(due - now - TIMER_SLACK / 2)
                    now = clock.monotonic()
                stats.sent += 1
                task = asyncio.ensure_future(self._send_when_free(slots, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await self._finish(tasks)
        except asyncio.CancelledError:
            await self._abandon(tasks)
            raise

    async def _abandon(self, tasks: set[asyncio.Task]) -> None:
        """Stopped: cancel what is still out and count it as interrupted (it was sent, never answered)."""
        pending = {t for t in tasks if not t.done()}
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
        for t in pending:
            if t.cancelled():
                self.stats.fail("interrupted")

    async def _send_when_free(self, slots: asyncio.Semaphore, due: float) -> None:
        async with slots:
            if self.clock.monotonic() - due > self.config.timeout:
                self.stats.fail("timeout")  # waited a whole timeout for a connection: it would be late anyway
                return
            await self._exchange(due)

    async def _closed_loop(self) -> None:
        cfg = self.config
        end = self._start + cfg.duration if cfg.duration else None
        workers = [asyncio.ensure_future(self._worker(end)) for _ in range(cfg.concurrency)]
        try:
            if end is not None:  # the workers stop sending at the end; then their last answers have a timeout
                await asyncio.wait(workers, timeout=max(0.0, end - self.clock.monotonic()))
            await self._finish(set(workers))
        except asyncio.CancelledError:
            await self._abandon(set(workers))
            raise

    async def _worker(self, end: float | None) -> None:
        stats, clock, limit = self.stats, self.clock, self.config.requests
        while True:
            now = clock.monotonic()
            if end is not None and now >= end:
                return
            if limit is not None and stats.sent >= limit:
                return
            stats.sent += 1
            await self._exchange(now)

    async def _finish(self, tasks: set[asyncio.Task]) -> None:
        """Once nothing more is to be sent, let requests in flight complete, up to one timeout; what is still
        out then is a timeout. (A request-count closed loop has only its per-request timeouts.)"""
        tasks = {t for t in tasks if not t.done()}
        if not tasks:
            return
        limit = None if self.schedule is None and self.config.duration is None else self.config.timeout + 1.0
        done, pending = await asyncio.wait(tasks, timeout=limit)
        for t in pending:
            t.cancel()
            self.stats.fail("timeout")
        if pending:
            await asyncio.wait(pending)

    async def _exchange(self, due: float) -> None:
        stats, clock = self.stats, self.clock
        stats.in_flight += 1
        # The timeout is a timer that cancels this task, not asyncio.wait_for: that wraps every answer in
        # one more future and one more trip round the event loop, which a load generator cannot afford.
        task = asyncio.current_task()
        timer = asyncio.get_running_loop().call_later(self.config.timeout, self._expire, task)
        sent = clock.monotonic()
        try:
            resp = await self.client.request_raw(self.host, self.port, self.request)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            stats.fail("timeout")
        except Timeout:
            stats.fail("timeout")
        except ConnectFailed:
            stats.fail("connect")
        except ConnectionLost:
            stats.fail("connection lost")
        except OSError:
            stats.fail("socket")
        else:
            done = clock.monotonic()
            # From when it was due, or from when it went if that was a hair early: never less than its service.
            stats.answer(resp.status, done - min(due, sent), done - sent)
        finally:
            timer.cancel()
            stats.in_flight -= 1

    def _expire(self, task: asyncio.Task) -> None:
        self._expired.add(task)
        task.cancel()

    # -- live progress
    async def _progress(self) -> None:
        poller = None
        last_t, last_sent, last_answered = self._start, 0, 0
        while True:
            await self.clock.sleep(self.config.interval)
            if self.replicas is not None and (poller is None or poller.done()):
                poller = asyncio.ensure_future(self._poll_replicas())
            now = self.clock.monotonic()
            s = self.stats
            dt = max(1e-9, now - last_t)
            elapsed = now - self._start
            target = self.schedule.rate_at(elapsed) if self.schedule is not None else None
            p50, p99 = recent_percentiles_ms(s.recent)
            s.recent = []
            snap = Snapshot(elapsed, s.sent, s.answered, s.errors, s.in_flight,
                            (s.sent - last_sent) / dt, (s.answered - last_answered) / dt, target,
                            p50, p99, self._replicas_text)
            last_t, last_sent, last_answered = now, s.sent, s.answered
            self._timeline.append({"t": round(elapsed, 3), "sent_rate": round(snap.sent_rate, 2),
                                   "answered_rate": round(snap.answered_rate, 2), "errors": snap.errors,
                                   "p50_ms": snap.p50_ms, "p99_ms": snap.p99_ms, "replicas": snap.replicas})
            if self.on_progress is not None:
                self.on_progress(snap)

    async def _poll_replicas(self) -> None:
        try:
            self._replicas_text = await asyncio.wait_for(self.replicas(), self.config.interval)
        except Exception:  # the display must never stop the run; the last known value stays
            pass
