"""The supervised gateway process: serves the routes it was last given, takes new ones from its control plane only.

Started by the control plane (`tidal.gateway.supervisor`) as
`python -P -m tidal.gateway.process --activate-fd N --token-file F --routes-file R`, in a
session of its own so that it outlives a control plane killed with SIGKILL. It starts as
a standby: imported and idle, it waits on a Unix socket until the control plane hands it
the listening socket (SCM_RIGHTS); if the control plane goes first it exits. Taking over
from a gateway that died then costs milliseconds, not an interpreter's start. Once active
it loads the routes file first, so it serves at once, with or without a control plane.
With `--workers N` it coordinates N - 1 more processes on the same port (`tidal.gateway.workers`).
With `--engine edge` it serves a private port instead and coordinates one `tidal-edge` process that
serves the port with N threads (`tidal.gateway.edge`).
SIGTERM drains the requests in flight (its workers' too), then it exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from tidal.gateway.config import GatewayEngine, GatewaySettings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tidal.gateway.process",
                                description="the gateway as a control plane's own process")
    p.add_argument("--listen-fd", type=int, help="an inherited listening socket (for a gateway started by hand)")
    p.add_argument("--activate-fd", type=int,
                   help="a Unix socket: wait on it for the listening socket, exit when it closes first")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="port to listen on when no socket is handed over")
    p.add_argument("--token-file", required=True, help="the control plane's token (0600): only it may set routes")
    p.add_argument("--routes-file", required=True, help="the routes last given: read at start, rewritten on change")
    p.add_argument("--exit-file", help="where to say why it exits (its supervisor may not be its parent)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes serving the port (this one and workers - 1 more, sharing it with SO_REUSEPORT); "
                        "with --engine edge, the edge's threads")
    p.add_argument("--settings", help="the gateway's settings as JSON (GatewaySettings; default: its defaults)")
    p.add_argument("--engine", choices=[GatewayEngine.PYTHON.value, GatewayEngine.EDGE.value],
                   default=GatewayEngine.PYTHON.value,
                   help="what serves the port: this process (and its workers), or the compiled edge in front of it")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace, token: str) -> str:
    from tidal.gateway.control import ControlEndpoints, apply_routes, load_routes
    from tidal.gateway.coordinator import Coordinator
    from tidal.gateway.proxy import Gateway

    sock = socket.socket(fileno=args.listen_fd) if args.listen_fd is not None else None
    edge = args.engine == GatewayEngine.EDGE.value
    public = None  # with the edge: the port it serves; this process serves a private one
    if edge:
        public = sock if sock is not None else socket.create_server((args.host, args.port), backlog=4096)
        sock = None
    routes_file = Path(args.routes_file)
    services = load_routes(routes_file)
    started = time.time()
    front = None  # the control endpoints, or the coordinator in front of them when there are workers
    pool = None
    settings = GatewaySettings.model_validate_json(args.settings) if args.settings else None
    gw = Gateway("127.0.0.1" if edge else args.host, 0 if edge else sock.getsockname()[1] if sock else args.port,
                 sock=sock, admin=lambda req: front.handle(req), on_queue=_waker(Path(args.token_file), token),
                 settings=settings)
    try:
        apply_routes(gw, {}, services)
    except Exception as exc:  # a damaged file must not keep the gateway down: the control plane sends them again
        logging.getLogger("tidal.gateway").warning("the routes in %s cannot be applied (%s); starting with none",
                                                   routes_file, exc)
        services = []
        for name in gw.services():
            gw.remove_service(name)
    endpoints = front = ControlEndpoints(gw, token, routes_file, services, info=lambda: {
        "started_at": started, "port": gw.port, "workers": [os.getpid(), *(pool.pids() if pool else ())]})
    await gw.start()
    admin_server = public_server = None
    if edge:
        from tidal.errors import UserError
        try:
            pool = _edge(args, gw, endpoints, public)
            front = Coordinator(endpoints, pool, token)
            await pool.start()
        except (OSError, UserError) as exc:  # the binary went (or cannot run): the port is served all the same
            logging.getLogger("tidal.gateway").error("cannot start the gateway's edge (%s): the Python gateway "
                                                     "serves the port", getattr(exc, "strerror", None) or exc)
            front = endpoints
            if pool is not None:
                await pool.stop()
            pool = None
            from tidal.http.server import HttpServer
            public_server = HttpServer(gw._handle, args.host, gw.port, max_body=gw.settings.max_body_bytes,
                                       sock=public)
            await public_server.start()
    elif args.workers > 1:
        admin_server, pool = await _workers(args, gw, endpoints)
        # In front before any worker starts: a route update from here on reaches the workers started so far,
        # and each one started later gets the table current at its start.
        front = Coordinator(endpoints, pool, token)
        try:
            await pool.start()
        except OSError as exc:
            logging.getLogger("tidal.gateway").error("cannot start the gateway's workers (%s): serving with one "
                                                     "process", exc.strerror or exc)
            front = endpoints
            await pool.stop()
            await admin_server.stop(1.0)
            admin_server = pool = None
    logging.getLogger("tidal.gateway").info("gateway (pid %d) serving on %s:%d with %d service(s) from %s",
                                            os.getpid(), args.host, gw.port, len(services), routes_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda sig=sig: (received.append(sig.name), stop.set()))
    await stop.wait()
    # No new requests from here; those in flight finish (up to the drain timeout), then the replicas may go.
    if public_server is not None:
        await public_server.stop(gw.settings.drain_timeout_seconds)
    if pool is not None:
        await asyncio.gather(pool.stop(), gw.stop())
    else:
        await gw.stop()
    if admin_server is not None:
        await admin_server.stop(1.0)
    return f"was stopped by {received[0]} (it drained its requests first)"


async def _workers(args: argparse.Namespace, gw, endpoints):
    """The coordinator's private port for its workers' `/-/` paths (started), and its workers (not yet)."""
    from tidal.gateway.workers import WorkerPool
    from tidal.http.server import HttpServer, error_response
    admin = HttpServer(lambda req: gw._handle(req) if req.path.startswith("/-/")
                       else error_response(404, "the coordinator's private port answers /-/ paths only"),
                       "127.0.0.1", 0)
    await admin.start()
    # An OSError from start() when the port cannot be shared (a socket bound without SO_REUSEPORT).
    pool = WorkerPool(args.workers - 1, gw._server._server.sockets[0], lambda: list(endpoints.current.values()),
                      admin_port=admin.port, token_file=args.token_file, host=args.host)
    return admin, pool


def _edge(args: argparse.Namespace, gw, endpoints, public: socket.socket):
    """`tidal-edge` for the public socket, in front of this process's private port (`gw`'s); not yet started."""
    from tidal.gateway.edge import require_edge
    from tidal.gateway.workers import WorkerPool
    private_port = gw.port
    gw.host, gw.port = args.host, public.getsockname()[1]  # what the gateway is reached at, for its answers
    pool = WorkerPool(1, public, lambda: list(endpoints.current.values()), admin_port=private_port,
                      token_file=args.token_file, host=args.host,
                      edge=(str(require_edge()), args.workers, gw.settings))
    return pool


def _waker(token_file: Path, token: str):
    """Ask the control plane for a replica at once: a POST to its API's /wake, found beside the token
    (`address.json` in the same home). Off the event loop; a lost wake costs only the next pass's delay."""
    address = token_file.parent / "address.json"

    def post(service: str) -> None:
        import urllib.request
        try:
            api = json.loads(address.read_text())["api"]
            req = urllib.request.Request(f"{api}/api/v1/wake", data=json.dumps({"service": service}).encode(),
                                         method="POST", headers={"Authorization": f"Bearer {token}",
                                                                 "Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=0.5).close()
        except Exception as exc:  # the control plane is down or restarting: its next pass reads the queue
            logging.getLogger("tidal.gateway").info("service %s: cannot wake the control plane (%s)", service, exc)

    def wake(service: str) -> None:
        asyncio.get_running_loop().run_in_executor(None, post, service)

    return wake


def _say_why(exit_file: str | None, reason: str) -> None:
    """Leave the reason for a supervisor that is not this process's parent (it cannot read the exit status)."""
    if exit_file:
        try:
            Path(exit_file).write_text(json.dumps({"pid": os.getpid(), "reason": reason}))
        except OSError:
            pass


def _await_activation(fd: int) -> int | None:
    """Block until the supervisor sends the listening socket; None when it closes the channel instead."""
    channel = socket.socket(fileno=fd)
    try:
        msg, fds, _, _ = socket.recv_fds(channel, 16, 1)
    except OSError:
        return None
    finally:
        channel.close()
    if msg != b"go" or not fds:
        for extra in fds:
            os.close(extra)
        return None
    return fds[0]


def read_token(path: str, who: str) -> str | None:
    """The control token from its file, or None after one line on stderr saying why it cannot be had."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        print(f"{who}: error: cannot read the token file {path}: {exc.strerror or exc}", file=sys.stderr)
        return None
    if not token:
        print(f"{who}: error: the token file {path} is empty", file=sys.stderr)
        return None
    return token


def event_loop_runner():
    try:
        import uvloop
        return uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    token = read_token(args.token_file, "tidal gateway")
    if token is None:
        return 2
    runner = event_loop_runner()
    # Imported before waiting, so that taking over is quick.
    import tidal.gateway.control  # noqa: F401
    import tidal.gateway.proxy  # noqa: F401
    import tidal.gateway.coordinator  # noqa: F401
    if args.engine == GatewayEngine.EDGE.value:
        from tidal.errors import UserError
        from tidal.gateway.edge import require_edge
        try:
            require_edge()
        except UserError as exc:
            print(f"tidal gateway: error: {exc}", file=sys.stderr)
            _say_why(args.exit_file, f"exited with status 2: {exc}")
            return 2
    if args.activate_fd is not None:
        args.listen_fd = _await_activation(args.activate_fd)
        if args.listen_fd is None:
            return 0  # the control plane went away (or stopped) before it needed this standby
    try:
        reason = runner(serve(args, token))
    except OSError as exc:
        print(f"tidal gateway: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        _say_why(args.exit_file, f"exited with status 1: cannot listen: {exc.strerror or exc}")
        return 1
    except BaseException as exc:
        _say_why(args.exit_file, f"crashed: {type(exc).__name__}: {exc}")
        raise
    _say_why(args.exit_file, reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
