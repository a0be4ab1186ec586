"""A stand-in replica for the gateway's end-to-end tests: a real HTTP process with a fake predict.

Run as `python -m tests.gateway.fake_replica --id r0`; prints `PORT <n>` once listening.
`x-sleep: SECONDS` delays the answer, so tests can hold requests in flight;
`x-die-on: ID` makes replica ID exit halfway through writing its answer;
`x-fail-on: ID` makes replica ID answer 500.
"""

import argparse
import asyncio
import os
import sys

import orjson

from tidal.http.server import HttpServer, Response, error_response


def make_handler(replica_id: str):
    async def handle(req):
        delay = float(req.headers.get("x-sleep", "0") or 0)
        if delay:
            await asyncio.sleep(delay)
        if req.headers.get("x-die-on") == replica_id:
            req._conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"predictions\": [")
            await asyncio.sleep(0.05)
            os._exit(1)
        if req.headers.get("x-fail-on") == replica_id:
            return error_response(500, f"replica {replica_id} fails as asked")
        if req.path == "/v2/health/ready":
            return Response(200, b"")
        if req.path == "/echo":
            return Response(200, orjson.dumps({"replica": replica_id, "method": req.method, "path": req.path,
                                               "query": req.query, "headers": req.headers,
                                               "body": req.body.decode()}),
                            headers=[("X-Replica", replica_id), ("Connection", "keep-alive")])
        if req.path == "/text":
            return Response(201, b"plain", b"text/plain; charset=utf-8", [("X-Replica", replica_id)])
        if req.path.endswith(":predict"):
            try:
                xs = orjson.loads(req.body)["instances"]
                preds = [x / 2 + 2 for x in xs]
            except (ValueError, KeyError, TypeError):
                return error_response(400, "bad predict body")
            return Response(200, orjson.dumps({"predictions": preds, "replica": replica_id}))
        return error_response(404, f"no route {req.path}")
    return handle


async def main(replica_id: str, port: int) -> None:
    srv = HttpServer(make_handler(replica_id), "127.0.0.1", port)
    await srv.start()
    print(f"PORT {srv.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--id", required=True)
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    try:
        asyncio.run(main(a.id, a.port))
    except KeyboardInterrupt:
        sys.exit(0)
