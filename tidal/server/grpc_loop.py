"""gRPC on the serving loop: unary calls over tidal/http/h2.py, routed to the services grpcio's server runs.

Why: with grpcio's Python server an empty call cost about 0.24 ms of CPU, most of it
handing the call between grpcio's threads, its own poller and the event loop; a whole
REST predict costs less. Here a call is parsed, run and answered on the loop the REST
server uses, and a call that finishes without waiting (a small model, an idle batcher)
never becomes a Task (tidal/server/app.py's `eager`), as a REST request does.

The wire follows gRPC's HTTP/2 protocol (PROTOCOL-HTTP2.md): a length-prefixed message,
gzip or deflate when the client compresses, `grpc-timeout` as a deadline that cancels
the work, grpcio's limits and words for a message over --max_body_bytes and for an
unknown method, and trailers carrying grpc-status and a percent-encoded grpc-message.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from types import CoroutineType

from tidal.errors import Code
from tidal.http.h2 import H2Server
from tidal.http.h2frames import Reply, Stream, literal
from tidal.server.app import eager
from tidal.server.grpc_api import GRPC_CODE, GrpcBindError, Route, RpcFault


_PREFIX = struct.Struct(">BI")
STATUS = {code: GRPC_CODE[code].value[0] for code in Code}
HEAD = b"\x88" + literal(b"content-type", b"application/grpc")  # :status 200 (static table 8)
OK = literal(b"grpc-status", b"0")
_TIMEOUT_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9}


def _percent(message: str) -> bytes:
    """grpc-message's encoding: UTF-8, with '%' and bytes outside printable ASCII as %XX."""
    raw = message.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def status_reply(code: Code, message: str) -> Reply:
    """A Trailers-Only response: the status in the one header block."""
    return Reply(HEAD + literal(b"grpc-status", str(STATUS[code]).encode()) +
                 literal(b"grpc-message", _percent(message)))


def http_reply(status: int, message: str) -> Reply:
    """Not a gRPC request at all: an HTTP status (gRPC's HTTP/2 protocol: 415 for a wrong content-type)."""
    return Reply(literal(b":status", str(status).encode()) + literal(b"content-type", b"text/plain"),
                 message.encode())


def grpc_timeout(value: bytes | None) -> float | None:
    """`grpc-timeout` (up to 8 digits and a unit) in seconds; None when absent or malformed."""
    if not value or len(value) > 9:
        return None
    unit = _TIMEOUT_UNITS.get(value[-1])
    digits = value[:-1]
    if unit is None or not digits.isdigit():
        return None
    return int(digits) * unit


class GrpcOnLoop:
    """The gRPC half of the on-loop server: an HTTP/2 request in, its route's call, a gRPC response out."""

    def __init__(self, routes: dict[bytes, Route], max_message_bytes: int, large) -> None:
        self.routes = routes
        self.max_message_bytes = max_message_bytes
        self.large = large  # tidal.server.large.LargeBodies: big messages are parsed off the loop

    def handle(self, stream: Stream):
        headers = stream.headers
        route = self.routes.get(headers.get(b":path"))
        content_type = headers.get(b"content-type", b"")
        if not content_type.startswith(b"application/grpc"):
            return http_reply(415, "gRPC requests have content-type application/grpc")
        if headers.get(b":method") != b"POST":
            return http_reply(405, "gRPC requests are POSTs")
        if route is None:
            return status_reply(Code.UNIMPLEMENTED, "Method not found!")
        body = stream.body[0] if len(stream.body) == 1 else b"".join(stream.body)
        if len(body) < 5:
            return status_reply(Code.INTERNAL, "the request has no complete message")
        compressed, length = _PREFIX.unpack_from(body)
        if len(body) != 5 + length:
            return status_reply(Code.INTERNAL, "the request is not one length-prefixed message")
        data = memoryview(body)[5:] if length > 65536 else body[5:]
        if compressed:
            data = self._decompress(headers.get(b"grpc-encoding", b"identity"), data)
            if type(data) is Reply:
                return data
        if len(data) > self.max_message_bytes:
            return self._too_large_reply(len(data))
        timeout = grpc_timeout(headers.get(b"grpc-timeout"))
        if self.large.is_large(len(data)):
            return self._slow(route, data, timeout)
        try:
            result = route.call(route.parse(data))
            if type(result) is CoroutineType:
                result = eager(result)
        except RpcFault as exc:
            return status_reply(exc.fault.code, exc.fault.message)
        if type(result) is CoroutineType:
            return self._pending(route, result, timeout)
        return self._ok(route, result)

    def _decompress(self, encoding: bytes, data):
        wbits = {b"gzip": 31, b"deflate": 15}.get(encoding)
        if wbits is None:
            return status_reply(Code.UNIMPLEMENTED if encoding != b"identity" else Code.INTERNAL,
                                f"the message is compressed with {encoding.decode('latin-1')[:40]!r}, which this "
                                "server does not accept (gzip, deflate)")
        inflate = zlib.decompressobj(wbits)
        try:
            out = inflate.decompress(data, self.max_message_bytes + 1)
        except zlib.error as exc:
            return status_reply(Code.INTERNAL, f"the compressed message does not decompress: {exc}")
        if len(out) > self.max_message_bytes:
            return self._too_large_reply(len(out), at_least=True)
        return out

    def _too_large_reply(self, size: int, at_least: bool = False) -> Reply:
        return status_reply(Code.RESOURCE_EXHAUSTED, f"Received message larger than max ({'over ' if at_least else ''}"
                                                     f"{size} vs. {self.max_message_bytes})")

    def too_large(self, stream: Stream) -> Reply:
        """A request whose body passed the limit before it ended (the rest is not read)."""
        first = stream.body[0] if stream.body else b""
        size = _PREFIX.unpack_from(first)[1] if len(first) >= 5 else stream.size
        return self._too_large_reply(size)

    @staticmethod
    def failed(stream: Stream) -> Reply:
        return status_reply(Code.UNKNOWN, "Exception calling application: see the server log")

    @staticmethod
    def _ok(route: Route, response) -> Reply:
        message = route.serialize(response)
        return Reply(HEAD, _PREFIX.pack(0, len(message)) + message, OK)

    async def _pending(self, route: Route, pending, timeout: float | None) -> Reply:
        """A call that waits (a batch, a large tensor): finished in a Task, cancelled at its deadline."""
        try:
            if timeout is None:
                response = await pending
            else:
                async with asyncio.timeout(timeout):
                    response = await pending
        except RpcFault as exc:
            return status_reply(exc.fault.code, exc.fault.message)
        except TimeoutError:
            return status_reply(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return self._ok(route, response)

    async def _slow(self, route: Route, data, timeout: float | None) -> Reply:
        """A large message: parsed in a worker thread, so the loop keeps answering the others meanwhile."""
        request = await self.large.run(route.parse, data)
        del data
        try:
            pending = route.call(request)
        except RpcFault as exc:
            return status_reply(exc.fault.code, exc.fault.message)
        if type(pending) is not CoroutineType:
            return self._ok(route, pending)
        return await self._pending(route, pending, timeout)


async def start_on_loop(server, address: str) -> H2Server:
    """Serve `server`'s (a grpc_server.GrpcServer) routes over HTTP/2 on the running loop; GrpcBindError if the port
    cannot be taken. Its grpcio-only settings (threads, channel arguments) do not apply (tfs_flags.grpc_engine)."""
    grpc_side = GrpcOnLoop(server.routes(), server.max_message_bytes, server.adapter.plane.large)
    h2 = H2Server(grpc_side.handle, grpc_side.too_large, grpc_side.failed, server.host, server.requested_port,
                  max_body=server.max_message_bytes + 5)
    try:
        await h2.start()
    except OSError as exc:
        raise GrpcBindError(f"cannot listen on {address} for gRPC (in use or not an address of this machine: "
                            f"{exc.strerror or exc})") from None
    return h2

