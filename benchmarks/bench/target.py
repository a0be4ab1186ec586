"""The server the load generators are compared on: a tidal HttpServer answering a fixed predict response.

`--delay S` makes every answer wait S seconds (an asyncio sleep, like a model that
takes that long without using the CPU), so the server is the bottleneck and the
figures measure the load generators' accuracy rather than their own speed.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop

from tidal.http.server import HttpServer, Response

ANSWER = b'{"predictions": [2.5, 3.0, 4.5]}'


def make_handler(delay: float):
    async def later() -> Response:
        await asyncio.sleep(delay)
        return Response(200, ANSWER)

    def handle(req) -> Response:
        return later() if delay > 0 else Response(200, ANSWER)
    return handle


async def serve(port: int, delay: float) -> None:
    server = HttpServer(make_handler(delay), "127.0.0.1", port)
    await server.start()
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=18080)
    p.add_argument("--delay", type=float, default=0.0)
    args = p.parse_args()
    uvloop.run(serve(args.port, args.delay))


if __name__ == "__main__":
    main()
