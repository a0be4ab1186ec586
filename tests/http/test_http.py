"""The shared HTTP server and client: keep-alive, pipelining, limits, drain, retries."""

import asyncio
import socket

import pytest

from tidal.http.client import ConnectFailed, ConnectionLost, HttpClient
from tidal.http.server import HttpServer, Response


def run(coro):
    return asyncio.run(coro)


async def _echo(req):
    if req.path == "/slow":
        await asyncio.sleep(0.3)
        return Response(200, b"slow")
    if req.path == "/boom":
        raise RuntimeError("bug")
    return Response(200, req.method.encode() + b" " + req.path.encode() + b" " + req.body)


def _sync(req):
    return Response(201, b"sync")


def test_keep_alive_and_async_handler():
    async def main():
        srv = HttpServer(_echo)
        await srv.start()
        c = HttpClient()
        for i in range(3):
            r = await c.request("POST", "127.0.0.1", srv.port, f"/x{i}", b"body")
            assert r.status == 200 and r.body == f"POST /x{i} body".encode()
        assert len(srv.connections) == 1  # all three went over one connection
        c.close()
        await srv.stop()
    run(main())


def test_sync_handler_and_handler_exception_is_500():
    async def main():
        srv = HttpServer(lambda r: _sync(r) if r.path == "/s" else _echo(r))
        await srv.start()
        c = HttpClient()
        assert (await c.request("GET", "127.0.0.1", srv.port, "/s")).status == 201
        r = await c.request("GET", "127.0.0.1", srv.port, "/boom")
        assert r.status == 500 and b"error" in r.body
        assert (await c.request("GET", "127.0.0.1", srv.port, "/ok")).status == 200
        c.close()
        await srv.stop()
    run(main())


def _raw(port, data, read_until=b"", timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if read_until and out.count(read_until) >= 1 and out.endswith(read_until):
                break
        return out


def test_pipelined_requests_answered_in_order_and_limits():
    async def main():
        srv = HttpServer(_echo, max_body=10)
        await srv.start()
        loop = asyncio.get_running_loop()
        pipelined = (b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                     b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nZ")
        out = await loop.run_in_executor(None, _raw, srv.port, pipelined)
        assert out.index(b"slow") < out.index(b"POST /fast Z")
        big = await loop.run_in_executor(None, _raw, srv.port,
                                         b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n01234567890")
        assert big.startswith(b"HTTP/1.1 413") and b"limit" in big
        bad = await loop.run_in_executor(None, _raw, srv.port, b"NOT HTTP AT ALL\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400")
        cont = await loop.run_in_executor(None, _raw, srv.port,
                                          b"POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                                          b"Content-Length: 2\r\nConnection: close\r\n\r\nab")
        assert cont.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
        # the server is still up
        c = HttpClient()
        assert (await c.request("GET", "127.0.0.1", srv.port, "/")).status == 200
        c.close()
        await srv.stop()
    run(main())


def test_stop_drains_in_flight_requests():
    async def main():
        srv = HttpServer(_echo)
        await srv.start()
        c = HttpClient()
        pending = asyncio.ensure_future(c.request("GET", "127.0.0.1", srv.port, "/slow"))
        await asyncio.sleep(0.05)
        await srv.stop(drain_timeout=5)
        r = await pending
        assert r.status == 200 and r.body == b"slow"
        with pytest.raises(ConnectFailed):
            await HttpClient().request("GET", "127.0.0.1", srv.port, "/")
        c.close()
    run(main())


def test_client_disconnect_cancels_handler():
    cancelled = asyncio.Event

    async def main():
        seen = {"cancelled": False}

        async def handler(req):
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                seen["cancelled"] = True
                raise
            return Response(200, b"")

        srv = HttpServer(handler)
        await srv.start()
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.05)
        w.close()
        await asyncio.sleep(0.1)
        assert seen["cancelled"] and srv.cancelled_requests == 1
        await srv.stop()
    run(main())


def test_client_reports_connection_lost_before_response():
    async def main():
        async def handler(req):
            req._conn.transport.close()  # the replica dies mid-request
            await asyncio.sleep(0)
            return Response(200, b"")

        srv = HttpServer(handler)
        await srv.start()
        c = HttpClient()
        with pytest.raises(ConnectionLost) as info:
            await c.request("GET", "127.0.0.1", srv.port, "/")
        assert info.value.retryable
        await srv.stop()
    run(main())


def test_pipelined_request_is_cancelled_when_the_client_leaves():
    async def main():
        seen = []

        async def handler(req):
            if req.path == "/first":
                return Response(200, b"first")
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                seen.append(req.path)
                raise
            return Response(200, b"")

        srv = HttpServer(handler)
        await srv.start()
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        # The first answer is written from the task that then dispatches the pipelined second one.
        w.write(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.1)
        w.close()
        await asyncio.sleep(0.1)
        assert seen == ["/second"]
        await srv.stop()
    run(main())
