"""`tidal up`: start the control plane (API, gateway, reconcile loop) in the background, or in the foreground."""

from __future__ import annotations

import argparse

from tidal.control.daemon import DaemonOptions, is_running, run_foreground, spawn_background
from tidal.control.home import Home
from tidal.control.reconciler import ControlSettings
from tidal.gateway.config import GatewayEngine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example:\n  tidal up\n  tidal up --foreground --port 8470 --gateway-port 8501\n"
                     "  TIDAL_HOME=$(mktemp -d) tidal up --port 0 --gateway-port 0 --time-factor 0.05")
    parser.add_argument("--foreground", action="store_true", help="run here instead of in the background")
    parser.add_argument("--host", default="127.0.0.1", help="address the API and the gateway listen on")
    parser.add_argument("--port", type=int, default=None, help="API port (default 8470; 0: any free port)")
    parser.add_argument("--gateway-port", type=int, default=None, help="gateway port (default 8501; 0: any free)")
    parser.add_argument("--gateway-workers", type=int, default=1,
                        help="processes serving the gateway's port, sharing it (default 1; at most one per core "
                             "helps)")
    parser.add_argument("--gateway-engine", choices=[e.value for e in GatewayEngine],
                        default=GatewayEngine.AUTO.value,
                        help="what serves the gateway's port: python, or edge, the compiled data plane in front "
                             "of it (build it with scripts/edge.sh); auto (default): edge where it is built from "
                             "this source tree, else python; with edge, --gateway-workers sets its threads")
    parser.add_argument("--time-factor", type=float, default=None,
                        help="real seconds per control-plane second (0.05: a 120 s notice lasts 6 s)")
    parser.add_argument("--tick", type=float, default=5.0, help="seconds between reconcile passes (default 5)")
    parser.add_argument("--qps-window", type=float, default=30.0, help="seconds of QPS the autoscaler reads")
    parser.add_argument("--catalog", help="an instance catalog JSON file (default: $TIDAL_HOME/catalog.json if any)")
    parser.add_argument("--leader-elect", action="store_true",
                        help="act only while holding a Lease in the current Kubernetes context's namespace, so "
                             "two control planes never act at once")
    parser.add_argument("--lease-name", default="tidal-control-plane", help="the Lease's name (with --leader-elect)")
    parser.add_argument("--lease-seconds", type=float, default=15.0,
                        help="how long a Lease not renewed keeps others waiting (with --leader-elect)")


def _forward(args) -> list[str]:
    out = ["--host", args.host, "--tick", str(args.tick), "--qps-window", str(args.qps_window),
           "--gateway-workers", str(args.gateway_workers), "--gateway-engine", args.gateway_engine]
    for flag, value in (("--port", args.port), ("--gateway-port", args.gateway_port),
                        ("--time-factor", args.time_factor), ("--catalog", args.catalog)):
        if value is not None:
            out += [flag, str(value)]
    return out


def _leader_election(args):
    if not args.leader_elect:
        return None
    from pydantic import ValidationError

    from tidal.backends.kubernetes.contexts import ContextStore
    from tidal.backends.kubernetes.lease import LeaderElection, check_context
    from tidal.errors import UserError
    try:
        settings = LeaderElection(lease_name=args.lease_name, lease_seconds=args.lease_seconds)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UserError(f"--leader-elect: {where + ': ' if where else ''}{first['msg']}") from None
    check_context(ContextStore.from_env().current())  # before anything starts
    return settings


def run(args) -> int:
    home = Home.from_env()
    if not 1 <= args.gateway_workers <= 64:
        from tidal.errors import UserError
        raise UserError(f"--gateway-workers must be between 1 and 64, got {args.gateway_workers}")
    if args.gateway_engine == GatewayEngine.AUTO.value:
        from tidal.gateway.edge import auto_edge
        args.gateway_engine = (GatewayEngine.EDGE if auto_edge() else GatewayEngine.PYTHON).value
    if args.gateway_engine == GatewayEngine.EDGE.value:
        from tidal.gateway.edge import require_edge
        require_edge()  # one line saying how to build it, before anything starts
    if args.leader_elect and not args.foreground:
        from tidal.errors import UserError
        # A candidate may wait for the Lease indefinitely: that is a foreground process's (a pod's) life.
        raise UserError("--leader-elect runs with --foreground (as the control plane's container in a cluster does)")
    if args.foreground:
        options = DaemonOptions(host=args.host, api_port=args.port, gateway_port=args.gateway_port,
                                gateway_workers=args.gateway_workers, gateway_engine=args.gateway_engine,
                                time_factor=args.time_factor, catalog=args.catalog,
                                settings=ControlSettings(tick_seconds=args.tick, qps_window_seconds=args.qps_window),
                                leader_election=_leader_election(args))
        return run_foreground(home, options)
    if is_running(home):
        from tidal.commands.common import same_context
        same_context(home)  # running on another context: say so, rather than "already running"
        addr = home.read_address() or {}
        print(f"the control plane is already running: API {addr.get('api')}, gateway {addr.get('gateway')}")
        return 0
    addr = spawn_background(home, _forward(args))
    print(f"control plane up (pid {addr['pid']}): API {addr['api']}, gateway {addr['gateway']}")
    print(f"state, logs and the API token (0600) are in {home.root}")
    return 0
