"""The gateway over several cores: worker processes that share its port, one route table, one view of the metrics.

The supervised gateway process (`tidal.gateway.process`) is the coordinator: it serves
requests like any worker and starts `workers - 1` more, each with its own listening socket
bound to the same address with SO_REUSEPORT, so the kernel spreads new connections over
them. Each worker is tied to the coordinator by one Unix socket pair, on which only the
coordinator asks (length-prefixed JSON frames, one answer per question):

- `routes`: the whole route table. The coordinator sends it to every worker after it
  applied and saved a `PUT /-/control/routes`, and answers the control plane only once
  every worker has it; a worker started later gets the current table before it serves.
  One ordered channel per worker needs no generation numbers and no file watching.
- `snapshot`: a worker's counters (request counts, latency histograms, windowed counters,
  queue and in-flight gauges, release samples when asked). The coordinator merges them
  with its own: counts add up, histograms add up bucket by bucket (so p90 is read from
  the merged histogram, never averaged), gauges add up.

A worker sends every `/-/` path but `/-/healthz` to the coordinator's private admin port
(127.0.0.1), so the control plane sees one gateway whichever worker its connection lands
on. A worker that dies is started again (with a growing delay if it keeps dying); a worker
whose coordinator is gone (its channel closes) drains its requests and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from typing import Callable

import orjson

from tidal.gateway.config import GatewaySettings, ServiceConfig
from tidal.gateway.metrics import RequestMetrics
from tidal.gateway.window import WindowedCounter

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024
CALL_TIMEOUT_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 40.0
# A worker that dies is started again after this, doubling with each death in a row (up to 32 times);
# one that lived `STEADY_SECONDS` starts the count again.
RESTART_DELAY_SECONDS = 0.2
STEADY_SECONDS = 10.0


# -- frames
def encode_frame(msg: dict) -> bytes:
    body = orjson.dumps(msg)
    return _HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> dict | None:
    """The next frame, or None when the other side closed the channel."""
    try:
        head = await reader.readexactly(_HEADER.size)
        (n,) = _HEADER.unpack(head)
        if n > MAX_FRAME:
            raise ValueError(f"frame of {n} bytes")
        return orjson.loads(await reader.readexactly(n))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


# -- one process's counters, on the wire and merged
def _metrics_out(m: RequestMetrics) -> list:
    return [m.by_class, m.buckets, m.latency_sum, m.in_flight, m.retries]


def _metrics_add(into: RequestMetrics, data: list) -> None:
    by_class, buckets, latency_sum, in_flight, retries = data
    into.by_class = [a + b for a, b in zip(into.by_class, by_class)]
    into.buckets = [a + b for a, b in zip(into.buckets, buckets)]
    into.latency_sum += latency_sum
    into.in_flight += in_flight
    into.retries += retries


def _window_out(w: WindowedCounter) -> list:
    return [w.started, w._epoch, w._count, w._errors, w._hist, w._busy]


def _window_add(into: WindowedCounter, data: list) -> None:
    """Add another process's windowed counter: buckets of the same period add up (the monotonic clock is the
    machine's, so every process numbers its buckets alike); of two different periods the newer one stays."""
    started, epoch, count, errors, hist, busy = data
    into.started = min(into.started, started)
    if len(epoch) != into._n:
        raise ValueError("windowed counters of different sizes")
    for i, e in enumerate(epoch):
        mine = into._epoch[i]
        if e < 0 or e < mine:
            continue
        if e > mine:
            into._epoch[i] = e
            into._count[i], into._errors[i], into._busy[i] = count[i], errors[i], busy[i]
            into._hist[i] = list(hist[i]) if hist[i] is not None else None
            continue
        into._count[i] += count[i]
        into._errors[i] += errors[i]
        into._busy[i] += busy[i]
        if hist[i] is not None:
            h = into._hist[i]
            into._hist[i] = list(hist[i]) if h is None else [a + b for a, b in zip(h, hist[i])]


def snapshot(gateway, release_window: float | None = None) -> dict:
    """This process's counters, per service (and its releases' samples of the last `release_window` seconds)."""
    now = gateway._clock.monotonic()
    out = {}
    for name, svc in gateway._services.items():
        entry = {"metrics": _metrics_out(svc.metrics), "window": _window_out(svc.window),
                 "queued": svc.queue.waiting,
                 "replicas": {rid: [_metrics_out(r.metrics), r.outstanding, r.ejected_until]
                              for rid, r in svc.replicas.items()}}
        if release_window is not None and svc.releases is not None:
            since = now - release_window
            entry["releases"] = {rel: [list(s) for s in counts.samples if s[0] >= since]
                                 for rel, counts in svc.releases._counts.items()}
        out[name] = entry
    return out


def merge(view, snapshots: list[dict]) -> None:
    """Make `view` (a Gateway that serves nothing, with the same routes) count what all the snapshots count."""
    for name, svc in view._services.items():
        for snap in snapshots:
            entry = snap.get(name)
            if entry is None:  # that process has not got this service yet (a route update in between)
                continue
            _metrics_add(svc.metrics, entry["metrics"])
            _window_add(svc.window, entry["window"])
            svc.queue.waiting += entry["queued"]
            for rid, (metrics, outstanding, ejected_until) in entry["replicas"].items():
                r = svc.replicas.get(rid)
                if r is not None:
                    _metrics_add(r.metrics, metrics)
                    r.outstanding += outstanding
                    r.ejected_until = max(r.ejected_until, ejected_until)
            if svc.releases is not None:
                for rel, samples in entry.get("releases", {}).items():
                    counts = svc.releases._counts.get(rel)
                    if counts is not None:
                        counts.samples.extend(tuple(s[:3]) + (tuple(s[3]),) for s in samples)
        if svc.releases is not None:
            for counts in svc.releases._counts.values():
                counts.samples = deque(sorted(counts.samples), maxlen=counts.samples.maxlen)


# -- the coordinator's side
def reuseport_socket(listener: socket.socket) -> socket.socket:
    """A listening socket on `listener`'s address, in its SO_REUSEPORT group (OSError when it is not in one)."""
    sock = socket.socket(listener.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(listener.getsockname()[:2])
        sock.listen(4096)
    except OSError:
        sock.close()
        raise
    return sock


class _Worker:
    __slots__ = ("index", "proc", "reader", "writer", "lock", "started", "deaths")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()
        self.started = 0.0
        self.deaths = 0  # in a row


class WorkerPool:
    """The coordinator's workers: `await start()`, then `broadcast_routes()` and `snapshots()`; `await stop()`."""

    def __init__(self, count: int, listener: socket.socket, routes: Callable[[], list[ServiceConfig]], *,
                 admin_port: int, token_file: str, host: str, python: str = sys.executable,
                 edge: tuple[str, int, GatewaySettings] | None = None) -> None:
        # `edge`: (binary, threads, settings): one `tidal-edge` process serving the listener itself, in the
        # place of Python workers (see tidal.gateway.edge); the coordinator then serves no public traffic.
        self.count = count  # besides the coordinator
        self._edge = edge
        self._listener = listener
        self._routes = routes
        self._admin_port = admin_port
        self._token_file = token_file
        self._host = host
        self._python = python
        self._workers = [_Worker(i + 1) for i in range(count)]
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None and w.proc.poll() is None]

    async def start(self) -> None:
        for w in self._workers:
            await self._spawn(w)
            self._tasks.append(asyncio.get_running_loop().create_task(self._watch(w)))

    async def _spawn(self, w: _Worker) -> None:
        # The edge accepts on the listener itself (the coordinator keeps it open and never accepts on it, so
        # connections wait in its queue while the edge restarts); a Python worker joins the port's group.
        sock = self._listener.dup() if self._edge is not None else reuseport_socket(self._listener)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env.pop("TIDAL_GATEWAY_HOME", None)  # the coordinator's marker: a worker is the coordinator's, not the home's
        if self._edge is not None:
            from tidal.gateway.edge import edge_argv
            binary, threads, settings = self._edge
            argv = edge_argv(binary, listen_fd=sock.fileno(), channel_fd=theirs.fileno(), admin_port=self._admin_port,
                             threads=threads, index=w.index, settings=settings)
        else:
            argv = [self._python, "-P", "-m", "tidal.gateway.worker", "--listen-fd", str(sock.fileno()),
                    "--channel-fd", str(theirs.fileno()), "--admin-port", str(self._admin_port),
                    "--token-file", self._token_file, "--host", self._host, "--index", str(w.index)]
        try:
            w.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env,
                                      pass_fds=(sock.fileno(), theirs.fileno()), close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            sock.close()
            theirs.close()
        w.started = time.monotonic()
        w.reader, w.writer = await asyncio.open_unix_connection(sock=ours)
        # Its first frame: the table it serves from its first request.
        w.writer.write(encode_frame({"op": "routes", "services": self._route_docs()}))
        log.info("gateway worker %d started (pid %d)", w.index, w.proc.pid)

    def _route_docs(self) -> list[dict]:
        return [s.model_dump(mode="json") for s in self._routes()]

    async def _watch(self, w: _Worker) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            status = await loop.run_in_executor(None, w.proc.wait)
            if self._stopping:
                return
            lived = time.monotonic() - w.started
            w.deaths = 1 if lived >= STEADY_SECONDS else w.deaths + 1
            delay = RESTART_DELAY_SECONDS * 2 ** min(w.deaths - 1, 5)
            log.warning("gateway worker %d (pid %d) exited with status %s after %.1fs; starting it again in %.1fs",
                        w.index, w.proc.pid, status, lived, delay)
            if w.writer is not None:
                w.writer.close()
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn(w)
            except OSError as exc:  # e.g. the port's group is gone: try again after the next delay
                log.error("cannot start gateway worker %d: %s", w.index, exc.strerror or exc)
                w.started = time.monotonic()

    async def _call(self, w: _Worker, msg: dict) -> dict | None:
        """Ask one worker; None when it is not there (dead, restarting) or does not answer in time."""
        if w.proc is None or w.proc.poll() is not None or w.writer is None:
            return None
        async with w.lock:
            try:
                w.writer.write(encode_frame(msg))
                reply = await asyncio.wait_for(read_frame(w.reader), CALL_TIMEOUT_SECONDS)
            except (OSError, asyncio.TimeoutError) as exc:
                log.warning("gateway worker %d did not answer %s: %s", w.index, msg.get("op"), exc)
                return None
        return reply

    async def broadcast_routes(self) -> int:
        """Send every worker the current table; how many have it (a worker that misses it gets it on restart)."""
        msg = {"op": "routes", "services": self._route_docs()}
        replies = await asyncio.gather(*(self._call(w, msg) for w in self._workers))
        for w, r in zip(self._workers, replies):
            if r is not None and not r.get("ok"):
                log.error("gateway worker %d refused the routes: %s", w.index, r.get("error"))
        return sum(1 for r in replies if r is not None and r.get("ok"))

    async def snapshots(self, release_window: float | None = None) -> list[dict]:
        msg = {"op": "snapshot", "release_window": release_window}
        replies = await asyncio.gather(*(self._call(w, msg) for w in self._workers))
        return [r["services"] for r in replies if r is not None and "services" in r]

    async def stop(self) -> None:
        """SIGTERM every worker (each drains its requests), wait for them, kill the ones that do not end."""
        self._stopping = True
        for w in self._workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for w in self._workers:
            if w.proc is None:
                continue
            try:
                await loop.run_in_executor(None, w.proc.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("gateway worker %d did not stop in time: killing it", w.index)
                w.proc.kill()
                await loop.run_in_executor(None, w.proc.wait)
            if w.writer is not None:
                w.writer.close()
        for t in self._tasks:
            t.cancel()
