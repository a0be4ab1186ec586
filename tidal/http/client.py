"""A pooled keep-alive HTTP/1.1 client on asyncio and httptools, for the gateway, the CLI and the load generator.

It tells apart the failures that matter for retries: `ConnectFailed` (nothing was
sent) and `ConnectionLost` with `response_started=False` (the peer closed before
answering; safe to retry an idempotent request elsewhere) from a failure after the
response began, which must not be retried.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque

import httptools


class ClientError(Exception):
    retryable = False


class ConnectFailed(ClientError):
    retryable = True


class ConnectionLost(ClientError):
    def __init__(self, message: str, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started
        self.retryable = not response_started


class Timeout(ClientError):
    pass


class ClientResponse:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k.lower() == key:
                return v.decode("latin-1")
        return None

    def json(self):
        import orjson
        return orjson.loads(self.body)


class _ClientConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.keep_alive = True
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_parts: list[bytes] = []
        self.started = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionLost(f"connection closed by peer: {exc or 'EOF'}", self.started))

    def data_received(self, data: bytes) -> None:
        self.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.closed = True
            self.transport.close()
            w = self.waiter
            if w is not None and not w.done():
                w.set_exception(ConnectionLost(f"malformed response: {exc}", True))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body_parts.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 100:  # interim response; the real one follows
            self._reset()
            return
        self.keep_alive = self.parser.should_keep_alive()
        parts = self.body_parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        resp = ClientResponse(status, self.headers, body)
        self._reset()
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(resp)

    def send(self, data: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.started = False
        self.transport.write(data)
        return self.waiter


def _expire(fut: asyncio.Future, host: str, port: int, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(Timeout(f"no response from {host}:{port} within {timeout}s"))


def build_request(method: str, host: str, path: str, body: bytes,
                  headers: list[tuple[str, str]] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers) if headers else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode("latin-1") + body)


class HttpClient:
    """Keep-alive connection pools keyed by (host, port)."""

    def __init__(self, *, connect_timeout: float = 2.0, max_idle_per_host: int = 256) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[tuple[str, int], deque[_ClientConnection]] = {}

    async def _connect(self, host: str, port: int) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_ClientConnection, host, port), self.connect_timeout)
        except asyncio.TimeoutError as exc:
            raise ConnectFailed(f"connect to {host}:{port} timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"connect to {host}:{port} failed: {exc.strerror or exc}") from exc
        return conn

    async def request_raw(self, host: str, port: int, data: bytes, timeout: float | None = None) -> ClientResponse:
        """Send pre-encoded request bytes; reuse a pooled connection, or open one."""
        idle = self._idle.get((host, port))
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            try:
                return await self._exchange(conn, host, port, data, timeout)
            except ConnectionLost as exc:
                if exc.response_started:
                    raise
                # A pooled connection the server had already closed: a fresh one is always safe.
                break
        return await self._exchange(await self._connect(host, port), host, port, data, timeout)

    async def _exchange(self, conn: _ClientConnection, host: str, port: int, data: bytes,
                        timeout: float | None) -> ClientResponse:
        timer = None
        try:
            fut = conn.send(data)
            # A timer on the loop rather than asyncio.wait_for: wait_for adds a future, a task
            # wake-up and callbacks to every request, which a proxy on the hot path feels.
            if timeout is not None:
                timer = asyncio.get_running_loop().call_later(timeout, _expire, fut, host, port, timeout)
            resp = await fut
        except BaseException:
            conn.closed = True
            conn.transport.close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if conn.keep_alive and not conn.closed:
            pool = self._idle.setdefault((host, port), deque())
            if len(pool) < self.max_idle_per_host:
                pool.append(conn)
                return resp
        conn.transport.close()
        return resp

    async def request(self, method: str, url_host: str, port: int, path: str, body: bytes = b"",
                      headers: list[tuple[str, str]] | None = None, timeout: float | None = None) -> ClientResponse:
        return await self.request_raw(url_host, port, build_request(method, f"{url_host}:{port}", path, body, headers),
                                      timeout)

    def close(self) -> None:
        for pool in self._idle.values():
            for c in pool:
                if not c.closed:
                    c.transport.close()
        self._idle.clear()
