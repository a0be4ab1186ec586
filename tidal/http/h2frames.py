"""HTTP/2's wire pieces for tidal/http/h2.py (RFC 9113, RFC 7541): frame types, flags, error codes, settings, one
frame's bytes, an HPACK literal, and a request's stream and reply."""

from __future__ import annotations

import asyncio
import struct
from typing import Awaitable, Callable, Union

from hpack.hpack import encode_integer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
# SETTINGS identifiers
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = \
    range(1, 7)

FRAME_HEAD = struct.Struct(">HBBBI")  # length (24 bits as 16 + 8), type, flags, stream id
U32 = struct.Struct(">I")
MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65535

# What this side announces. Large windows: a client sends a whole message without waiting for updates.
STREAM_WINDOW = 4 << 20
CONNECTION_WINDOW = 16 << 20
FRAME_SIZE = 1 << 20
HEADER_LIST_SIZE = 64 << 10
MAX_STREAMS = 1024


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return FRAME_HEAD.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


def literal(name: bytes, value: bytes) -> bytes:
    """One header field as an HPACK literal without indexing (RFC 7541 6.2.2), no Huffman coding."""
    return b"\x00" + bytes(encode_integer(len(name), 7)) + name + bytes(encode_integer(len(value), 7)) + value


class Stream:
    """One request: its headers and body as they arrive, the work answering it, and what is left to send."""

    __slots__ = ("id", "headers", "body", "size", "ended", "task", "send_window", "out", "trailers", "refused",
                 "recv_unacked")

    def __init__(self, stream_id: int, headers: dict[bytes, bytes], send_window: int) -> None:
        self.id = stream_id
        self.headers = headers
        self.body: list[bytes] = []
        self.size = 0
        self.ended = False  # the client sent END_STREAM
        self.task: asyncio.Task | None = None
        self.send_window = send_window
        self.out: memoryview | None = None  # response body bytes still to send
        self.trailers: bytes | None = None
        self.refused = False  # answered before its body was complete (too large)
        self.recv_unacked = 0


class Reply:
    """A complete response: an encoded header block, a body (may be empty) and an encoded trailer block or None."""

    __slots__ = ("head", "body", "trailers")

    def __init__(self, head: bytes, body: bytes = b"", trailers: bytes | None = None) -> None:
        self.head = head
        self.body = body
        self.trailers = trailers


Handler = Callable[[Stream], Union[Reply, Awaitable[Reply]]]


class H2Error(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
