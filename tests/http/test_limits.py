"""Request-head limits, the Host allow-list and in-flight accounting of the shared HTTP server (real sockets)."""

import asyncio
import socket
import time

import pytest

from tidal.http.client import HttpClient
from tidal.http.hosts import HostAllowList, host_name
from tidal.http.server import HttpLimits, HttpServer, Response


async def _ok(req):
    await asyncio.sleep(0)
    return Response(200, b"ok " + req.path.encode())


def _exchange(port: int, chunks, pause: float = 0.0, timeout: float = 3.0, sndbuf: int | None = 4096
              ) -> tuple[bytes, int]:
    """Send the chunks (stopping if the server closes), then read to EOF: (answer, bytes the server took)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if sndbuf:  # small, so the count of bytes sent says when the server stopped reading
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            if pause:
                time.sleep(pause)
        out = b""
        while True:
            try:
                data = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not data:
                break
            out += data
        return out, sent


def _serve(body, **kw):
    async def main():
        srv = HttpServer(_ok, **kw)
        await srv.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, body, srv.port)
        finally:
            await srv.stop()
    return asyncio.run(main())


def _endless_header(port):
    # 64 MiB of one header value that never ends, as fast as the socket takes it: the answer must come
    # after a few tens of KiB, and the connection close stops the sender long before 64 MiB.
    head = [b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "]
    return _exchange(port, head + [b"a" * 65536] * 1024, timeout=5.0)


def test_a_header_that_never_ends_is_refused_without_reading_it():
    t = time.monotonic()
    out, sent = _serve(_endless_header)
    assert out.startswith(b"HTTP/1.1 431 "), out[:200]
    assert b"Connection: close" in out
    assert sent < 8 * 1024 * 1024  # the server closed the connection; socket buffers took the rest
    assert time.monotonic() - t < 3.0


def test_a_request_line_that_never_ends_gets_414():
    out, _ = _serve(lambda port: _exchange(port, [b"GET /" + b"a" * 4096] + [b"b" * 4096] * 16))
    assert out.startswith(b"HTTP/1.1 414 "), out[:200]


def test_a_header_name_that_never_ends_gets_431_not_414():
    out, _ = _serve(lambda port: _exchange(port, [b"GET / HTTP/1.1\r\n"] + [b"n" * 8192] * 16))
    assert out.startswith(b"HTTP/1.1 431 "), out[:200]


HEAD = "GET /p HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize("name,request_text,status", [
    ("request line at the limit", "GET /" + "a" * 8000 + " HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    ("request line over the limit", "GET /" + "a" * 8200 + " HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("100 headers (with Host and Connection)", HEAD + "".join(f"h{i}: v\r\n" for i in range(98)) + "\r\n", 200),
    ("101 headers", HEAD + "".join(f"h{i}: v\r\n" for i in range(99)) + "\r\n", 431),
    ("one 8,100-byte header line", HEAD + "x: " + "v" * 8100 + "\r\n\r\n", 200),
    ("one 8,200-byte header line", HEAD + "x: " + "v" * 8200 + "\r\n\r\n", 431),
    ("four 8,000-byte lines: 32,064 bytes", HEAD + "".join(f"h{i}: " + "v" * 7996 + "\r\n" for i in range(4)) + "\r\n",
     200),
    ("five 7,000-byte lines: 35,000 bytes", HEAD + "".join(f"h{i}: " + "v" * 6996 + "\r\n" for i in range(5)) + "\r\n",
     431),
])
def test_head_limits_like_nginx(name, request_text, status):
    out, _ = _serve(lambda port: _exchange(port, [request_text.replace("Host: x\r\n", "Host: x\r\nConnection: close\r\n",
                                                                       1).encode()]))
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), (name, out[:200])


def test_limits_are_settings_and_apply_to_pipelined_requests():
    limits = HttpLimits(max_headers=3)
    ok = b"GET /a HTTP/1.1\r\nHost: x\r\nA: 1\r\n\r\n"
    bad = b"GET /b HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    out, _ = _serve(lambda port: _exchange(port, [ok + ok + bad]), limits=limits)
    assert out.count(b"HTTP/1.1 200 ") == 2 and b"HTTP/1.1 431 " in out and b"more than 3" in out


def test_trailers_that_never_end_are_refused():
    chunked = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\nX-Trailer: ")
    out, _ = _serve(lambda port: _exchange(port, [chunked] + [b"t" * 65536] * 64, timeout=5.0))
    assert out.startswith(b"HTTP/1.1 431 "), out[:200]


def test_a_large_body_is_not_mistaken_for_a_head():
    body = b"x" * (3 * 1024 * 1024)
    req = b"POST /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in [body[i:i + 100000] for i in range(0, len(body), 100000)])
    req2 = b"POST /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"
    for r in (req, req2):
        out, _ = _serve(lambda port: _exchange(port, [r], sndbuf=None))
        assert out.startswith(b"HTTP/1.1 200 "), out[:200]


@pytest.mark.parametrize("header,allowed", [
    ("localhost", True), ("localhost:8470", True), ("LOCALHOST.", True), ("127.0.0.1:1", True),
    ("[::1]:8470", True), ("::1", True), ("tidal.internal", True),
    ("evil.example", False), ("evil.example:8470", False), ("127.0.0.2", False), ("localhost.evil.example", False),
    (None, True),  # HTTP/1.0 without Host: a browser always sends one
])
def test_host_allow_list(header, allowed):
    hosts = HostAllowList.for_bind("127.0.0.1", env={"TIDAL_ALLOWED_HOSTS": " tidal.internal ,"})
    assert hosts.allows(header) is allowed


def test_a_wildcard_bind_also_answers_ip_literals_but_not_other_names():
    hosts = HostAllowList.for_bind("0.0.0.0", env={})
    assert hosts.allows("10.1.2.3:8470") and hosts.allows("[fe80::1]") and hosts.allows("localhost")
    assert not hosts.allows("rebind.example") and host_name("[fe80::1]:80") == "fe80::1"


def test_a_request_for_another_host_gets_421_and_no_cors_headers():
    hosts = HostAllowList.for_bind("127.0.0.1", env={})

    def body(port):
        bad, _ = _exchange(port, [b"GET / HTTP/1.1\r\nHost: attacker.example\r\nOrigin: http://attacker.example\r\n\r\n"])
        good, _ = _exchange(port, [b"GET / HTTP/1.1\r\nHost: localhost:%d\r\nConnection: close\r\n\r\n" % port])
        return bad, good
    bad, good = _serve(body, allowed_hosts=hosts)
    assert bad.startswith(b"HTTP/1.1 421 ") and b"attacker.example" in bad
    assert good.startswith(b"HTTP/1.1 200 ")
    assert b"access-control" not in (bad + good).lower()


def test_a_reset_between_pipelined_answers_leaves_nothing_in_flight():
    """The next pipelined request is dispatched as a task in the same loop turn the client's reset is seen."""
    async def main():
        handled = []

        async def handler(req):
            await asyncio.sleep(0)
            if req.path == "/first":
                req._conn.transport.abort()  # the reset arrives as this answer is written
            handled.append(req.path)
            return Response(200, b"")

        srv = HttpServer(handler)
        await srv.start()
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        await w.drain()
        for _ in range(100):
            if not srv.connections:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert srv.in_flight == 0 and handled[0] == "/first"
        t = time.monotonic()
        await srv.stop(drain_timeout=10)
        assert time.monotonic() - t < 1.0
        w.close()
    asyncio.run(main())


def test_pipelined_requests_reset_by_the_client_leave_nothing_in_flight():
    async def main():
        async def handler(req):
            await asyncio.sleep(0.001)
            return Response(200, b"x")

        srv = HttpServer(handler)
        await srv.start()

        def reset_clients():
            import struct
            for i in range(50):
                s = socket.create_connection(("127.0.0.1", srv.port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
                if i % 2:
                    s.recv(100)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
        await asyncio.get_running_loop().run_in_executor(None, reset_clients)
        c = HttpClient()
        assert (await c.request("GET", "127.0.0.1", srv.port, "/")).status == 200
        c.close()
        for _ in range(100):
            if srv.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert srv.in_flight == 0
        t = time.monotonic()
        await srv.stop(drain_timeout=10)
        assert time.monotonic() - t < 1.0
    asyncio.run(main())
