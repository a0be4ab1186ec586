"""One gateway worker: serves the shared port with the routes its coordinator sends; its `/-/` paths go there.

Started by the coordinator (`tidal.gateway.workers.WorkerPool`) as
`python -P -m tidal.gateway.worker --listen-fd N --channel-fd M --admin-port P ...`.
It reads the route table from its channel before it serves its first request, then
answers the coordinator's questions (new routes, its counters) until the channel
closes or SIGTERM comes; either way it drains the requests in flight and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from pydantic import ValidationError

from tidal.errors import AlreadyExists
from tidal.gateway.workers import CALL_TIMEOUT_SECONDS, encode_frame, read_frame, snapshot


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tidal.gateway.worker", description="one worker of the gateway")
    p.add_argument("--listen-fd", type=int, required=True, help="its listening socket (in the port's group)")
    p.add_argument("--channel-fd", type=int, required=True, help="a Unix socket to its coordinator")
    p.add_argument("--admin-port", type=int, required=True, help="the coordinator's private port for `/-/` paths")
    p.add_argument("--token-file", required=True, help="the control plane's token (to ask it for a replica)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--index", type=int, default=0, help="its number, for the logs")
    return p.parse_args(argv)


def _apply(gw, current: dict, docs: list[dict]) -> dict:
    from tidal.gateway.config import ServiceConfig
    from tidal.gateway.control import apply_routes
    services = [ServiceConfig.model_validate(d) for d in docs]
    apply_routes(gw, current, services)
    return {s.name: s for s in services}


async def serve(args: argparse.Namespace, token: str) -> str:
    from tidal.gateway.process import _waker
    from tidal.gateway.proxy import Gateway, _response
    from tidal.http.client import ClientError, HttpClient
    from tidal.http.server import error_response

    log = logging.getLogger("tidal.gateway")
    sock = socket.socket(fileno=args.listen_fd)
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=args.channel_fd))
    first = await read_frame(reader)
    if first is None:
        return "its coordinator was gone before it started"
    to_coordinator = HttpClient(connect_timeout=1.0, max_idle_per_host=4)

    async def forward(req):
        try:
            up = await to_coordinator.request_raw("127.0.0.1", args.admin_port, gw._encode(req, req.path),
                                                  CALL_TIMEOUT_SECONDS * 2)
        except ClientError as exc:
            return error_response(503, f"the gateway's coordinator did not answer: {exc}")
        return _response(up)

    gw = Gateway(args.host, sock.getsockname()[1], sock=sock,
                 admin=lambda req: None if req.path == "/-/healthz" else forward(req),
                 on_queue=_waker(Path(args.token_file), token))
    try:
        current = _apply(gw, {}, first.get("services", []))
    except (ValidationError, ValueError, AlreadyExists) as exc:
        log.warning("worker %d: the first routes cannot be applied (%s); starting with none", args.index, exc)
        current = {}
    await gw.start()
    log.info("gateway worker %d (pid %d) serving on port %d with %d service(s)", args.index, os.getpid(), gw.port,
             len(current))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda sig=sig: (received.append(sig.name), stop.set()))

    async def answer() -> None:
        nonlocal current
        while True:
            msg = await read_frame(reader)
            if msg is None:
                received.append("its coordinator's exit")
                stop.set()
                return
            op = msg.get("op")
            if op == "routes":
                try:
                    current = _apply(gw, current, msg.get("services", []))
                    reply = {"ok": True}
                except (ValidationError, ValueError, AlreadyExists) as exc:
                    reply = {"ok": False, "error": str(exc).splitlines()[0]}
            elif op == "snapshot":
                reply = {"services": snapshot(gw, msg.get("release_window"))}
            else:
                reply = {"ok": False, "error": f"no operation {op!r}"}
            writer.write(encode_frame(reply))

    task = loop.create_task(answer())
    await stop.wait()
    task.cancel()
    await gw.stop()
    to_coordinator.close()
    return f"was stopped by {received[0]} (it drained its requests first)"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from tidal.gateway.process import event_loop_runner, read_token
    token = read_token(args.token_file, "tidal gateway worker")
    if token is None:
        return 2
    reason = event_loop_runner()(serve(args, token))
    logging.getLogger("tidal.gateway").info("gateway worker %d %s", args.index, reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
