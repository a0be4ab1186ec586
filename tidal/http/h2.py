"""A small HTTP/2 server on asyncio for request/response exchanges (what unary gRPC needs); HPACK from `hpack`.

Why not h2's state machine: measured on this project's benchmark, h2 spends about 165 us of
CPU framing one gRPC call (its per-frame validation, stream state tables and logging calls),
more than the whole REST request it should match. This keeps only what a server answering
complete requests needs (RFC 9113): the preface and SETTINGS, HEADERS with CONTINUATION and
padding, DATA with flow control both ways, PING, RST_STREAM (cancels the request's work),
WINDOW_UPDATE and GOAWAY (a graceful drain on stop). Header blocks are decoded by `hpack`'s
Decoder; a block that only refers to table entries (what a client repeats on every call) is
decoded once per connection and then looked up. Responses use literal header fields without
indexing, so this side keeps no encoder table.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Callable

import hpack
from hpack import HPACKError

from tidal.http.h2frames import (
    ACK, COMPRESSION_ERROR, CONNECTION_WINDOW, CONTINUATION, DATA, DEFAULT_WINDOW, ENABLE_PUSH, END_HEADERS,
    END_STREAM, FLOW_CONTROL_ERROR, FRAME_SIZE, FRAME_SIZE_ERROR, GOAWAY, HEADER_LIST_SIZE, HEADERS,
    INITIAL_WINDOW_SIZE, INTERNAL_ERROR, MAX_CONCURRENT_STREAMS, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE, MAX_STREAMS,
    NO_ERROR, PADDED, PING, PREFACE, PRIORITY, PRIORITY_FLAG, PROTOCOL_ERROR, PUSH_PROMISE, REFUSED_STREAM,
    RST_STREAM, SETTINGS, STREAM_CLOSED, STREAM_WINDOW, WINDOW_UPDATE, H2Error, Handler, Reply, Stream, FRAME_HEAD,
    MAX_WINDOW, U32, frame,
)

log = logging.getLogger(__name__)

class H2Connection(asyncio.Protocol):
    """One client connection. The server's `handler(stream)` answers each complete request."""

    def __init__(self, server: "H2Server") -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.parts: list[bytes] = []  # bytes of an incomplete frame (a large DATA frame arrives in many reads)
        self.parts_size = 0
        self.need = 0  # bytes the incomplete frame needs in all
        self.preface = False
        self.closed = False
        self.goaway_sent = False
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self.decoder = hpack.Decoder(max_header_list_size=HEADER_LIST_SIZE)
        self.blocks: dict[bytes, dict[bytes, bytes]] = {}  # header block -> fields, while the table is unchanged
        self.continuing: tuple[int, int, list[bytes]] | None = None  # (stream, flags, fragments) of a header block
        self.send_window = DEFAULT_WINDOW
        self.peer_window = DEFAULT_WINDOW  # initial send window of new streams (the peer's SETTINGS)
        self.peer_frame = 16384
        self.recv_unacked = 0
        self.blocked: dict[int, Stream] = {}  # streams waiting for window to send the rest of their body
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.client = ""

    # -- asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if peer else ""
        settings = b"".join(struct.pack(">HI", k, v) for k, v in (
            (MAX_CONCURRENT_STREAMS, MAX_STREAMS), (INITIAL_WINDOW_SIZE, STREAM_WINDOW), (MAX_FRAME_SIZE, FRAME_SIZE),
            (MAX_HEADER_LIST_SIZE, HEADER_LIST_SIZE), (ENABLE_PUSH, 0)))
        transport.write(frame(SETTINGS, 0, 0, settings) +
                        frame(WINDOW_UPDATE, 0, 0, U32.pack(CONNECTION_WINDOW - DEFAULT_WINDOW)))
        self.server.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for stream in self.streams.values():
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()  # the client went away: stop working for it
        self.streams.clear()
        self.blocked.clear()
        self.server.maybe_drained()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._receive(data)
        except H2Error as exc:
            log.info("closed an HTTP/2 connection from %s: %s", self.client, exc, extra={"tidal_fold": True})
            self._goaway(exc.code, str(exc))
        except HPACKError as exc:
            log.info("closed an HTTP/2 connection from %s: bad header block (%s)", self.client, exc,
                     extra={"tidal_fold": True})
            self._goaway(COMPRESSION_ERROR, "bad header block")
        except Exception:  # a bug must not take the server down: this connection ends, the others go on
            log.error("HTTP/2 connection from %s failed", self.client, exc_info=True)
            self._goaway(INTERNAL_ERROR, "internal error")
        self.flush()

    def flush_soon(self) -> None:
        """Write what is queued once the loop has run the other callbacks ready now: the answers of a batch that
        finishes together leave in one write."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.server.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out and not self.closed:
            out = self.out
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _goaway(self, code: int, message: str) -> None:
        if self.closed:
            return
        self.out.append(frame(GOAWAY, 0, 0, U32.pack(self.last_stream) + U32.pack(code) + message.encode()[:200]))
        self.flush()
        self.closed = True
        self.transport.close()

    # -- frames in
    def _receive(self, data: bytes) -> None:
        if self.parts:
            # Joined only once the frame is complete: a megabyte frame arriving in 64 KiB reads is copied once.
            self.parts.append(data)
            self.parts_size += len(data)
            if self.parts_size < self.need:
                return
            data = b"".join(self.parts)
            self.parts.clear()
        buf = self.buf + data if self.buf else data
        pos = 0
        if not self.preface:
            if len(buf) < 24:
                if not PREFACE.startswith(buf):
                    raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface (this port speaks gRPC)")
                self.buf = buf
                return
            if buf[:24] != PREFACE:
                raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface (this port speaks gRPC)")
            self.preface = True
            pos = 24
        end = len(buf)
        unpack = FRAME_HEAD.unpack_from
        while end - pos >= 9:
            hi, lo, kind, flags, sid = unpack(buf, pos)
            length = (hi << 8) | lo
            if length > FRAME_SIZE:
                raise H2Error(FRAME_SIZE_ERROR, f"a frame of {length} bytes, above the {FRAME_SIZE} allowed")
            if end - pos - 9 < length:
                if length > 65536:
                    self.parts = [buf[pos:]]
                    self.parts_size = end - pos
                    self.need = 9 + length
                    self.buf = b""
                    return
                break
            payload = buf[pos + 9:pos + 9 + length]
            pos += 9 + length
            self._frame(kind, flags, sid & 0x7FFFFFFF, payload)
            if self.closed:
                return
        self.buf = buf[pos:] if pos < end else b""

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self.continuing is not None and kind != CONTINUATION:
            raise H2Error(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, sid, payload)
        elif kind == HEADERS:
            self._headers(flags, sid, payload)
        elif kind == CONTINUATION:
            if self.continuing is None or self.continuing[0] != sid:
                raise H2Error(PROTOCOL_ERROR, "CONTINUATION without a header block")
            self.continuing[2].append(payload)
            if sum(len(p) for p in self.continuing[2]) > HEADER_LIST_SIZE * 2:
                raise H2Error(PROTOCOL_ERROR, "header block too large")
            if flags & END_HEADERS:
                stream_id, first_flags, parts = self.continuing
                self.continuing = None
                self._header_block(stream_id, first_flags, b"".join(parts))
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(sid, payload)
        elif kind == PING:
            if len(payload) != 8 or sid:
                raise H2Error(FRAME_SIZE_ERROR if sid == 0 else PROTOCOL_ERROR, "bad PING")
            if not flags & ACK:
                self.out.append(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if sid == 0 or len(payload) != 4:
                raise H2Error(PROTOCOL_ERROR, "bad RST_STREAM")
            self._reset(sid)
        elif kind == GOAWAY:
            pass  # the client stops opening streams; those open are answered, then it closes
        elif kind == PUSH_PROMISE:
            raise H2Error(PROTOCOL_ERROR, "a client may not push")
        elif kind == PRIORITY:
            if len(payload) != 5:
                raise H2Error(FRAME_SIZE_ERROR, "bad PRIORITY")
        # unknown frame types are ignored (RFC 9113 5.5)

    def _strip_padding(self, flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise H2Error(PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1:len(payload) - payload[0]]
        return payload

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or not sid & 1:
            raise H2Error(PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        block = self._strip_padding(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise H2Error(FRAME_SIZE_ERROR, "bad HEADERS priority")
            block = block[5:]
        if flags & END_HEADERS:
            self._header_block(sid, flags, block)
        else:
            self.continuing = (sid, flags, [block])

    def _decode(self, block: bytes) -> dict[bytes, bytes]:
        fields = self.blocks.get(block)
        if fields is not None:
            return fields
        table = self.decoder.header_table
        entries = table.dynamic_entries
        before = (table.maxsize, len(entries), entries[0] if entries else None)
        fields = {}
        for name, value in self.decoder.decode(block, raw=True):
            fields[name] = value
        if (table.maxsize, len(entries), entries[0] if entries else None) == before:
            if len(self.blocks) < 64:
                self.blocks[block] = fields
        else:
            self.blocks.clear()  # the table changed: cached blocks may now mean other fields
        return fields

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        fields = self._decode(block)  # always: the decoder's table must follow the client's
        stream = self.streams.get(sid)
        if sid <= self.last_stream:
            if stream is not None and not stream.ended and flags & END_STREAM:  # trailers: the request is complete
                self._ended(stream)
            elif stream is None and sid & 1:
                self.out.append(frame(RST_STREAM, 0, sid, U32.pack(STREAM_CLOSED)))
            return
        self.last_stream = sid
        if self.goaway_sent:
            self.out.append(frame(RST_STREAM, 0, sid, U32.pack(REFUSED_STREAM)))
            return
        if len(self.streams) >= MAX_STREAMS:
            self.out.append(frame(RST_STREAM, 0, sid, U32.pack(REFUSED_STREAM)))
            return
        stream = Stream(sid, fields, self.peer_window)
        self.streams[sid] = stream
        if flags & END_STREAM:
            self._ended(stream)

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        # Flow control counts every byte, padding and frames for closed streams included.
        self.recv_unacked += len(payload)
        if self.recv_unacked >= CONNECTION_WINDOW // 2:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, U32.pack(self.recv_unacked)))
            self.recv_unacked = 0
        stream = self.streams.get(sid)
        if stream is None or stream.ended:
            if sid > self.last_stream:
                raise H2Error(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            return  # a stream already answered or reset: its remaining bytes are dropped
        data = self._strip_padding(flags, payload)
        if not stream.refused:
            stream.size += len(data)
            if stream.size > self.server.max_body:
                stream.refused = True
                reply = self.server.too_large(stream)
                stream.body.clear()
                self._dispatch(stream, reply)
                return
            stream.body.append(data)
        if flags & END_STREAM:
            self._ended(stream)
        else:
            stream.recv_unacked += len(payload)
            if stream.recv_unacked >= STREAM_WINDOW // 2:
                self.out.append(frame(WINDOW_UPDATE, 0, sid, U32.pack(stream.recv_unacked)))
                stream.recv_unacked = 0

    def _ended(self, stream: Stream) -> None:
        stream.ended = True
        if stream.refused:
            return
        self._dispatch(stream, None)

    def _settings(self, sid: int, payload: bytes) -> None:
        if sid or len(payload) % 6:
            raise H2Error(PROTOCOL_ERROR, "bad SETTINGS")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2Error(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise H2Error(PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self.peer_frame = value
        self.out.append(frame(SETTINGS, ACK, 0))
        self._send_blocked()

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise H2Error(PROTOCOL_ERROR, "a window update of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise H2Error(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            self._send_blocked()
            return
        stream = self.streams.get(sid)
        if stream is not None:
            stream.send_window += increment
            if sid in self.blocked:
                self._send_body(stream)

    def _reset(self, sid: int) -> None:
        """The client cancelled the stream: stop its work, send nothing more on it."""
        stream = self.streams.pop(sid, None)
        self.blocked.pop(sid, None)
        if stream is not None and stream.task is not None and not stream.task.done():
            stream.task.cancel()
            self.server.cancelled += 1

    # -- answering
    def _dispatch(self, stream: Stream, reply: Reply | None) -> None:
        if reply is None:
            try:
                reply = self.server.handler(stream)
            except Exception:  # a handler bug answers this stream only
                log.error("HTTP/2 handler failed", exc_info=True)
                reply = self.server.failed(stream)
        if type(reply) is Reply:
            self.respond(stream, reply)
            return
        self.server.in_flight += 1
        stream.task = task = self.server.loop.create_task(reply)
        task.add_done_callback(lambda t, s=stream: self._task_done(s, t))

    def _task_done(self, stream: Stream, task: asyncio.Task) -> None:
        self.server.in_flight -= 1
        stream.task = None
        if not task.cancelled() and not self.closed and self.streams.get(stream.id) is stream:
            exc = task.exception()
            if exc is not None:
                log.error("HTTP/2 handler failed", exc_info=exc)
                reply = self.server.failed(stream)
            else:
                reply = task.result()
            self.respond(stream, reply)
            self.flush_soon()
        self.server.maybe_drained()

    def respond(self, stream: Stream, reply: Reply) -> None:
        if self.closed or self.streams.get(stream.id) is not stream:
            return
        if not reply.body and reply.trailers is None:
            self._header_frames(stream.id, reply.head, END_STREAM)
            self._close(stream)
            return
        self._header_frames(stream.id, reply.head, 0)
        stream.out = memoryview(reply.body)
        stream.trailers = reply.trailers
        self._send_body(stream)

    def _header_frames(self, sid: int, block: bytes, flags: int) -> None:
        limit = self.peer_frame
        if len(block) <= limit:
            self.out.append(frame(HEADERS, flags | END_HEADERS, sid, block))
            return
        self.out.append(frame(HEADERS, flags, sid, block[:limit]))
        for start in range(limit, len(block), limit):
            last = start + limit >= len(block)
            self.out.append(frame(CONTINUATION, END_HEADERS if last else 0, sid, block[start:start + limit]))

    def _send_body(self, stream: Stream) -> None:
        out = stream.out
        while out:
            n = min(len(out), self.send_window, stream.send_window, self.peer_frame)
            if n <= 0:
                stream.out = out
                self.blocked[stream.id] = stream
                return
            self.out.append(frame(DATA, 0, stream.id, bytes(out[:n])))
            out = out[n:]
            self.send_window -= n
            stream.send_window -= n
        stream.out = None
        self.blocked.pop(stream.id, None)
        if stream.trailers is not None:
            self._header_frames(stream.id, stream.trailers, END_STREAM)
        else:
            self.out.append(frame(DATA, END_STREAM, stream.id))
        self._close(stream)

    def _send_blocked(self) -> None:
        for stream in list(self.blocked.values()):
            if self.send_window <= 0:
                return
            self._send_body(stream)

    def _close(self, stream: Stream) -> None:
        del self.streams[stream.id]
        if not stream.ended:
            # Answered before the request was complete (too large): the client need not send the rest.
            self.out.append(frame(RST_STREAM, 0, stream.id, U32.pack(NO_ERROR)))
        if self.goaway_sent and not self.streams:
            self.flush()
            self.closed = True
            self.transport.close()

    def drain(self) -> None:
        """Refuse new streams (GOAWAY with the last stream taken); close once the open ones are answered."""
        if self.closed or self.goaway_sent:
            return
        self.goaway_sent = True
        self.out.append(frame(GOAWAY, 0, 0, U32.pack(self.last_stream) + U32.pack(NO_ERROR)))
        self.flush()
        if not self.streams:
            self.closed = True
            self.transport.close()


class H2Server:
    """Serve `handler` over HTTP/2 (prior knowledge, no TLS) on host:port. Build, `await start()`, `await stop()`.

    `too_large(stream)` answers a request whose body passes `max_body` bytes (the rest is not read);
    `failed(stream)` answers one whose handler raised.
    """

    def __init__(self, handler: Handler, too_large: Callable[[Stream], Reply], failed: Callable[[Stream], Reply],
                 host: str = "127.0.0.1", port: int = 0, *, max_body: int = 64 << 20) -> None:
        self.handler = handler
        self.too_large = too_large
        self.failed = failed
        self.host = host
        self.port = port
        self.max_body = max_body
        self.connections: set[H2Connection] = set()
        self.in_flight = 0
        self.cancelled = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._drained: asyncio.Event | None = None
        self.draining = False

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        self._server = await self.loop.create_server(lambda: H2Connection(self), self.host, self.port,
                                                     reuse_address=True, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    def maybe_drained(self) -> None:
        if self.draining and not any(c.streams for c in self.connections):
            self._drained.set()

    async def stop(self, grace_seconds: float) -> None:
        """Stop accepting; requests in flight get up to `grace_seconds` to be answered, then every connection closes."""
        if self._server is None:
            return
        self._server.close()
        self.draining = True
        for conn in list(self.connections):
            conn.drain()
        self.maybe_drained()
        if not self._drained.is_set():
            try:
                await asyncio.wait_for(self._drained.wait(), grace_seconds)
            except asyncio.TimeoutError:
                log.warning("gRPC drain timed out with %d requests in flight", self.in_flight)
        for conn in list(self.connections):
            if not conn.closed:
                conn.closed = True
                conn.transport.close()
        await self._server.wait_closed()
        self._server = None
