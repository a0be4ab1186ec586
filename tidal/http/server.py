"""A small, fast HTTP/1.1 server on asyncio and httptools, shared by the model server, gateway and control plane.

Why not an ASGI framework: the model server's per-request budget is a few tens of
microseconds, and ASGI's scope/receive/send dance plus a router's middleware costs
more than the model. This keeps only what HTTP/1.1 needs: keep-alive, pipelining
in order, `Expect: 100-continue`, limits on the request line, headers and body
(counted as bytes arrive, so an oversized request is refused without buffering
it), an optional Host allow-list, cancellation when the client goes away, and a
graceful drain on stop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from functools import partial
from http import HTTPStatus
from typing import Awaitable, Callable, Union

import httptools
from pydantic import BaseModel, ConfigDict, Field

from tidal.http.hosts import HostAllowList

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 * 1024 * 1024
JSON = b"application/json"
# Bytes handed to the parser at once while a request's head is incomplete: the most a head can
# overshoot its limit before it is refused (httptools keeps an unfinished header line in memory).
_FEED = 8192


class HttpLimits(BaseModel):
    """Limits on a request's head, nginx's defaults (large_client_header_buffers 4 8k)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_request_line: int = Field(default=8192, ge=64, description="longest request target (URL); longer: 414")
    max_header_line: int = Field(default=8192, ge=64, description="longest header line; longer gets 431")
    max_header_bytes: int = Field(default=32768, ge=256, description="URL and header lines together; 431")
    max_headers: int = Field(default=100, ge=1, description="most header lines; more gets 431")


class Request:
    """One parsed request. `headers` keys are lower-case `str`; `path` is still URL-encoded."""

    __slots__ = ("method", "url", "path", "query", "headers", "body", "client", "_conn")

    def __init__(self, method: str, url: bytes, headers: dict[str, str], body: bytes, client: str, conn) -> None:
        self.method = method
        self.url = url
        q = url.find(b"?")
        if q >= 0:
            self.path = url[:q].decode("latin-1")
            self.query = url[q + 1:].decode("latin-1")
        else:
            self.path = url.decode("latin-1")
            self.query = ""
        self.headers = headers
        self.body = body
        self.client = client
        self._conn = conn

    @property
    def disconnected(self) -> bool:
        return self._conn.closed


class Response:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int = 200, body: bytes = b"", content_type: bytes = JSON,
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


Handler = Callable[[Request], Union[Response, Awaitable[Response]]]


def _status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = {499: "Client Closed Request"}.get(code, "Unknown")
    return f"HTTP/1.1 {code} {phrase}\r\n".encode()


_STATUS_LINES = {code: _status_line(code) for code in list(range(100, 600))}


def encode_response(resp: Response, keep_alive: bool) -> bytes:
    head = _STATUS_LINES.get(resp.status) or _status_line(resp.status)
    extra = b""
    if resp.headers:
        extra = "".join(f"{k}: {v}\r\n" for k, v in resp.headers).encode("latin-1")
    conn = b"" if keep_alive else b"Connection: close\r\n"
    return b"%sContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
        head, resp.content_type, len(resp.body), extra, conn, resp.body)


def error_response(status: int, message: str) -> Response:
    import orjson
    return Response(status, orjson.dumps({"error": message}))


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue in order, answer in order."""

    def __init__(self, server: "HttpServer") -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.client = ""
        self.queue: deque[tuple[Request, bool]] = deque()
        self.task: asyncio.Task | None = None
        self.busy = False
        self.last_active = 0.0
        # Plain ints on the hot path (a request's headers are checked one by one).
        self.max_url = server.limits.max_request_line
        self.max_line = server.limits.max_header_line
        self.max_head = server.limits.max_header_bytes
        self.max_count = server.limits.max_headers
        # Bytes fed to the parser since the current head began (an upper bound, see _feed).
        self.head_open = True
        self.head_fed = 0
        # Set by the first refused request: the connection answers what came before it, then closes.
        self.rejected = False
        self.failure: Response | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.head_size = 0  # exact: the URL and the header lines seen so far
        self.header_count = 0

    # -- asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if peer else ""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.last_active = self.server.loop.time()
        self.server.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.queue.clear()
        if self.task is not None and not self.task.done():
            # The client went away: stop working for it. The handler sees CancelledError. One loop
            # turn later, because the task may not have taken its first step yet (dispatched from the
            # previous pipelined answer in this same turn): cancelled then, it would never run, and a
            # handler already started eagerly (tidal/server/app.py's `eager`) would never be told.
            self.server.loop.call_soon(self.task.cancel)
            self.server.cancelled_requests += 1

    def data_received(self, data: bytes) -> None:
        self.last_active = self.server.loop.time()
        if self.closed or self.rejected:
            return
        try:
            if len(data) <= _FEED:
                self.parser.feed_data(data)
                if self.head_open and not self.rejected:
                    self.head_fed += len(data)  # as in _feed
                    if self.head_fed > self.max_head + _FEED:
                        self._head_never_ends()
                return
            # Feed a large chunk in slices so a head that never ends is refused after at most
            # max_header_bytes + 2 * _FEED bytes, not after the whole chunk (or stream) is buffered.
            view = memoryview(data)
            for start in range(0, len(data), _FEED):
                self._feed(view[start:start + _FEED])
                if self.rejected or self.closed:
                    return
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.rejected:
                self._fail(400, f"malformed HTTP request: {exc}")

    def _feed(self, piece) -> None:
        self.parser.feed_data(piece)
        if self.head_open and not self.rejected:
            # The head began before or inside this piece, so at most len(piece) of its bytes are new:
            # an upper bound that overshoots by under one piece, hence the slack before refusing.
            self.head_fed += len(piece)
            if self.head_fed > self.max_head + _FEED:
                self._head_never_ends()

    def _head_never_ends(self) -> None:
        # Not the URL: on_url sees it piece by piece and refuses it at max_url.
        self._fail(431, f"request headers larger than {self.max_head} bytes")

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        if self.rejected:
            return
        if len(self.url) + len(url) > self.max_url:
            self._fail(414, f"request line longer than {self.max_url} bytes")
            return
        self.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        line = len(name) + len(value) + 4  # "name: value\r\n"
        self.header_count += 1
        self.head_size += line
        if line > self.max_line or self.head_size > self.max_head or self.header_count > self.max_count:
            self._head_too_large(line)
            return
        key = name.decode("latin-1").lower()
        self.headers[key] = value.decode("latin-1")
        if key == "content-length":
            try:
                too_big = int(value) > self.server.max_body
            except ValueError:
                too_big = False
            if too_big:
                self._fail(413, f"request body larger than the limit of {self.server.max_body} bytes")

    def _head_too_large(self, line: int) -> None:
        if line > self.max_line:
            self._fail(431, f"a request header line is longer than {self.max_line} bytes")
        elif self.header_count > self.max_count:
            self._fail(431, f"more than {self.max_count} request headers")
        else:
            self._fail(431, f"request headers larger than {self.max_head} bytes")

    def on_headers_complete(self) -> None:
        self.head_open = False
        if self.rejected:
            return
        hosts = self.server.allowed_hosts
        if hosts is not None and not hosts.allows(self.headers.get("host")):
            self._fail(421, f"this server does not serve the host {self.headers['host'][:100]!r}")
            return
        if self.headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_chunk_header(self) -> None:
        # After the last chunk come trailers, header lines httptools buffers like the head's: count them
        # as head bytes until body bytes show this was a data chunk.
        self.head_open = True

    def on_body(self, body: bytes) -> None:
        self.head_fed = 0
        if self.rejected:
            return
        self.body_size += len(body)
        if self.body_size > self.server.max_body:
            self._fail(413, f"request body larger than the limit of {self.server.max_body} bytes")
            return
        self.body_parts.append(body)

    def on_message_complete(self) -> None:
        # The next pipelined request's head starts here.
        self.head_open = True
        self.head_fed = 0
        if self.rejected or self.closed:
            return
        parts = self.body_parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        req = Request(self.parser.get_method().decode("latin-1"), self.url, self.headers, body, self.client, self)
        keep_alive = self.parser.should_keep_alive() and not self.server.draining
        if self.busy:
            self.queue.append((req, keep_alive))
        else:
            self._dispatch(req, keep_alive)

    # -- dispatch
    def _dispatch(self, req: Request, keep_alive: bool) -> None:
        self.busy = True
        try:
            result = self.server.handler(req)
        except Exception as exc:  # a handler bug must not take the connection or server down
            log.error("handler failed for %s %s", req.method, req.path[:200], exc_info=True)
            result = error_response(500, f"internal error: {type(exc).__name__}")
        if type(result) is Response:
            self._write(result, keep_alive)
        else:
            self.server.in_flight += 1
            task = self.server.loop.create_task(self._await(result, keep_alive, req))
            self.task = task
            # Counted down by a done callback, not in _await: a task cancelled before its first step
            # (the client reset the connection right after the previous pipelined answer) never runs
            # its body, and a `finally` there would leave the request counted in flight forever.
            task.add_done_callback(partial(self._task_done, result))

    async def _await(self, awaitable, keep_alive: bool, req: Request) -> None:
        try:
            resp = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("handler failed for %s %s", req.method, req.path[:200], exc_info=True)
            resp = error_response(500, f"internal error: {type(exc).__name__}")
        if not self.closed:
            self._write(resp, keep_alive and not self.server.draining)

    def _task_done(self, awaitable, task: asyncio.Task) -> None:
        self.server.in_flight -= 1
        # _write may already have dispatched the next pipelined request as a new task: keep that one.
        if self.task is task:
            self.task = None
        if task.cancelled():
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never started: no "never awaited" warning
            if not self.closed:
                # Cancelled from inside (not by the client leaving): answer so the pipeline moves on.
                self._write(error_response(503, "the request was cancelled"), False)
        self.server._maybe_drained()

    def _write(self, resp: Response, keep_alive: bool) -> None:
        if self.closed:
            return
        self.transport.write(encode_response(resp, keep_alive))
        self.last_active = self.server.loop.time()
        if not keep_alive:
            self.closed = True
            self.transport.close()
            self.busy = False
            return
        if self.queue:
            req, ka = self.queue.popleft()
            self._dispatch(req, ka)
        else:
            self.busy = False
            if self.failure is not None:
                self._write(self.failure, False)

    def _fail(self, status: int, message: str) -> None:
        if self.rejected:  # the first refusal is the answer; the rest of the stream is ignored
            return
        self.rejected = True
        if not self.closed and self.transport is not None:
            # One line, no traceback: a client's mistake is not the server's failure.
            log.info("refused a request from %s: %d %s", self.client, status, message, extra={"tidal_fold": True})
            if self.busy:
                # Requests pipelined before this one are still being answered: they go first, in order.
                self.failure = error_response(status, message)
                self.transport.pause_reading()
                return
            self.transport.write(encode_response(error_response(status, message), False))
            self.closed = True
            self.transport.close()

    def close_if_idle(self) -> bool:
        if not self.busy and not self.closed:
            self.closed = True
            self.transport.close()
            return True
        return False


class HttpServer:
    """Serve `handler` on host:port. Build, then `await start()`; `await stop()` drains.

    `limits` bound each request's head (HttpLimits, nginx's defaults); `allowed_hosts`, when given,
    answers 421 to a Host not on it (HostAllowList).
    """

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0, *,
                 max_body: int = DEFAULT_MAX_BODY, idle_timeout: float = 75.0,
                 sock: socket.socket | None = None, limits: HttpLimits | None = None,
                 allowed_hosts: HostAllowList | None = None) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_body = max_body
        self.limits = limits or HttpLimits()
        # None answers any Host; a list answers 421 to a name not on it (see tidal/http/hosts.py).
        self.allowed_hosts = allowed_hosts
        self.idle_timeout = idle_timeout
        self.sock = sock
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self.cancelled_requests = 0
        self.draining = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._drained: asyncio.Event | None = None
        self._reaper: asyncio.Task | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        if self.sock is not None:
            self._server = await self.loop.create_server(lambda: _Connection(self), sock=self.sock, backlog=4096)
        else:
            self._server = await self.loop.create_server(lambda: _Connection(self), self.host, self.port,
                                                         reuse_address=True, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        self._reaper = self.loop.create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.idle_timeout))
            cutoff = self.loop.time() - self.idle_timeout
            for conn in list(self.connections):
                if not conn.busy and conn.last_active < cutoff:
                    conn.close_if_idle()

    def _maybe_drained(self) -> None:
        if self.draining and self.in_flight == 0 and self._drained is not None:
            self._drained.set()

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish (up to `drain_timeout`), then close."""
        if self._server is None:
            return
        self.draining = True
        self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        self._maybe_drained()
        if self.in_flight:
            try:
                await asyncio.wait_for(self._drained.wait(), drain_timeout)
            except asyncio.TimeoutError:
                log.warning("drain timed out with %d requests in flight", self.in_flight)
        for conn in list(self.connections):
            if not conn.closed:
                conn.closed = True
                conn.transport.close()
        if self._reaper is not None:
            self._reaper.cancel()
        await self._server.wait_closed()
        self._server = None
