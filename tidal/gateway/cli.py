"""`tidal gateway`: run the gateway on its own, with its services read from a routes file."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from tidal.errors import UserError
from tidal.gateway.config import GatewayEngine

EXAMPLE = """\
example routes file (YAML):
  port: 8501
  services:
    - name: half-plus-two
      models: [half_plus_two]          # /v1/models/half_plus_two:predict goes here
      replicas:
        - {id: r0, host: 127.0.0.1, port: 9001}
        - {id: r1, host: 127.0.0.1, port: 9002}

  tidal gateway --routes routes.yaml
  curl -d '{"instances": [1.0]}' localhost:8501/v1/models/half_plus_two:predict
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLE
    parser.add_argument("--routes", required=True, help="YAML or JSON file with the services and their replicas")
    parser.add_argument("--host", help="address to listen on (default: the file's, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: the file's, else 8501; 0 picks one)")
    parser.add_argument("--log-file", help="log to this file, rotated by size (default: $TIDAL_LOG_FILE, else stderr)")
    parser.add_argument("--engine", choices=[GatewayEngine.PYTHON.value, GatewayEngine.EDGE.value],
                        default=GatewayEngine.PYTHON.value,
                        help="python (default), or edge: the compiled data plane in front of the Python gateway "
                             "(build it with scripts/edge.sh)")
    parser.add_argument("--threads", type=int, default=1, help="the edge's threads (with --engine edge; default 1)")


def load_routes(path: str):
    from tidal.gateway.config import RoutesFile
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read routes file {path}: {exc.strerror or exc}") from exc
    try:
        return RoutesFile.model_validate(yaml.safe_load(text) or {})
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"routes file {path} is not valid YAML{where}: {problem}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"routes file {path}: {where}: {first['msg']}") from exc


async def _serve(routes, host: str, port: int) -> None:
    from tidal.gateway.proxy import Gateway
    gw = Gateway(host, port, settings=routes.settings)
    for s in routes.services:
        gw.set_service(s.name, s.replicas, s.hosts, s.models, deadline_seconds=s.deadline_seconds,
                       queue=s.queue, unready_reason=s.unready_reason, releases=s.releases)
    await gw.start()
    print(f"tidal gateway listening on http://{host}:{gw.port} ({len(routes.services)} services; "
          f"metrics at /-/metrics)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gw.stop()


def run(args: argparse.Namespace) -> int:
    import os
    from tidal.logs import setup_from_env
    setup_from_env(os.environ, file=getattr(args, "log_file", None))
    routes = load_routes(args.routes)
    host = args.host or routes.host
    port = routes.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    if args.engine == GatewayEngine.EDGE.value:
        return _run_edge(routes, host, port, args.threads)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        runner = asyncio.run
    try:
        runner(_serve(routes, host, port))
    except OSError as exc:
        print(f"tidal gateway: error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _run_edge(routes, host: str, port: int, threads: int) -> int:
    """The supervised gateway process with the edge in front, serving the file's services; its control endpoints
    take a token made here and known to no one, so the routes stay the file's."""
    import secrets
    import socket
    import tempfile

    from tidal.gateway.control import save_routes
    from tidal.gateway.edge import require_edge
    from tidal.gateway.process import main as process_main
    require_edge()
    if not 1 <= threads <= 256:
        raise UserError(f"--threads must be between 1 and 256, got {threads}")
    try:
        sock = socket.create_server((host, port), backlog=4096)
    except OSError as exc:
        print(f"tidal gateway: error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with sock, tempfile.TemporaryDirectory(prefix="tidal-gateway-") as tmp:
        token, routes_file = Path(tmp) / "token", Path(tmp) / "routes.json"
        token.write_text(secrets.token_hex(16))
        token.chmod(0o600)
        save_routes(routes_file, routes.services, host, sock.getsockname()[1])
        print(f"tidal gateway listening on http://{host}:{sock.getsockname()[1]} ({len(routes.services)} services; "
              f"metrics at /-/metrics; engine edge)", flush=True)
        return process_main(["--listen-fd", str(sock.fileno()), "--host", host, "--token-file", str(token),
                             "--routes-file", str(routes_file), "--engine", GatewayEngine.EDGE.value,
                             "--workers", str(threads), "--settings", routes.settings.model_dump_json()])
