"""A small, fast HTTP/1.1 server on asyncio and httptools, shared by the model server, gateway and control plane.

Why not an ASGI framework: the model server's per-request budget is a few tens of
microseconds, and ASGI's scope/receive/send dance plus a router's middleware costs
more than the model. This keeps only what HTTP/1.1 needs: keep-alive, pipelining
in order, `Expect: 100-continue`, a body size limit, cancellation when the client
goes away, and a graceful drain on stop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from http import HTTPStatus
from typing import Awaitable, Callable, Union

import httptools

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 * 1024 * 1024
JSON = b"application/json"


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
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.rejected = False

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
            # The client went away: stop working for it. The handler sees CancelledError.
            self.task.cancel()
            self.server.cancelled_requests += 1

    def data_received(self, data: bytes) -> None:
        self.last_active = self.server.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.rejected:
                self._fail(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        self.headers[key] = value.decode("latin-1")
        if key == "content-length":
            try:
                too_big = int(value) > self.server.max_body
            except ValueError:
                too_big = False
            if too_big:
                self._fail(413, f"request body larger than the limit of {self.server.max_body} bytes")

    def on_headers_complete(self) -> None:
        if self.rejected:
            return
        if self.headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.body_size += len(body)
        if self.body_size > self.server.max_body:
            self._fail(413, f"request body larger than the limit of {self.server.max_body} bytes")
            return
        self.body_parts.append(body)

    def on_message_complete(self) -> None:
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
            log.exception("handler failed for %s %s", req.method, req.path)
            result = error_response(500, f"internal error: {type(exc).__name__}")
        if type(result) is Response:
            self._write(result, keep_alive)
        else:
            self.server.in_flight += 1
            self.task = self.server.loop.create_task(self._await(result, keep_alive))

    async def _await(self, awaitable, keep_alive: bool) -> None:
        try:
            try:
                resp = await awaitable
            except asyncio.CancelledError:
                return
            except Exception as exc:
                log.exception("handler failed")
                resp = error_response(500, f"internal error: {type(exc).__name__}")
            if not self.closed:
                self._write(resp, keep_alive and not self.server.draining)
        finally:
            self.server.in_flight -= 1
            # _write may already have dispatched the next pipelined request as a new task: keep that one.
            if self.task is asyncio.current_task():
                self.task = None
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

    def _fail(self, status: int, message: str) -> None:
        self.rejected = True
        if not self.closed and self.transport is not None:
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
    """Serve `handler` on host:port. Build, then `await start()`; `await stop()` drains."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0, *,
                 max_body: int = DEFAULT_MAX_BODY, idle_timeout: float = 75.0,
                 sock: socket.socket | None = None) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_body = max_body
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
